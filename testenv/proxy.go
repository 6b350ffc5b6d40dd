package main

import (
	"fmt"
	"io"
	"net"
	"sync"
)

// tcpProxy forwards loopback connections to one target and can cut all of them
// at once, which is how the control endpoint simulates an etcd connection loss.
// While it is held, it accepts new connections but forwards nothing until it is
// released, so the client can learn nothing of what happens upstream meanwhile.
type tcpProxy struct {
	listener net.Listener
	target   string

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// open is closed while connections may be forwarded; a held proxy has a fresh one.
	open chan struct{}
}

func startProxy(port int, target string) (*tcpProxy, error) {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("etcd proxy on 127.0.0.1:%d: %w", port, err)
	}
	open := make(chan struct{})
	close(open)
	p := &tcpProxy{listener: l, target: target, conns: map[net.Conn]struct{}{}, open: open}
	go p.serve()
	return p, nil
}

func (p *tcpProxy) serve() {
	for {
		c, err := p.listener.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *tcpProxy) forward(c net.Conn) {
	var up net.Conn
	for {
		p.mu.Lock()
		open := p.open
		p.mu.Unlock()
		<-open
		var err error
		up, err = net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			return
		}
		if p.track(c, up) {
			break
		}
		// Held while dialing: this one must not get through either.
		up.Close()
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
	p.untrack(c, up)
}

// track registers a forwarded pair, unless the proxy is held.
func (p *tcpProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *tcpProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

// Hold makes new connections wait, unforwarded, until Release.
func (p *tcpProxy) Hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default: // already held
	}
}

// Release forwards the connections that waited, and every new one.
func (p *tcpProxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

// CutAll closes every open connection; new ones are accepted as before.
func (p *tcpProxy) CutAll() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		c.Close()
		n++
	}
	return n / 2
}

func (p *tcpProxy) Close() {
	p.listener.Close()
	p.Release()
	p.CutAll()
}
