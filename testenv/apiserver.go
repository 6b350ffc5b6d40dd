package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func apiServerArgs(o options, l dirLayout, p portSet) []string {
	pki := func(name string) string { return filepath.Join(l.pki, name) }
	return []string{
		"--etcd-servers=" + fmt.Sprintf("http://127.0.0.1:%d", p.etcdProxy),
		"--etcd-compaction-interval=" + o.compactionInterval.String(),
		"--watch-cache=true",
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(p.apiserver),
		"--cert-dir=" + l.pki,
		"--tls-cert-file=" + pki("apiserver.crt"),
		"--tls-private-key-file=" + pki("apiserver.key"),
		"--client-ca-file=" + pki("ca.crt"),
		"--token-auth-file=" + pki("tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki("sa.pub"),
		"--service-account-signing-key-file=" + pki("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		// No kubelet and no service-account controller run here, so pods may name
		// service accounts that do not exist; the admission plugin would refuse them.
		"--disable-admission-plugins=ServiceAccount",
		"--profiling=false",
		// Nothing routes to a loopback "kubernetes" Service endpoint; skip the reconciler.
		"--endpoint-reconciler-type=none",
		// Give open watches 2s on shutdown instead of the 60s request timeout, so a
		// stop with clients still connected is quick.
		"--shutdown-send-retry-after=true",
		"--v=" + strconv.Itoa(o.verbosity),
	}
}

// runAPIServer runs kube-apiserver's own command in this process. It installs the
// SIGINT/SIGTERM handler: the first signal drains, a second one exits at once.
func runAPIServer(args []string) error {
	cmd := apiserverapp.NewAPIServerCommand()
	cmd.SetArgs(args)
	return cmd.Execute()
}

// waitReady polls /readyz (open to anonymous users) until it answers 200.
func waitReady(ctx context.Context, p portSet, c credentials) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/readyz", p.apiserver)
	last := "no answer yet"
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %s", url, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// readyInfo is the JSON line printed on stdout, and written to DIR/testenv.json,
// once the control plane is ready.
type readyInfo struct {
	Kubeconfig string `json:"kubeconfig"`
	Server     string `json:"server"`
	Pid        int    `json:"pid"`
	Dir        string `json:"dir"`
	Etcd       string `json:"etcd"`
	Control    string `json:"control"`
	Log        string `json:"log"`
}

func announce(l dirLayout, p portSet) error {
	info := readyInfo{
		Kubeconfig: l.kubeconfig,
		Server:     fmt.Sprintf("https://127.0.0.1:%d", p.apiserver),
		Pid:        os.Getpid(),
		Dir:        l.root,
		Etcd:       fmt.Sprintf("http://127.0.0.1:%d", p.etcd),
		Control:    fmt.Sprintf("http://127.0.0.1:%d", p.control),
		Log:        l.log,
	}
	line, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := os.WriteFile(l.info, append(line, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", l.info, err)
	}
	_, err = fmt.Fprintf(os.Stdout, "%s\n", line)
	return err
}

// exitOnParentDeath sends this process SIGTERM when the process that started it
// goes away, so that a killed launcher never leaves an orphan control plane.
func exitOnParentDeath() {
	parent := os.Getppid()
	if parent == 1 {
		return
	}
	go func() {
		for range time.Tick(500 * time.Millisecond) {
			if os.Getppid() != parent {
				_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
				return
			}
		}
	}()
}
