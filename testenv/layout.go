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

// choosePorts holds every port it picks open until all are picked, so the five are distinct:
// a port closed at once could be handed out again by the next bind to port 0 (the etcd proxy
// was once given etcd's own peer port).
func choosePorts(o options) (portSet, error) {
	var p portSet
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for _, c := range []struct {
		dst  *int
		want int
		flag string
	}{
		{&p.apiserver, o.apiserverPort, "--apiserver-port"},
		{&p.etcd, o.etcdPort, "--etcd-port"},
		{&p.control, o.controlPort, "--control-port"},
		{&p.etcdPeer, 0, ""},
		{&p.etcdProxy, 0, ""},
	} {
		l, err := listen(c.want, c.flag)
		if err != nil {
			return p, err
		}
		held = append(held, l)
		*c.dst = l.Addr().(*net.TCPAddr).Port
	}
	return p, nil
}

// listen binds want on 127.0.0.1, or a free port if want is 0. A free port is only free
// until someone else takes it once closed; the window is short.
func listen(want int, flagName string) (net.Listener, error) {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", want))
	if err != nil {
		if want != 0 {
			return nil, fmt.Errorf("port %d on 127.0.0.1 is in use or not allowed (%s): %w; pass another port or 0 for a free one", want, flagName, err)
		}
		return nil, fmt.Errorf("no free port on 127.0.0.1: %w", err)
	}
	return l, nil
}
