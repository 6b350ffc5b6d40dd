package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPortNamesTheFlagOfABusyPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	_, err = listen(busy, "--etcd-port")
	if err == nil || !strings.Contains(err.Error(), "--etcd-port") {
		t.Fatalf("a busy port: %v", err)
	}
	_, err = choosePorts(options{etcdPort: busy})
	if err == nil || !strings.Contains(err.Error(), "--etcd-port") {
		t.Fatalf("a busy --etcd-port: %v", err)
	}
	free, err := listen(0, "")
	if err != nil {
		t.Fatalf("a free port: %v", err)
	}
	free.Close()
}

func TestChosenPortsAreDistinctAndFreeAfterwards(t *testing.T) {
	for i := 0; i < 200; i++ {
		p, err := choosePorts(options{})
		if err != nil {
			t.Fatal(err)
		}
		ports := []int{p.apiserver, p.etcd, p.control, p.etcdPeer, p.etcdProxy}
		seen := map[int]bool{}
		for _, port := range ports {
			if port == 0 || seen[port] {
				t.Fatalf("ports %v: not five distinct ports", ports)
			}
			seen[port] = true
		}
		// Every chosen port was released for the control plane to bind.
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p.etcdProxy))
		if err != nil {
			t.Fatalf("the chosen etcd proxy port is still held: %v", err)
		}
		l.Close()
	}
}

func TestPrepareDirMakesPrivateDirsAndRefusesAFile(t *testing.T) {
	root := t.TempDir()
	l, err := prepareDir(filepath.Join(root, "data"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(l.etcd)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o700 {
		t.Errorf("etcd dir mode %v, want 0700", info.Mode().Perm())
	}
	if filepath.Dir(l.kubeconfig) != l.root || !filepath.IsAbs(l.root) {
		t.Errorf("layout not under an absolute root: %+v", l)
	}

	file := filepath.Join(root, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := prepareDir(file); err == nil || !strings.Contains(err.Error(), "--dir") {
		t.Fatalf("a file as data dir: %v", err)
	}
}
