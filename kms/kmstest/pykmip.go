package kmstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/kms/certs"
)

// The Debian package python3-pykmip (PyKMIP 0.10) installs these. PyKMIP 0.10 calls ssl.wrap_socket,
// which Python 3.12 removed, and a pyenv or venv python3 on PATH cannot import the Debian package, so the
// interpreter is named by path.
const (
	PyKMIPServer = "/usr/bin/pykmip-server"
	PyKMIPPython = "/usr/bin/python3"
)

// PyKMIPMissing returns nil if PyKMIP's server and the Python that has its client are installed, else an
// error saying what is missing.
func PyKMIPMissing() error {
	for _, p := range []string{PyKMIPServer, PyKMIPPython} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%v (apt-get install python3-pykmip, or make setup)", err)
		}
	}
	return nil
}

// RequirePyKMIP skips the test when PyKMIP is not installed, or fails it when KMIPFS_TEST_DISALLOW_SKIP is
// set (as in CI, where make setup installs it).
func RequirePyKMIP(t testing.TB) {
	t.Helper()
	if err := PyKMIPMissing(); err != nil {
		if os.Getenv("KMIPFS_TEST_DISALLOW_SKIP") != "" {
			t.Fatalf("PyKMIP is required (KMIPFS_TEST_DISALLOW_SKIP is set): %v", err)
		}
		t.Skipf("PyKMIP is not installed: %v", err)
	}
}

// PyKMIPOptions configure StartPyKMIP.
type PyKMIPOptions struct {
	// RSA makes the PKI with RSA keys instead of EC. PyKMIP then offers only CBC cipher suites.
	RSA bool
	// Timeout is the kms.timeout of Config; default 5s.
	Timeout time.Duration
}

// PyKMIP is a pykmip-server process on a free 127.0.0.1 port, with mutual TLS (auth_suite TLS1.2,
// client certificates required and checked for clientAuth), its own PKI and a fresh SQLite database, all
// under Dir. It is what ../shared/kmip/pykmip-testserver.sh sets up, in Go, so tests can stop, restart
// and freeze it. Start it with StartPyKMIP (or RunPyKMIP in a test) and always Stop it.
type PyKMIP struct {
	Dir        string
	Certs      certs.Files
	Addr       string     // 127.0.0.1:port, kept across restarts
	Config     kms.Config // a kms client config for it (Addr, CA, client certificate, Timeout)
	ClientConf string     // a PyKMIP client config: ProxyKmipClient(config='client', config_file=ClientConf)

	serverConf string

	mu     sync.Mutex
	cmd    *exec.Cmd     // protected by mu; nil when stopped
	exited chan struct{} // protected by mu; closed when cmd has been waited for
	out    *lockedBuffer
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freePort returns a loopback TCP port that nothing listened on a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// StartPyKMIP writes a PKI and the configs under dir, starts pykmip-server and waits until it answers
// Discover Versions over mutual TLS (2 to 3 seconds). The database starts empty.
func StartPyKMIP(dir string, opts PyKMIPOptions) (*PyKMIP, error) {
	if err := PyKMIPMissing(); err != nil {
		return nil, err
	}
	gen := certs.Generate
	if opts.RSA {
		gen = certs.GenerateRSA
	}
	files, err := gen(filepath.Join(dir, "pki"))
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	p := &PyKMIP{
		Dir:        dir,
		Certs:      files,
		Addr:       fmt.Sprintf("127.0.0.1:%d", port),
		ClientConf: filepath.Join(dir, "client.conf"),
		serverConf: filepath.Join(dir, "server.conf"),
		out:        &lockedBuffer{},
	}
	p.Config = kms.Config{Addr: p.Addr, CAPath: files.CA, ClientCert: files.ClientCert, ClientKey: files.ClientKey,
		Timeout: kms.Duration{Duration: opts.Timeout}}
	policies := filepath.Join(dir, "policies")
	if err := os.MkdirAll(policies, 0o700); err != nil {
		return nil, err
	}
	db := filepath.Join(dir, "pykmip.db")
	_ = os.Remove(db)
	// These are the only keys [server] accepts; any other is a fatal error. The log file is a flag.
	conf := fmt.Sprintf("[server]\nhostname=127.0.0.1\nport=%d\ncertificate_path=%s\nkey_path=%s\nca_path=%s\n"+
		"auth_suite=TLS1.2\nenable_tls_client_auth=True\npolicy_path=%s\ndatabase_path=%s\nlogging_level=INFO\n",
		port, files.ServerCert, files.ServerKey, files.CA, policies, db)
	if err := os.WriteFile(p.serverConf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if err := WritePyKMIPClientConf(p.ClientConf, p.Addr, files); err != nil {
		return nil, err
	}
	if err := p.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

// WritePyKMIPClientConf writes a PyKMIP client config ([client] section) for the KMIP server at addr with
// the client certificate and CA of files, TLS 1.2, server certificate required.
func WritePyKMIPClientConf(path, addr string, files certs.Files) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	conf := fmt.Sprintf("[client]\nhost=%s\nport=%s\ncertfile=%s\nkeyfile=%s\nca_certs=%s\ncert_reqs=CERT_REQUIRED\n"+
		"ssl_version=PROTOCOL_TLSv1_2\ndo_handshake_on_connect=True\nsuppress_ragged_eofs=True\n",
		host, port, files.ClientCert, files.ClientKey, files.CA)
	return os.WriteFile(path, []byte(conf), 0o600)
}

// RunPyKMIP starts PyKMIP for one test (RequirePyKMIP first) and stops it in t.Cleanup, also when the test
// fails; a server that does not stop cleanly fails the test.
func RunPyKMIP(t testing.TB, opts PyKMIPOptions) *PyKMIP {
	t.Helper()
	RequirePyKMIP(t)
	p, err := StartPyKMIP(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stop PyKMIP: %v", err)
		}
	})
	return p
}

