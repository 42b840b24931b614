package kmstest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/kms/certs"
	"github.com/kmipfs/kmipfs/kms/kmipserver"
)

// Env is a running kmipserver with its PKI and a client config that reaches it.
type Env struct {
	Server    *kmipserver.Server
	Certs     certs.Files
	Addr      string     // 127.0.0.1:port
	StorePath string     // the server's key store file
	Config    kms.Config // Addr, CA and client certificate set; Timeout 5s; other fields default

	logger *slog.Logger
	ln     net.Listener
	done   chan error
}

// Start generates certificates, opens a key store and serves KMIP on 127.0.0.1 on a free port until the
// test ends. logger may be nil.
func Start(t testing.TB, logger *slog.Logger) *Env {
	t.Helper()
	dir := t.TempDir()
	files, err := certs.Generate(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Certs: files, StorePath: filepath.Join(dir, "store", "keys.json"), logger: logger}
	e.start(t, "127.0.0.1:0")
	e.Config = kms.Config{
		Addr:       e.Addr,
		CAPath:     files.CA,
		ClientCert: files.ClientCert,
		ClientKey:  files.ClientKey,
		Timeout:    kms.Duration{Duration: 5 * time.Second},
	}
	t.Cleanup(func() { e.Stop(t) })
	return e
}

func (e *Env) start(t testing.TB, addr string) {
	t.Helper()
	srv, err := kmipserver.New(e.StorePath, kmipserver.Options{Logger: e.logger})
	if err != nil {
		t.Fatal(err)
	}
	conf, err := certs.ServerTLSConfig(e.Certs)
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	// After a Stop the old port may linger for a moment; retry briefly.
	for i := 0; ; i++ {
		ln, err = tls.Listen("tcp", addr, conf)
		if err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		_ = srv.Close()
		t.Fatal(err)
	}
	e.Server, e.ln, e.Addr, e.done = srv, ln, ln.Addr().String(), make(chan error, 1)
	go func() { e.done <- srv.Serve(ln) }()
}

// Stop closes the server (if running) and checks that Serve returned ErrServerClosed.
func (e *Env) Stop(t testing.TB) {
	t.Helper()
	if e.Server == nil {
		return
	}
	if err := e.Server.Close(); err != nil {
		t.Errorf("kmstest: close server: %v", err)
	}
	if err := <-e.done; !errors.Is(err, kmipserver.ErrServerClosed) {
		t.Errorf("kmstest: Serve returned %v, want ErrServerClosed", err)
	}
	e.Server = nil
}

// Restart stops the server and starts a new one on the same address and store, as a server restart.
func (e *Env) Restart(t testing.TB) {
	t.Helper()
	e.Stop(t)
	e.start(t, e.Addr)
}

// CreateKey creates an active AES-256 key called name directly in the server and returns its UID.
func (e *Env) CreateKey(t testing.TB, name string) string {
	t.Helper()
	uid, err := e.Server.CreateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	return uid
}

// Client returns a kms.Client for e.Config, closed at the end of the test.
func (e *Env) Client(t testing.TB, logger *slog.Logger) *kms.Client {
	t.Helper()
	c, err := kms.NewClient(e.Config, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c
}

// Logger returns a logger that writes to t.Log at Debug level and fails the test on a record at Warn or
// above: in tests an unexpected warning is a bug. Records after the test ends are dropped.
func Logger(t testing.TB) *slog.Logger { return newLogger(t, false) }

// WarnLogger is Logger for tests that provoke warnings on purpose (rejected certificates, outages).
func WarnLogger(t testing.TB) *slog.Logger { return newLogger(t, true) }

func newLogger(t testing.TB, allowWarn bool) *slog.Logger {
	h := &handler{st: &logState{t: t}, allowWarn: allowWarn}
	t.Cleanup(func() {
		h.st.mu.Lock()
		h.st.done = true
		h.st.mu.Unlock()
	})
	return slog.New(h)
}

type logState struct {
	t    testing.TB
	mu   sync.Mutex
	done bool // protected by mu
}

type handler struct {
	st        *logState
	allowWarn bool
	attrs     []slog.Attr
	group     string
}

var _ slog.Handler = (*handler)(nil)

func (h *handler) Enabled(context.Context, slog.Level) bool { return true }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	var buf bytes.Buffer
	th := slog.Handler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}))
	if h.group != "" {
		th = th.WithGroup(h.group)
	}
	th = th.WithAttrs(h.attrs)
	if err := th.Handle(ctx, r); err != nil {
		return err
	}
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	if h.st.done {
		return nil
	}
	line := bytes.TrimRight(buf.Bytes(), "\n")
	if r.Level >= slog.LevelWarn && !h.allowWarn {
		h.st.t.Errorf("unexpected log record: %s", line)
	} else {
		h.st.t.Logf("%s", line)
	}
	return nil
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	c := *h
	c.group = name
	return &c
}
