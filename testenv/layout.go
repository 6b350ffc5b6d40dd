package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// dirLayout names every file testenv keeps under its data directory.
type dirLayout struct {
	root       string
	etcd       string
	pki        string
	kubeconfig string
	info       string
	log        string
	managerLog string
}

func prepareDir(dir string) (dirLayout, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return dirLayout{}, fmt.Errorf("data dir %q: %w", dir, err)
	}
	l := dirLayout{
		root:       root,
		etcd:       filepath.Join(root, "etcd"),
		pki:        filepath.Join(root, "pki"),
		kubeconfig: filepath.Join(root, "kubeconfig"),
		info:       filepath.Join(root, "testenv.json"),
		log:        filepath.Join(root, "testenv.log"),
		managerLog: filepath.Join(root, "controller-manager.log"),
	}
	for _, d := range []string{root, l.etcd, l.pki} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return l, fmt.Errorf("data dir %s is not usable: %w (pass a writable --dir)", d, err)
		}
	}
	probe := filepath.Join(root, ".write-test")
	if err := os.WriteFile(probe, []byte("ok"), 0o600); err != nil {
		return l, fmt.Errorf("data dir %s is not writable: %w (pass a writable --dir)", root, err)
	}
	_ = os.Remove(probe)
	// etcd refuses a data dir that others can read.
	if err := os.Chmod(l.etcd, 0o700); err != nil {
		return l, fmt.Errorf("data dir %s: %w", l.etcd, err)
	}
	return l, nil
}

// portSet holds the loopback ports of one control plane.
type portSet struct {
	apiserver int
	etcd      int
	etcdPeer  int
	etcdProxy int
	control   int
}

func choosePorts(o options) (portSet, error) {
	var p portSet
	var err error
	if p.apiserver, err = port(o.apiserverPort, "--apiserver-port"); err != nil {
		return p, err
	}
	if p.etcd, err = port(o.etcdPort, "--etcd-port"); err != nil {
		return p, err
	}
	if p.control, err = port(o.controlPort, "--control-port"); err != nil {
		return p, err
	}
	if p.etcdPeer, err = port(0, ""); err != nil {
		return p, err
	}
	if p.etcdProxy, err = port(0, ""); err != nil {
		return p, err
	}
	return p, nil
}

// port returns want if it can be bound on 127.0.0.1, or a free port if want is 0.
// A free port is only free until someone else takes it; the window is short.
func port(want int, flagName string) (int, error) {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", want))
	if err != nil {
		if want != 0 {
			return 0, fmt.Errorf("port %d on 127.0.0.1 is in use or not allowed (%s): %w; pass another port or 0 for a free one", want, flagName, err)
		}
		return 0, fmt.Errorf("no free port on 127.0.0.1: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
