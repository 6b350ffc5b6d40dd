package main

import (
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
	_, err = port(busy, "--etcd-port")
	if err == nil || !strings.Contains(err.Error(), "--etcd-port") {
		t.Fatalf("a busy port: %v", err)
	}
	free, err := port(0, "")
	if err != nil || free == 0 {
		t.Fatalf("a free port: %d, %v", free, err)
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
