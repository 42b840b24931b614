// Package s3test runs a real S3 server for tests: versitygw (Apache-2.0, one Go binary) on a loopback port,
// serving a posix directory in which every object is a plain file, so that a test can also look at what reached
// the store.
//
// The binary is found as $KMIPFS_VERSITYGW, then "versitygw" on $PATH, then $(go env GOPATH)/bin/versitygw,
// where `make setup-s3` installs it. Without it, Require skips the test, or fails it when
// KMIPFS_TEST_DISALLOW_SKIP is set (after trying to install it), as CI sets it.
package s3test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/objstore"
	"github.com/kmipfs/kmipfs/objstore/s3"
)

// Module is the versitygw that the tests and `make setup-s3` use.
const Module = "github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// Credentials of the server's root account. They are test values, not secrets.
const (
	AccessKey = "kmipfs-test-access"
	SecretKey = "kmipfs-test-secret-0123456789"
)

// Server is a running versitygw.
type Server struct {
	// Endpoint is the server's URL, "http://127.0.0.1:PORT".
	Endpoint string
	// Root is the posix directory it serves: Root/<bucket>/<key> is the object's file.
	Root string
	// CredentialsFile holds AccessKey and SecretKey in the AWS shared-credentials format.
	CredentialsFile string

	cmd  *exec.Cmd
	done chan error
	log  string
	// what Restart needs
	bin, dir string
	opts     Options
}

// Binary returns the path of the versitygw binary, or an error that says how to install it.
func Binary() (string, error) {
	if p := os.Getenv("KMIPFS_VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("KMIPFS_VERSITYGW: %w", err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	if p := gopathBin(); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("versitygw is not installed (make setup-s3 installs it)")
}

func gopathBin() string {
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return ""
	}
	gopath, _, _ := strings.Cut(strings.TrimSpace(string(out)), string(os.PathListSeparator))
	if gopath == "" {
		return ""
	}
	return filepath.Join(gopath, "bin", "versitygw")
}

var installOnce struct {
	sync.Once
	path string
	err  error
}

// install builds versitygw into $(go env GOPATH)/bin, once per process.
func install() (string, error) {
	installOnce.Do(func() {
		bin := gopathBin()
		if bin == "" {
			installOnce.err = errors.New("cannot find GOPATH to install versitygw into")
			return
		}
		cmd := exec.Command("go", "install", Module)
		cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(bin))
		if out, err := cmd.CombinedOutput(); err != nil {
			installOnce.err = fmt.Errorf("go install %s: %v\n%s", Module, err, out)
			return
		}
		installOnce.path = bin
	})
	return installOnce.path, installOnce.err
}

// Find returns the binary, installing it when KMIPFS_TEST_DISALLOW_SKIP is set and it is missing. skip is true
// when it is missing and the caller should skip.
func Find() (path string, skip bool, err error) {
	p, err := Binary()
	if err == nil {
		return p, false, nil
	}
	if os.Getenv("KMIPFS_TEST_DISALLOW_SKIP") == "" {
		return "", true, err
	}
	p, ierr := install()
	if ierr != nil {
		return "", false, fmt.Errorf("%v, and KMIPFS_TEST_DISALLOW_SKIP is set: %w", err, ierr)
	}
	return p, false, nil
}

// Require returns the binary, or skips t (fails it under KMIPFS_TEST_DISALLOW_SKIP).
func Require(t testing.TB) string {
	t.Helper()
	p, skip, err := Find()
	if skip {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Options are optional settings of a server.
type Options struct {
	// CertFile and KeyFile make the server speak https with this certificate.
	CertFile, KeyFile string
}

// Start starts a server on a fresh directory below t.TempDir() and stops it in t.Cleanup.
func Start(t testing.TB) *Server { return StartOpts(t, Options{}) }

// StartOpts is Start with options.
func StartOpts(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Require(t)
	srv, err := StartDir(bin, t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Errorf("versitygw: %v", err)
		}
	})
	return srv
}

