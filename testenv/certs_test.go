package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"strings"
	"testing"
)

func TestCredentialsServeLoopbackAndSurviveARestart(t *testing.T) {
	l, err := prepareDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ports := portSet{apiserver: 16443}
	c, err := writeCredentials(l, ports)
	if err != nil {
		t.Fatal(err)
	}

	// The serving certificate and key belong together and chain to the CA for every
	// address a client of the loopback API server uses.
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		t.Fatalf("serving certificate and key: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(c.caPEM) {
		t.Fatal("the CA file holds no certificate")
	}
	for _, name := range []string{"127.0.0.1", "::1", "localhost", "kubernetes.default.svc"} {
		opts := x509.VerifyOptions{Roots: roots, DNSName: name}
		if _, err := leaf.Verify(opts); err != nil {
			t.Errorf("the serving certificate does not verify for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "example.com"}); err == nil {
		t.Error("the serving certificate verifies for example.com")
	}

	// The service-account keys are a pair.
	block, _ := pem.Decode(mustRead(t, c.saKeyFile))
	saKey, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	block, _ = pem.Decode(mustRead(t, c.saPubFile))
	saPub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !saKey.PublicKey.Equal(saPub) {
		t.Error("sa.pub is not the public half of sa.key")
	}

	// The kubeconfig names the port, the CA and the admin token, which the token file grants
	// system:masters.
	kc := string(mustRead(t, l.kubeconfig))
	for _, want := range []string{
		"server: https://127.0.0.1:16443",
		"certificate-authority-data: " + base64.StdEncoding.EncodeToString(c.caPEM),
		"token: " + c.adminToken,
	} {
		if !strings.Contains(kc, want) {
			t.Errorf("kubeconfig lacks %q:\n%s", want, kc)
		}
	}
	if len(c.adminToken) != 48 {
		t.Errorf("admin token %q: want 24 random bytes in hex", c.adminToken)
	}
	tokens := string(mustRead(t, c.tokenFile))
	if !strings.HasPrefix(tokens, c.adminToken+",") || !strings.Contains(tokens, `"system:masters"`) {
		t.Errorf("token file: %q", tokens)
	}

	// A restart on another port keeps every credential and rewrites the kubeconfig.
	again, err := writeCredentials(l, portSet{apiserver: 16444})
	if err != nil {
		t.Fatal(err)
	}
	if again.adminToken != c.adminToken || !bytes.Equal(again.caPEM, c.caPEM) {
		t.Error("a restart made new credentials")
	}
	if !strings.Contains(string(mustRead(t, l.kubeconfig)), "server: https://127.0.0.1:16444") {
		t.Error("a restart kept the old port in the kubeconfig")
	}

	// A data dir with a credential missing gets a fresh set.
	if err := os.Remove(c.saKeyFile); err != nil {
		t.Fatal(err)
	}
	fresh, err := writeCredentials(l, ports)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.adminToken == c.adminToken {
		t.Error("incomplete credentials were reused")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
