package tests

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a kmipfs process started by a test; its output is collected for failure messages.
type proc struct {
	mnt  string // the mount point it serves, once waitMounted saw it
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(kmipfsBin, args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				p.cmd.Process.Kill()
				<-p.done
			}
		}
	})
	return p
}

// stop sends SIGINT and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("kmipfs did not exit after SIGINT; output:\n%s", p.out)
	}
	if p.err != nil {
		t.Fatalf("kmipfs exited with %v; output:\n%s", p.err, p.out)
	}
	if p.mnt != "" && isMounted(p.mnt) {
		t.Fatalf("%s is still mounted after kmipfs exited; output:\n%s", p.mnt, p.out)
	}
}

func isMounted(mnt string) bool {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[1] == mnt && strings.HasPrefix(f[2], "fuse") {
			return true
		}
	}
	return false
}

// waitMounted waits until mnt is a FUSE mount (or the process died).
func (p *proc) waitMounted(t *testing.T, mnt string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if isMounted(mnt) {
			p.mnt = mnt
			return
		}
		select {
		case <-p.done:
			t.Fatalf("kmipfs exited before mounting (%v); output:\n%s", p.err, p.out)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s not mounted after 30s; output:\n%s", mnt, p.out)
}

// run runs a command-line tool and returns its combined output and error.
func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// TestDemo is the newcomer's flow from the README, with the real binary and the attr tools:
// demo mounts; a bucket gets a key id; files go in and come back byte for byte; no plaintext
// reaches the store; unknown key ids and unkeyed buckets are ENOKEY; a restart keeps everything.
func TestDemo(t *testing.T) {
	setfattr := requireTool(t, "setfattr")
	getfattr := requireTool(t, "getfattr")
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	demo := startProc(t, "demo", dir)
	demo.waitMounted(t, mnt)
	waitOutput(t, demo, "Press Ctrl-C")

	b1 := filepath.Join(mnt, "b1")
	if err := os.Mkdir(b1, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := run(setfattr, "-n", "user.kmipfs.key-id", "-v", "demo-key", b1); err != nil {
		t.Fatalf("setfattr: %v %s", err, out)
	}
	random := randBytes(t, 10<<20)
	phrase := "kmipfs keeps this phrase secret"
	text := []byte(strings.Repeat("line: "+phrase+"\n", 50))
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "random.bin"), random)
	writeFile(t, filepath.Join(src, "text.txt"), text)
	for _, name := range []string{"random.bin", "text.txt"} {
		if out, err := run("cp", filepath.Join(src, name), b1); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		if out, err := run("cmp", filepath.Join(src, name), filepath.Join(b1, name)); err != nil {
			t.Fatalf("cmp: %v %s", err, out)
		}
	}
	if out, err := run("grep", "-r", "-l", phrase, filepath.Join(dir, "objects")); err == nil {
		t.Fatalf("plaintext phrase found in the store: %s", out)
	}

	out, err := run(getfattr, "--absolute-names", "--only-values", "-n", "user.kmipfs.key-id", b1)
	if err != nil || out != "demo-key" {
		t.Fatalf("getfattr bucket: %q %v", out, err)
	}
	out, err = run(getfattr, "--absolute-names", "-n", "user.kmipfs.key-id", b1)
	if err != nil || !strings.Contains(out, `user.kmipfs.key-id="demo-key"`) {
		t.Fatalf("getfattr: %q %v", out, err)
	}
	out, err = run(setfattr, "-n", "user.kmipfs.key-id", "-v", "no-such-key", b1)
	if err == nil || !strings.Contains(out, "Required key not available") {
		t.Fatalf("setfattr of an unknown key: want ENOKEY, got %v %q", err, out)
	}
	if out, _ := run(getfattr, "--absolute-names", "--only-values", "-n", "user.kmipfs.key-id", b1); out != "demo-key" {
		t.Fatalf("key id changed by failed setfattr: %q", out)
	}
	bare := filepath.Join(mnt, "bare")
	if err := os.Mkdir(bare, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err = run("cp", filepath.Join(src, "text.txt"), bare)
	if err == nil || !strings.Contains(out, "Required key not available") {
		t.Fatalf("create in unkeyed bucket: want ENOKEY, got %v %q", err, out)
	}
	// The demo bucket exists and is keyed.
	if out, _ := run(getfattr, "--absolute-names", "--only-values", "-n", "user.kmipfs.key-id", filepath.Join(mnt, "demo")); out != "demo-key" {
		t.Fatalf("demo bucket key id: %q", out)
	}

	demo.stop(t)
	if isMounted(mnt) {
		t.Fatal("still mounted after the demo stopped")
	}
	demo = startProc(t, "demo", dir)
	demo.waitMounted(t, mnt)
	waitOutput(t, demo, "Press Ctrl-C")
	for _, name := range []string{"random.bin", "text.txt"} {
		if out, err := run("cmp", filepath.Join(src, name), filepath.Join(b1, name)); err != nil {
			t.Fatalf("after restart, cmp: %v %s", err, out)
		}
	}
	demo.stop(t)

	// The config the demo wrote works with "kmipfs mount" while "kmipfs kms serve" runs.
	cfg := filepath.Join(dir, "kmipfs.toml")
	addr := configValue(t, cfg, "addr")
	kmsProc := startProc(t, "kms", "serve", "--dir", filepath.Join(dir, "kms"), "--addr", addr)
	waitOutput(t, kmsProc, "listening")
	mnt2 := filepath.Join(dir, "mnt2")
	if err := os.Mkdir(mnt2, 0o755); err != nil {
		t.Fatal(err)
	}
	m := startProc(t, "mount", "--config", cfg, mnt2)
	m.waitMounted(t, mnt2)
	waitOutput(t, m, "mounted at")
	if out, err := run("cmp", filepath.Join(src, "random.bin"), filepath.Join(mnt2, "b1", "random.bin")); err != nil {
		t.Fatalf("kmipfs mount with the demo config: %v %s", err, out)
	}
	m.stop(t)
	kmsProc.stop(t)
}

// configValue reads `key = "value"` from a TOML file written by the demo.
func configValue(t *testing.T, path, key string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && strings.TrimSpace(k) == key {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	t.Fatalf("%s has no %s", path, key)
	return ""
}

func waitOutput(t *testing.T, p *proc, substr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(p.out.String(), substr) {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("process exited (%v); output:\n%s", p.err, p.out)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("no %q in output:\n%s", substr, p.out)
}

// TestMountRefusesBadConfig checks that start-up problems stop kmipfs with the option's name and a
// distinct exit code.
func TestMountRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	k := startKMSServer(t, filepath.Join(dir, "kms"))
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	good := "[kms]\naddr = \"" + k.addr + "\"\nca_path = \"" + k.files.CA + "\"\nclient_cert = \"" + k.files.ClientCert +
		"\"\nclient_key = \"" + k.files.ClientKey + "\"\n[store]\npath = \"" + filepath.Join(dir, "objects") +
		"\"\n[meta]\npath = \"" + filepath.Join(dir, "meta") + "\"\n"
	cases := []struct {
		name, config, want string
		code               int
	}{
		{"unknown option", good + "[fs]\ndefault_keyid = \"x\"\n", "fs.default_keyid", 2},
		{"wrong type", strings.Replace(good, "[store]", "[fs]\nallow_other = \"yes\"\n[store]", 1), "allow_other", 2},
		{"bad backend", strings.Replace(good, "[store]\n", "[store]\nbackend = \"tape\"\n", 1), "store.backend", 2},
		{"missing CA file", strings.Replace(good, k.files.CA, filepath.Join(dir, "nope.crt"), 1), "nope.crt", 2},
		{"wrong port", strings.Replace(good, k.addr, "127.0.0.1:1", 1), "127.0.0.1:1", 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".toml")
			writeFile(t, cfg, []byte(c.config))
			cmd := exec.Command(kmipfsBin, "mount", "--config", cfg, mnt)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != c.code {
				t.Fatalf("exit: %v, want code %d; output:\n%s", err, c.code, out.String())
			}
			if !strings.Contains(out.String(), c.want) {
				t.Fatalf("output does not name %q:\n%s", c.want, out.String())
			}
			if isMounted(mnt) {
				t.Fatal("mounted despite the error")
			}
		})
	}
}