// StartDir starts bin serving dir/root, with its log in dir/versitygw.log and the credentials file in
// dir/credentials, and waits until it answers HTTP. Stop it with Stop.
func StartDir(bin, dir string, opts Options) (*Server, error) {
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	creds := filepath.Join(dir, "credentials")
	body := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", AccessKey, SecretKey)
	if err := os.WriteFile(creds, []byte(body), 0o600); err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 { // the free port we picked may be taken before versitygw binds it
		srv, err := start(bin, dir, root, "127.0.0.1:0", opts)
		if err == nil {
			srv.CredentialsFile = creds
			return srv, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func start(bin, dir, root, addr string, opts Options) (*Server, error) {
	if addr == "127.0.0.1:0" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		addr = ln.Addr().String()
		ln.Close()
	}
	logPath := filepath.Join(dir, "versitygw.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := []string{"--access", AccessKey, "--secret", SecretKey, "--port", addr, "--quiet"}
	scheme, hc := "http", http.DefaultClient
	if opts.CertFile != "" {
		args = append(args, "--cert", opts.CertFile, "--key", opts.KeyFile)
		// Only to see that it serves; the tests check the certificate.
		scheme = "https"
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	// No lock files under root (.vgwlocks): the tests count the files there as objects, and there is one gateway.
	cmd := exec.Command(bin, append(args, "posix", "--disable-object-lock-file", root)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Never outlive the test binary. The kernel sends Pdeathsig when the thread that forked exits, so the
	// goroutine that starts versitygw keeps its thread locked, blocked in Wait, for as long as it runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s := &Server{Endpoint: scheme + "://" + addr, Root: root, cmd: cmd, done: make(chan error, 1), log: logPath,
		bin: bin, dir: dir, opts: opts}
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start versitygw: %w", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := hc.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return s, nil // any HTTP answer (403 without credentials) means it serves
		}
		select {
		case werr := <-s.done:
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("versitygw on %s exited (%v) before it answered:\n%s", addr, werr, out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = s.Stop()
			return nil, fmt.Errorf("versitygw on %s did not answer within 15s: %v", addr, err)
		}
	}
}

// Stop ends the server and waits for it.
func (s *Server) Stop() error {
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
	return nil
}

// Restart starts a stopped server again on the same address and directory, as a server coming back after an
// outage.
func (s *Server) Restart() error {
	if s.cmd != nil {
		return errors.New("versitygw: Restart of a running server")
	}
	addr := strings.TrimPrefix(strings.TrimPrefix(s.Endpoint, "http://"), "https://")
	var err error
	for range 50 { // the port may take a moment to be free again
		var n *Server
		if n, err = start(s.bin, s.dir, s.Root, addr, s.opts); err == nil {
			s.cmd, s.done = n.cmd, n.done
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// Config returns a store configuration for the server with bucket prefix prefix, defaults filled in.
func (s *Server) Config(prefix string) s3.Config {
	c := s3.Config{
		Endpoint:        s.Endpoint,
		PathStyle:       true,
		BucketPrefix:    prefix,
		CredentialsFile: s.CredentialsFile,
		Timeout:         s3.Duration{Duration: 30 * time.Second},
	}
	c.SetDefaults()
	return c
}

// Wipe deletes every bucket and object on the server, so that the next test starts with an empty store. It
// removes the bucket directories of Root: versitygw's posix backend keeps no state but the directory tree.
func (s *Server) Wipe() error {
	ents, err := os.ReadDir(s.Root)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(s.Root, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// External returns the configuration of an S3 server the tests were pointed at with KMIPFS_TEST_S3_ENDPOINT,
// KMIPFS_TEST_S3_CREDENTIALS (a shared-credentials file) and optionally KMIPFS_TEST_S3_REGION, such as the
// radosgw of scripts/ceph-rgw.sh, and whether there is one. Tests that use it empty and delete every bucket of
// that account: point it only at a server for tests.
func External() (s3.Config, bool) {
	ep := os.Getenv("KMIPFS_TEST_S3_ENDPOINT")
	if ep == "" {
		return s3.Config{}, false
	}
	c := s3.Config{
		Endpoint:        ep,
		Region:          os.Getenv("KMIPFS_TEST_S3_REGION"),
		PathStyle:       true,
		CredentialsFile: os.Getenv("KMIPFS_TEST_S3_CREDENTIALS"),
	}
	c.SetDefaults()
	return c, true
}

// WipeAccount deletes every object and then every bucket that a bucket-prefix-less store on cfg's server
// lists.
func WipeAccount(ctx context.Context, cfg s3.Config) error {
	cfg.BucketPrefix = ""
	st, err := s3.New(cfg)
	if err != nil {
		return err
	}
	names, err := st.Buckets(ctx)
	if err != nil {
		return err
	}
	for _, b := range names {
		if err := st.List(ctx, b, "", func(info objstore.Info) error { return st.Delete(ctx, b, info.Key) }); err != nil {
			return err
		}
		if err := st.DeleteBucket(ctx, b); err != nil {
			return err
		}
	}
	return nil
}
