package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

// childProcess is a process started by testenv that dies with it.
type childProcess struct {
	cmd  *exec.Cmd
	done chan error
}

// startControllerManager runs kube-controller-manager as a child process of this
// same binary. It is a separate process because it shares global state (feature
// gates, metrics registries) with kube-apiserver.
func startControllerManager(l dirLayout, o options) (*childProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(l.managerLog, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("controller-manager log %s: %w", l.managerLog, err)
	}
	cmd := exec.Command(self, "controller-manager",
		"--kubeconfig="+l.kubeconfig,
		"--controllers="+o.controllers,
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--v="+strconv.Itoa(o.verbosity),
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Its own process group keeps a terminal's Ctrl-C from reaching it before the
	// API server has drained; Pdeathsig ends it whenever testenv ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting kube-controller-manager: %w", err)
	}
	c := &childProcess{cmd: cmd, done: make(chan error, 1)}
	go func() {
		c.done <- cmd.Wait()
		logFile.Close()
	}()
	return c, nil
}

func (c *childProcess) Done() <-chan error { return c.done }

// Stop asks the child to stop, and kills it after the timeout.
func (c *childProcess) Stop(timeout time.Duration) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func runControllerManager(args []string) int {
	cmd := kcmapp.NewControllerManagerCommand()
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		return 1
	}
	return 0
}
