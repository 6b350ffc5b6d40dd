package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// credentials are the files kube-apiserver is started with, and the admin token.
type credentials struct {
	caFile     string
	caPEM      []byte
	certFile   string
	keyFile    string
	saKeyFile  string
	saPubFile  string
	tokenFile  string
	adminToken string
}

// writeCredentials makes a fresh CA, a serving certificate for the loopback
// addresses, a service-account signing key and an admin token, and writes the
// kubeconfig that uses them. A data dir that already holds them (a restart) keeps
// them, so clients and ServiceAccount tokens from before the restart stay valid.
func writeCredentials(l dirLayout, p portSet) (credentials, error) {
	c := credentialPaths(l)
	if reused, ok := reuseCredentials(c); ok {
		if err := os.WriteFile(l.kubeconfig, kubeconfig(p, reused), 0o600); err != nil {
			return reused, fmt.Errorf("writing %s: %w", l.kubeconfig, err)
		}
		return reused, nil
	}
	return generateCredentials(l, p, c)
}

func credentialPaths(l dirLayout) credentials {
	return credentials{
		caFile:    filepath.Join(l.pki, "ca.crt"),
		certFile:  filepath.Join(l.pki, "apiserver.crt"),
		keyFile:   filepath.Join(l.pki, "apiserver.key"),
		saKeyFile: filepath.Join(l.pki, "sa.key"),
		saPubFile: filepath.Join(l.pki, "sa.pub"),
		tokenFile: filepath.Join(l.pki, "tokens.csv"),
	}
}

// reuseCredentials reads the credentials of an earlier start, if all are there.
func reuseCredentials(c credentials) (credentials, bool) {
	for _, f := range []string{c.caFile, c.certFile, c.keyFile, c.saKeyFile, c.saPubFile, c.tokenFile} {
		if _, err := os.Stat(f); err != nil {
			return c, false
		}
	}
	ca, err := os.ReadFile(c.caFile)
	if err != nil {
		return c, false
	}
	tokens, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return c, false
	}
	token, _, found := strings.Cut(string(tokens), ",")
	if !found || token == "" {
		return c, false
	}
	c.caPEM = ca
	c.adminToken = token
	return c, true
}

func generateCredentials(l dirLayout, p portSet, c credentials) (credentials, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return c, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cattail-testenv-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return c, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return c, err
	}
	c.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return c, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.96.0.1")},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return c, err
	}
	srvKeyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return c, err
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return c, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return c, err
	}

	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return c, err
	}
	c.adminToken = hex.EncodeToString(tok)

	files := []struct {
		path string
		data []byte
	}{
		{c.caFile, c.caPEM},
		{c.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER})},
		{c.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: srvKeyDER})},
		{c.saKeyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})},
		{c.saPubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})},
		// token,user,uid,"group1,group2"
		{c.tokenFile, []byte(fmt.Sprintf("%s,cattail-admin,cattail-admin,\"system:masters\"\n", c.adminToken))},
		{l.kubeconfig, kubeconfig(p, c)},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return c, fmt.Errorf("writing %s: %w", f.path, err)
		}
	}
	return c, nil
}

func kubeconfig(p portSet, c credentials) []byte {
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://127.0.0.1:%d
    certificate-authority-data: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: testenv
  context:
    cluster: testenv
    user: admin
    namespace: default
current-context: testenv
`, p.apiserver, base64.StdEncoding.EncodeToString(c.caPEM), c.adminToken))
}
