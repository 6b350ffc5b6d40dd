package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// The control endpoint forces what a long-lived cluster does by itself: an etcd
// compaction that clients can observe as "410 Gone: too old resource version".
//
// Compacting etcd alone is not enough to show it. kube-apiserver serves watches
// from its watch cache, which keeps its own event history, so a client that
// resumes a watch from an old resourceVersion is still answered from the cache.
// The cache only forgets its history when it relists from etcd, and it relists when
// its own etcd watch fails because the revision it resumes from was compacted.
// So POST /compact:
//  1. cuts kube-apiserver's connections to etcd, as a network blip or an etcd
//     leader change would, and holds its reconnections;
//  2. writes a marker key twice (outside /registry), so that every resource's last
//     seen revision is strictly older than the head: with the connections held, no
//     progress notification can tell kube-apiserver of the new head;
//  3. compacts etcd to the head (physically), and lets the connections through.
//     Its etcd client resumes each watch, etcd answers "compacted", each watch
//     cache relists and ends its watchers, and a client that resumes from an
//     older resourceVersion gets 410 Gone.
type control struct {
	server *http.Server
	client *clientv3.Client
	proxy  *tcpProxy
}

func startControl(port int, e *embed.Etcd, proxy *tcpProxy) (*control, error) {
	endpoint := e.Clients[0].Addr().String()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("etcd client for the control endpoint: %w", err)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("control endpoint on 127.0.0.1:%d: %w", port, err)
	}
	c := &control{client: cli, proxy: proxy}
	mux := http.NewServeMux()
	mux.HandleFunc("/compact", c.compact)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	c.server = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = c.server.Serve(l) }()
	return c, nil
}

type compactResult struct {
	Revision  int64 `json:"revision"`
	CutConns  int   `json:"cutConnections"`
	Compacted bool  `json:"compacted"`
}

func (c *control) compact(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST /compact", http.StatusMethodNotAllowed)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	// Cut before writing: a watch progress notification that arrived between the
	// writes and the cut would move a watch cache's resume point past the
	// compaction, and it would resume without noticing anything.
	c.proxy.Hold()
	defer c.proxy.Release()
	cut := c.proxy.CutAll()
	var rev int64
	for i := 0; i < 2; i++ {
		resp, err := c.client.Put(ctx, "/cattail-testenv/compaction-marker", time.Now().Format(time.RFC3339Nano))
		if err != nil {
			http.Error(w, "writing the marker key: "+err.Error(), http.StatusInternalServerError)
			return
		}
		rev = resp.Header.Revision
	}
	if _, err := c.client.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		http.Error(w, fmt.Sprintf("compacting to revision %d: %v", rev, err), http.StatusInternalServerError)
		return
	}
	c.proxy.Release()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(compactResult{Revision: rev, CutConns: cut, Compacted: true})
}

func (c *control) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.server.Shutdown(ctx)
	c.client.Close()
}
