// Command testenv runs a real Kubernetes control plane on loopback for cattail's
// tests, demo and load tests: an embedded etcd and kube-apiserver in one process,
// plus (as a child process of the same binary) a kube-controller-manager running
// only the controllers that a cluster without nodes still needs.
//
// It writes DIR/kubeconfig (an admin credential), waits until /readyz answers ok,
// prints one JSON line describing the endpoints on stdout, and runs until SIGINT or
// SIGTERM. It never outlives the process that started it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

const usage = `testenv: a real kube-apiserver and etcd on loopback.

Usage:
  testenv up --dir DIR [flags]     start the control plane (foreground)
  testenv controller-manager ...  internal: run kube-controller-manager (started by "up")

Flags of "up":
`

func init() {
	// Keep the main goroutine on the main thread: the controller-manager child is
	// started from it with Pdeathsig, which fires when the starting thread exits.
	runtime.LockOSThread()
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "controller-manager" {
		os.Exit(runControllerManager(os.Args[2:]))
	}
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "up" {
		args = args[1:]
	}
	opts, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		os.Exit(2)
	}
	if err := run(opts); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		os.Exit(1)
	}
}

// options are the settings of "testenv up".
type options struct {
	dir                string
	apiserverPort      int
	etcdPort           int
	controlPort        int
	compactionInterval time.Duration
	controllers        string
	fsync              bool
	readyTimeout       time.Duration
	verbosity          int
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("testenv up", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.dir, "dir", "", "data directory: etcd data, certificates, kubeconfig and logs (required)")
	fs.IntVar(&o.apiserverPort, "apiserver-port", 0, "kube-apiserver secure port on 127.0.0.1 (0 picks a free port)")
	fs.IntVar(&o.etcdPort, "etcd-port", 0, "etcd client port on 127.0.0.1 (0 picks a free port)")
	fs.IntVar(&o.controlPort, "control-port", 0, "testenv control endpoint (POST /compact) on 127.0.0.1 (0 picks a free port)")
	fs.DurationVar(&o.compactionInterval, "compaction-interval", 5*time.Minute,
		"how often kube-apiserver compacts etcd (its --etcd-compaction-interval); set it low, e.g. 2s, to provoke 410 Gone; 0 disables")
	fs.StringVar(&o.controllers, "controllers", "namespace,garbagecollector",
		"kube-controller-manager controllers to run; empty runs none (namespaces then never finish deleting)")
	fs.BoolVar(&o.fsync, "fsync", false, "make etcd fsync its writes (slower; off by default because this is a test cluster)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 3*time.Minute, "give up if /readyz is not ok within this time")
	fs.IntVar(&o.verbosity, "v", 0, "log verbosity of kube-apiserver and kube-controller-manager")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	if o.dir == "" {
		return o, errors.New("--dir is required: the directory for etcd data, certificates and the kubeconfig")
	}
	for name, p := range map[string]int{"apiserver-port": o.apiserverPort, "etcd-port": o.etcdPort, "control-port": o.controlPort} {
		if p < 0 || p > 65535 {
			return o, fmt.Errorf("--%s=%d is not a TCP port (0 to 65535)", name, p)
		}
	}
	if o.compactionInterval < 0 {
		return o, fmt.Errorf("--compaction-interval=%v must not be negative", o.compactionInterval)
	}
	o.controllers = strings.TrimSpace(o.controllers)
	return o, nil
}

func run(o options) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	layout, err := prepareDir(o.dir)
	if err != nil {
		return err
	}
	ports, err := choosePorts(o)
	if err != nil {
		return err
	}
	creds, err := writeCredentials(layout, ports)
	if err != nil {
		return err
	}

	etcd, err := startEtcd(layout, ports, o.fsync)
	if err != nil {
		return err
	}
	defer etcd.Close()

	// kube-apiserver reaches etcd through a proxy that the control endpoint can cut:
	// see compact.go for why.
	proxy, err := startProxy(ports.etcdProxy, fmt.Sprintf("127.0.0.1:%d", ports.etcd))
	if err != nil {
		return err
	}
	defer proxy.Close()

	control, err := startControl(ports.control, etcd, proxy)
	if err != nil {
		return err
	}
	defer control.Close()

	exitOnParentDeath()

	apiserverDone := make(chan error, 1)
	go func() { apiserverDone <- runAPIServer(apiServerArgs(o, layout, ports)) }()

	var manager *childProcess
	defer func() {
		if manager != nil {
			manager.Stop(10 * time.Second)
		}
	}()

	readyCtx, readyCancel := context.WithTimeout(ctx, o.readyTimeout)
	defer readyCancel()
	ready := make(chan error, 1)
	go func() { ready <- waitReady(readyCtx, ports, creds) }()

	select {
	case err := <-apiserverDone:
		return fmt.Errorf("kube-apiserver stopped before it was ready: %v (log: %s)", errOrExit(err), layout.log)
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("kube-apiserver did not become ready: %w", err)
		}
	}

	if o.controllers != "" {
		manager, err = startControllerManager(layout, o)
		if err != nil {
			return err
		}
	}

	if err := announce(layout, ports); err != nil {
		return err
	}

	// kube-apiserver owns SIGINT and SIGTERM: it drains and returns from Run.
	var managerExit <-chan error
	if manager != nil {
		managerExit = manager.Done()
	}
	select {
	case err := <-apiserverDone:
		if err != nil {
			return fmt.Errorf("kube-apiserver stopped: %w", err)
		}
		return nil
	case err := <-managerExit:
		return fmt.Errorf("kube-controller-manager exited unexpectedly: %v (log: %s)", errOrExit(err), layout.managerLog)
	}
}

func errOrExit(err error) string {
	if err == nil {
		return "exited"
	}
	return err.Error()
}
