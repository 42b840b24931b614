// Package tests holds kmipfs's end-to-end tests: real FUSE mounts, the embedded KMIP server over
// loopback TLS, the local object store and Badger on disk.
package tests

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	kfs "github.com/kmipfs/kmipfs/fs"
	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/kms/certs"
	"github.com/kmipfs/kmipfs/kms/kmipserver"
	"github.com/kmipfs/kmipfs/meta"
)

// kmipfsBin is the kmipfs binary the exec tests run (built by TestMain unless KMIPFS_BIN names one).
var kmipfsBin string

func TestMain(m *testing.M) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if os.Getenv("KMIPFS_TEST_DISALLOW_SKIP") != "" {
			fmt.Println("FAIL: /dev/fuse is missing and KMIPFS_TEST_DISALLOW_SKIP is set")
			os.Exit(1)
		}
		fmt.Println("skipping mounted tests: no /dev/fuse")
		os.Exit(0)
	}
	kmipfsBin = os.Getenv("KMIPFS_BIN")
	var tmp string
	if kmipfsBin == "" {
		var err error
		if tmp, err = os.MkdirTemp("", "kmipfs-bin"); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		kmipfsBin = filepath.Join(tmp, "kmipfs")
		out, err := exec.Command("go", "build", "-o", kmipfsBin, "../cmd/kmipfs").CombinedOutput()
		if err != nil {
			fmt.Printf("building kmipfs: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	if tmp != "" {
		os.RemoveAll(tmp)
	}
	os.Exit(code)
}

// requireTool skips (or, in CI, fails) a test that needs a command-line tool.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("KMIPFS_TEST_DISALLOW_SKIP") != "" {
			t.Fatalf("%s is not installed (make setup installs it)", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// Key ids created in every test's KMIP server.
const (
	keyA = "key-a"
	keyB = "key-b"
)

// kmsServer is an embedded KMIP server on a loopback port with its own PKI. stop and start take it
// down and bring it back on the same address and key store, in this process, as a server restart.
type kmsServer struct {
	srv   *kmipserver.Server // nil while stopped
	addr  string
	files certs.Files
	dir   string
	done  chan error // Serve's result
}

func startKMSServer(t *testing.T, dir string) *kmsServer {
	t.Helper()
	files, err := certs.Generate(dir)
	if err != nil {
		t.Fatal(err)
	}
	k := &kmsServer{files: files, dir: dir, addr: "127.0.0.1:0"}
	k.start(t)
	t.Cleanup(func() { k.stop(t) })
	return k
}

// start serves on k.addr (a free port the first time).
func (k *kmsServer) start(t *testing.T) {
	t.Helper()
	if k.srv != nil {
		return
	}
	tlsCfg, err := certs.ServerTLSConfig(k.files)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := kmipserver.New(filepath.Join(k.dir, "keys.json"), kmipserver.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	for i := 0; ; i++ { // the old listener's port may take a moment to free up
		if ln, err = tls.Listen("tcp", k.addr, tlsCfg); err == nil || i == 100 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	k.srv, k.addr, k.done = srv, ln.Addr().String(), make(chan error, 1)
	go func() { k.done <- srv.Serve(ln) }()
}

// stop closes the server and its connections, as a server that went down.
func (k *kmsServer) stop(t *testing.T) {
	t.Helper()
	if k.srv == nil {
		return
	}
	if err := k.srv.Close(); err != nil {
		t.Errorf("close KMIP server: %v", err)
	}
	if err := <-k.done; !errors.Is(err, kmipserver.ErrServerClosed) {
		t.Errorf("KMIP server: Serve returned %v", err)
	}
	k.srv = nil
}

// createKey creates an active AES-256 key called name in the running server.
func (k *kmsServer) createKey(t *testing.T, name string) {
	t.Helper()
	if _, err := k.srv.CreateKey(name); err != nil {
		t.Fatal(err)
	}
}

func (k *kmsServer) clientConfig(template string) kms.Config {
	c := kms.Config{
		Addr:        k.addr,
		CAPath:      k.files.CA,
		ClientCert:  k.files.ClientCert,
		ClientKey:   k.files.ClientKey,
		KeyTemplate: template,
	}
	c.SetDefaults()
	return c
}

// env is one kmipfs filesystem under test: KMIP server, store and metadata directories, and an
// in-process mount that can be unmounted and mounted again on the same state.
type env struct {
	t        *testing.T
	dir      string
	kms      *kmsServer // the embedded server; nil with withKMS
	kmsCfg   kms.Config // what the mount's kms client uses (after SetDefaults)
	external *kms.Config
	kmsMods  []func(*kms.Config)
	template string
	fsCfg    kfs.Config
	storeDir string
	metaDir  string
	mnt      string
	logs     *logRecorder
	// wrapStore, if set (withStore), decorates the store at every mount.
	wrapStore storeWrapper

	db     *meta.DB
	client *kms.Client
	cache  *kms.Cache
	fsys   *kfs.FS
	srv    *fuse.Server
}

type envOption func(*env)

func withDefaultKeyID(id string) envOption { return func(e *env) { e.fsCfg.DefaultKeyID = id } }

// withTemplate sets kms.key_template (default "kmipfs-$keyid").
func withTemplate(tmpl string) envOption { return func(e *env) { e.template = tmpl } }

// withKMS mounts against another KMIP server (PyKMIP, `kmipfs kms serve`) instead of starting the
// embedded one; cfg gives its address and certificates. keyA and keyB are created there if missing.
func withKMS(cfg kms.Config) envOption { return func(e *env) { e.external = &cfg } }

// withKMSConfig changes the [kms] options of the mount, e.g. timeout or cache TTLs. The harness's
// defaults are cache_ttl 1m and negative_ttl 1s.
func withKMSConfig(mod func(*kms.Config)) envOption {
	return func(e *env) { e.kmsMods = append(e.kmsMods, mod) }
}

// newEnv starts a KMIP server holding keyA and keyB (template "kmipfs-$keyid") and mounts an empty
// kmipfs.
func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{
		t:        t,
		dir:      dir,
		template: "kmipfs-$keyid",
		storeDir: filepath.Join(dir, "objects"),
		metaDir:  filepath.Join(dir, "meta"),
		mnt:      filepath.Join(dir, "mnt"),
		logs:     newLogRecorder(t),
	}
	for _, o := range opts {
		o(e)
	}
	e.prepareStore()
	if e.external == nil {
		e.kms = startKMSServer(t, filepath.Join(dir, "kms"))
		for _, id := range []string{keyA, keyB} {
			e.kms.createKey(t, kms.KeyName(e.template, id))
		}
		e.kmsCfg = e.kms.clientConfig(e.template)
	} else {
		e.kmsCfg = *e.external
		e.kmsCfg.KeyTemplate = e.template
		for _, id := range []string{keyA, keyB} {
			ensureKey(t, e.kmsCfg, kms.KeyName(e.template, id))
		}
	}
	e.kmsCfg.CacheTTL.Duration, e.kmsCfg.NegativeTTL.Duration = time.Minute, time.Second
	for _, mod := range e.kmsMods {
		mod(&e.kmsCfg)
	}
	e.kmsCfg.SetDefaults()
	if err := os.Mkdir(e.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	e.mount()
	t.Cleanup(func() {
		if e.srv != nil {
			e.unmount()
		}
		e.logs.check()
	})
	return e
}

func (e *env) mount() {
	e.t.Helper()
	logger := slog.New(e.logs)
	var err error
	e.client, err = kms.NewClient(e.kmsCfg, logger)
	if err != nil {
		e.t.Fatal(err)
	}
	e.cache = kms.NewCache(e.client, e.kmsCfg.CacheOptions(logger))
	store, err := e.openStore(logger)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.wrapStore != nil {
		store = e.wrapStore(store)
	}
	e.db, err = meta.Open(e.metaDir, meta.Options{Logger: logger})
	if err != nil {
		e.t.Fatal(err)
	}
	e.fsys, err = kfs.New(context.Background(), kfs.Options{
		Meta: e.db, Store: store, Keys: e.cache, KeyTemplate: e.template, Config: e.fsCfg, Logger: logger,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv, err = kfs.Mount(e.mnt, e.fsys, kfs.MountOptions{Debug: os.Getenv("KMIPFS_FUSE_DEBUG") != ""})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) unmount() {
	e.t.Helper()
	// The FUSE connection's id, to abort it if a lazy unmount never lets the server finish.
	var st syscall.Stat_t
	conn := -1
	if syscall.Stat(e.mnt, &st) == nil {
		conn = int(st.Dev&0xff | (st.Dev>>12)&0xfff00)
	}
	var err error
	for i := 0; i < 50; i++ {
		if err = e.srv.Unmount(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		e.t.Errorf("unmount %s: %v", e.mnt, err)
		_ = exec.Command("umount", "-l", e.mnt).Run()
	}
	served := make(chan struct{})
	go func() { e.srv.Wait(); close(served) }()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		// Something still holds a file of the lazily unmounted filesystem: abort the connection
		// (its requests fail with ENOTCONN) rather than hang the whole test binary.
		e.t.Errorf("%s: the FUSE server did not finish 10s after a lazy unmount; aborting FUSE connection %d", e.mnt, conn)
		if conn >= 0 {
			_ = os.WriteFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", conn), []byte("1"), 0o200)
		}
		<-served
	}
	if err := e.fsys.FlushAll(context.Background()); err != nil {
		e.t.Errorf("flush at unmount: %v", err)
	}
	e.cache.Close()
	e.client.Close()
	if err := e.db.Close(); err != nil {
		e.t.Errorf("close meta: %v", err)
	}
	e.srv = nil
}

func (e *env) remount() {
	e.t.Helper()
	e.unmount()
	e.mount()
}

// ensureKey creates an active key called name on the server of cfg unless one exists.
func ensureKey(t *testing.T, cfg kms.Config, name string) {
	t.Helper()
	c, err := kms.NewClient(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uids, err := c.LocateActive(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	if len(uids) == 0 {
		if _, err := c.CreateKey(t.Context(), name); err != nil {
			t.Fatal(err)
		}
	}
}

// path joins names below the mount point.
func (e *env) path(names ...string) string {
	return filepath.Join(append([]string{e.mnt}, names...)...)
}

// bucket creates a bucket keyed with keyID (none if empty) and returns its path.
func (e *env) bucket(name, keyID string) string {
	e.t.Helper()
	p := e.path(name)
	if err := os.Mkdir(p, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if keyID != "" {
		if err := setxattr(p, "user.kmipfs.key-id", keyID); err != nil {
			e.t.Fatal(err)
		}
	}
	return p
}

// storeFiles returns the paths of every object file in the local store.
func (e *env) storeFiles() []string {
	e.t.Helper()
	var out []string
	err := filepath.Walk(e.storeDir, func(p string, info os.FileInfo, err error) error {
		if errors.Is(err, os.ErrNotExist) {
			return nil // deleted while we walk: objects go in the background
		}
		if err != nil {
			return err
		}
		// Objects live in bucket directories; files at the root (the store's marker) are not objects.
		if info.Mode().IsRegular() && !strings.Contains(p, "/.tmp/") && filepath.Dir(p) != e.storeDir {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// logRecorder is a slog handler that keeps every record and fails the test on warnings and errors
// that the test did not announce with expect.
type logRecorder struct {
	t        *testing.T
	mu       sync.Mutex
	records  []string
	levels   []slog.Level
	expected []*regexp.Regexp
	attrs    []slog.Attr
	shared   *logRecorder
}

func newLogRecorder(t *testing.T) *logRecorder { return &logRecorder{t: t} }

func (l *logRecorder) root() *logRecorder {
	if l.shared != nil {
		return l.shared
	}
	return l
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	for _, a := range l.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	root := l.root()
	root.mu.Lock()
	root.records = append(root.records, b.String())
	root.levels = append(root.levels, r.Level)
	root.mu.Unlock()
	if testing.Verbose() && r.Level >= slog.LevelInfo {
		root.t.Log(b.String())
	}
	return nil
}

func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{t: l.t, attrs: append(append([]slog.Attr{}, l.attrs...), as...), shared: l.root()}
}

func (l *logRecorder) WithGroup(string) slog.Handler { return l }

// expect announces that log lines matching pattern at Warn or above are part of the test.
func (l *logRecorder) expect(pattern string) {
	root := l.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	root.expected = append(root.expected, regexp.MustCompile(pattern))
}

// find returns the recorded lines matching pattern.
func (l *logRecorder) find(pattern string) []string {
	re := regexp.MustCompile(pattern)
	root := l.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	var out []string
	for _, r := range root.records {
		if re.MatchString(r) {
			out = append(out, r)
		}
	}
	return out
}

func (l *logRecorder) check() {
	root := l.root()
	root.mu.Lock()
	defer root.mu.Unlock()
outer:
	for i, r := range root.records {
		if root.levels[i] < slog.LevelWarn {
			continue
		}
		for _, re := range root.expected {
			if re.MatchString(r) {
				continue outer
			}
		}
		root.t.Errorf("unexpected log line: %s", r)
	}
}
