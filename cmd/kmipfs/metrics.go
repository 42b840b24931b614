package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/kmipfs/kmipfs/metrics"
	"github.com/kmipfs/kmipfs/objstore"
)

// validMetricsAddr checks [metrics] addr: empty (no metrics) or host:port.
func validMetricsAddr(addr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err == nil {
		var n int
		n, err = strconv.Atoi(port)
		if err == nil && (n < 0 || n > 65535) {
			err = errors.New("port out of range")
		}
	}
	if err != nil || host == "" {
		return fmt.Errorf("metrics.addr: expected host:port such as \"127.0.0.1:9567\", got %q", addr)
	}
	return nil
}

// metricsServer is the Prometheus endpoint of a mount: the listener is opened before the mount
// (so a port in use stops start-up), the store is decorated while the backends are opened, and
// serving starts once the filesystem exists. A nil *metricsServer is the endpoint turned off;
// every method is then a no-op.
type metricsServer struct {
	ln  net.Listener
	reg *metrics.Registry
	srv *http.Server
}

// listenMetrics opens the listener of [metrics] addr, or returns nil for an empty addr.
func listenMetrics(addr string) (*metricsServer, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.addr: cannot listen on %s: %v", addr, err)
	}
	return &metricsServer{ln: ln, reg: metrics.New(version)}, nil
}

// addr is the address being served ("" when off), with the port chosen for port 0.
func (ms *metricsServer) addr() string {
	if ms == nil {
		return ""
	}
	return ms.ln.Addr().String()
}

// wrapStore decorates s to count its requests.
func (ms *metricsServer) wrapStore(s objstore.Store) objstore.Store {
	if ms == nil {
		return s
	}
	return ms.reg.WrapStore(s)
}

// serveMetrics exports the mount's counters and starts serving /metrics.
func (m *mounted) serveMetrics() {
	ms := m.metrics
	if ms == nil {
		return
	}
	ms.reg.Watch(metrics.Sources{FS: m.fsys, KMS: m.client, KeyCache: m.cache})
	mux := http.NewServeMux()
	mux.Handle("/metrics", ms.reg.Handler())
	ms.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := ms.srv.Serve(ms.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("metrics endpoint stopped; the mount goes on without it", "addr", ms.addr(), "err", err)
		}
	}()
	m.log.Info("serving metrics", "url", "http://"+ms.addr()+"/metrics")
}

// close stops serving (a scrape in progress gets a second to finish) and closes the listener.
func (ms *metricsServer) close() {
	if ms == nil {
		return
	}
	if ms.srv == nil {
		ms.ln.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = ms.srv.Shutdown(ctx)
}