// Start starts the server again after Stop, on the same address and database, and waits until it
// answers. It does nothing if the server runs.
func (p *PyKMIP) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return nil
	}
	cmd := exec.Command(PyKMIPServer, "-f", p.serverConf, "-l", filepath.Join(p.Dir, "server.log"))
	cmd.Env = append(os.Environ(), "PYTHONWARNINGS=ignore")
	cmd.Stdout, cmd.Stderr = p.out, p.out
	// Its own process group: PyKMIP forks two helpers (a multiprocessing manager and the policy
	// monitor), and Stop must be able to find them by that group id.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", PyKMIPServer, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.cmd, p.exited = cmd, exited

	c, err := kms.NewClient(p.Config, nil)
	if err != nil {
		p.stopLocked()
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.Ping(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			p.cmd = nil
			if syscall.Kill(-cmd.Process.Pid, 0) == nil {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // helpers of the group it started
			}
			return fmt.Errorf("pykmip-server exited during start-up: %s\n%s", cmd.ProcessState, p.tail())
		default:
		}
		if time.Now().After(deadline) {
			p.stopLocked()
			return fmt.Errorf("pykmip-server not ready after 30s: %v\n%s", err, p.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop sends SIGINT (PyKMIP's clean shutdown, about 2 s), waits for the server, and makes sure no process
// of its group is left; what lingers gets SIGKILL. It does nothing if the server is stopped.
func (p *PyKMIP) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopLocked()
}

func (p *PyKMIP) stopLocked() error {
	if p.cmd == nil {
		return nil
	}
	pid := p.cmd.Process.Pid
	var errs []error
	_ = syscall.Kill(pid, syscall.SIGCONT) // in case the test froze it
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		errs = append(errs, fmt.Errorf("pykmip-server (pid %d) ignored SIGINT for 15s; killed", pid))
		_ = syscall.Kill(-pid, syscall.SIGKILL) // the group this helper started
		<-p.exited
	}
	// The helpers end with the server; give them a moment, then kill what is left of the group.
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(-pid, 0) == nil {
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("processes of pykmip-server's group %d outlived it; killed", pid))
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			time.Sleep(100 * time.Millisecond)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.cmd = nil
	return errors.Join(errs...)
}

// Freeze stops the server process with SIGSTOP: it still accepts TCP connections (the kernel queues
// them) but answers nothing, like a hung key manager. Thaw resumes it.
func (p *PyKMIP) Freeze() error { return p.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server with SIGCONT.
func (p *PyKMIP) Thaw() error { return p.signal(syscall.SIGCONT) }

func (p *PyKMIP) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return errors.New("pykmip-server is not running")
	}
	return p.cmd.Process.Signal(sig)
}

// Running reports whether the server process is alive.
func (p *PyKMIP) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Pgid returns the process group id of the running server (its PID), or 0.
func (p *PyKMIP) Pgid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Python runs a PyKMIP client script with /usr/bin/python3 as `python3 SCRIPT CLIENT_CONF ARGS...` and
// returns its combined output.
func (p *PyKMIP) Python(ctx context.Context, script string, args ...string) ([]byte, error) {
	return RunPython(ctx, p.Dir, script, append([]string{p.ClientConf}, args...)...)
}

// RunPython writes script to a file in dir and runs it with the Python that has PyKMIP.
func RunPython(ctx context.Context, dir, script string, args ...string) ([]byte, error) {
	f, err := os.CreateTemp(dir, "client-*.py")
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(script); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, PyKMIPPython, append([]string{f.Name()}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONWARNINGS=ignore")
	return cmd.CombinedOutput()
}

// Log returns the server's log file and output, for failure messages.
func (p *PyKMIP) Log() string {
	return p.tail()
}

func (p *PyKMIP) tail() string {
	log, _ := os.ReadFile(filepath.Join(p.Dir, "server.log"))
	lines := strings.Split(strings.TrimRight(string(log), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return "server.log (tail):\n" + strings.Join(lines, "\n") + "\noutput:\n" + p.out.String()
}
