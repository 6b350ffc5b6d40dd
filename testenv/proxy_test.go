package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echoServer answers every line it reads with the same line, until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

// roundTrip writes a line and reads it back, within a deadline.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, line string) {
	t.Helper()
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		t.Fatalf("write %q: %v", line, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := r.ReadString('\n')
	if err != nil || got != line+"\n" {
		t.Fatalf("echo of %q: got %q, %v", line, got, err)
	}
}

func dialProxy(t *testing.T, p *tcpProxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func TestProxyForwardsHoldsReleasesAndCuts(t *testing.T) {
	p, err := startProxy(0, echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	first, firstReader := dialProxy(t, p)
	roundTrip(t, first, firstReader, "before the hold")

	p.Hold()
	p.Hold() // holding twice is one hold
	held, heldReader := dialProxy(t, p)
	if _, err := held.Write([]byte("while held\n")); err != nil {
		t.Fatal(err)
	}
	// Nothing may come back while the proxy is held. An absence can only be shown by
	// waiting: a short deadline, not a synchronisation.
	_ = held.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if got, err := heldReader.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a held connection was forwarded: got %q, %v", got, err)
	}
	// A connection forwarded before the hold keeps working.
	roundTrip(t, first, firstReader, "during the hold")

	p.Release()
	_ = held.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := heldReader.ReadString('\n'); err != nil || got != "while held\n" {
		t.Fatalf("after release: got %q, %v", got, err)
	}

	if cut := p.CutAll(); cut != 2 {
		t.Fatalf("CutAll cut %d connections, want 2", cut)
	}
	for _, r := range []*bufio.Reader{firstReader, heldReader} {
		if _, err := r.ReadString('\n'); err == nil {
			t.Fatal("a cut connection still reads")
		}
	}

	// New connections are forwarded as before.
	again, againReader := dialProxy(t, p)
	roundTrip(t, again, againReader, "after the cut")
}

func TestProxyRefusesABusyPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	if p, err := startProxy(busy, "127.0.0.1:1"); err == nil {
		p.Close()
		t.Fatalf("a proxy started on the busy port %d", busy)
	}
}
