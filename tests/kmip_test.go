package tests

// End-to-end tests of kmipfs against KMIP servers, the "Must show" list: the Ceph flow on a
// mount, one Locate and one Get for a thousand files, an outage (cached keys keep working, others fail
// fast with EIO, a restart heals without remounting), refused start-ups that name the problem, the key
// lifecycle (revoked keys give ENOKEY) and the `kmipfs key` commands. Each test body runs against the
// embedded server here and against a real PyKMIP server in pykmip_test.go.
//
// The helpers are prefixed with k (kRun, kProc, ...) so that they do not collide with the other test
// files of this package, which other people change.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/kms/certs"
	"github.com/kmipfs/kmipfs/kms/kmstest"
)

// backend is a KMIP server the tests talk to: its address and PKI, and a PyKMIP client config for the
// Python scripts (the Ceph flow, revoking from PyKMIP).
type backend struct {
	name   string
	cfg    kms.Config  // addr, ca_path, client_cert, client_key, timeout
	files  certs.Files // the PKI, including the CA key, to issue bad certificates
	pyConf string      // PyKMIP client config file
}

// embeddedBackend starts the embedded server in this process (kmsServer, which can stop and restart).
func embeddedBackend(t *testing.T) (*backend, *kmsServer) {
	t.Helper()
	dir := t.TempDir()
	k := startKMSServer(t, filepath.Join(dir, "kms"))
	b := &backend{name: "embedded", cfg: k.clientConfig(""), files: k.files, pyConf: filepath.Join(dir, "pykmip-client.conf")}
	if err := kmstest.WritePyKMIPClientConf(b.pyConf, k.addr, k.files); err != nil {
		t.Fatal(err)
	}
	return b, k
}

func pykmipBackend(p *kmstest.PyKMIP) *backend {
	return &backend{name: "pykmip", cfg: p.Config, files: p.Certs, pyConf: p.ClientConf}
}

// kFreeAddr returns a loopback address with a port nothing listens on.
func kFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// kRun runs a command with a deadline and returns its combined output and exit code (-1 if it did not
// run or was killed).
func kRun(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return string(out), ee.ExitCode()
	default:
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		return "", -1
	}
}

// kMustRun is kRun that fails the test unless the command succeeds.
func kMustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, code := kRun(t, name, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\n%s", name, strings.Join(args, " "), code, out)
	}
	return out
}

// kConfig writes a kmipfs.toml for the binary: the [kms] section of cfg with template, and store and
// metadata under dir.
func kConfig(t *testing.T, dir string, cfg kms.Config, template string, extra string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[kms]\naddr = %q\nca_path = %q\nclient_cert = %q\nclient_key = %q\nkey_template = %q\n",
		cfg.Addr, cfg.CAPath, cfg.ClientCert, cfg.ClientKey, template)
	if cfg.Timeout.Duration != 0 {
		fmt.Fprintf(&b, "timeout = %q\n", cfg.Timeout.Duration.String())
	}
	b.WriteString(extra)
	b.WriteString(storeTOML(t, dir)) // the local store under dir, or the S3 server of KMIPFS_TEST_STORE=s3
	fmt.Fprintf(&b, "[meta]\npath = %q\n", filepath.Join(dir, "meta"))
	f, err := os.CreateTemp(dir, "kmipfs-*.toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// kProc is a kmipfs process (mount or kms serve) started by a test and stopped at its end.
type kProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

func kStart(t *testing.T, args ...string) *kProc {
	t.Helper()
	p := &kProc{cmd: exec.Command(kmipfsBin, args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitFor waits until the output contains s (or the process exits, or 20 s pass).
func (p *kProc) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.out.String(), s) {
		select {
		case <-p.done:
			t.Fatalf("kmipfs exited (%v) before printing %q:\n%s", p.err, s, p.out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in kmipfs output after 20s:\n%s", s, p.out)
		}
	}
}

// stop sends SIGINT and waits for a clean exit.
func (p *kProc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("kmipfs did not exit after SIGINT:\n%s", p.out)
	}
	if p.err != nil {
		t.Fatalf("kmipfs exited with %v:\n%s", p.err, p.out)
	}
}

// kMounted reports whether mnt is a FUSE mount.
func kMounted(mnt string) bool {
	data, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[1] == mnt && strings.HasPrefix(f[2], "fuse") {
			return true
		}
	}
	return false
}

// kSetKeyID sets user.kmipfs.key-id with the setfattr tool, as a user would.
func kSetKeyID(t *testing.T, path, keyID string) {
	t.Helper()
	kMustRun(t, requireTool(t, "setfattr"), "-n", "user.kmipfs.key-id", "-v", keyID, path)
}

// kTree writes n files of random content (sizes from 0 to about 3 blocks, some large) under dir.
func kTree(t *testing.T, dir string, n int) {
	t.Helper()
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", i%7))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		size := (i * 997) % 13000
		if i%50 == 0 {
			size = 300_000 + i
		}
		data := make([]byte, size)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%04d.bin", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// kSameTree fails unless the trees a and b are byte for byte the same (diff -r).
func kSameTree(t *testing.T, a, b string) {
	t.Helper()
	if out, code := kRun(t, "diff", "-r", a, b); code != 0 {
		t.Fatalf("diff -r %s %s: exit %d\n%.2000s", a, b, code, out)
	}
}

// cephScript is the key creation from Ceph's KMIP documentation (SSE-KMS with PyKMIP), as it is there
// but for the config file: create an AES-256 key called pykmip-mybucketkey, activate it, print its
// attributes. It also prints the key, so the test can check that the mount uses exactly that secret.
const cephScript = `
import sys
from kmip.pie import client
from kmip import enums
c = client.ProxyKmipClient(config='client', config_file=sys.argv[1])
c.open()
key_id = c.create(
    enums.CryptographicAlgorithm.AES,
    256,
    operation_policy_name='default',
    name='pykmip-mybucketkey',
    cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                              enums.CryptographicUsageMask.DECRYPT]
)
c.activate(key_id)
attrs = c.get_attributes(uid=key_id)
r = {}
for a in attrs[1]:
    r[str(a.attribute_name)] = str(a.attribute_value)
print(r)
print("UID", key_id)
print("KEY", c.get(key_id).value.hex())
c.close()
`

// pyRevokeScript revokes, from PyKMIP's client, every key called argv[2].
const pyRevokeScript = `
import sys
from kmip.pie import client
from kmip import enums
c = client.ProxyKmipClient(config='client', config_file=sys.argv[1])
c.open()
f = c.attribute_factory
uids = c.locate(attributes=[f.create_attribute(enums.AttributeType.NAME, sys.argv[2])])
for uid in uids:
    c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    print("REVOKED", uid)
c.close()
`

// testCephFlow is Must show 1: the Python client creates pykmip-mybucketkey; a mount with key_template
// "pykmip-$keyid" gets `setfattr -n user.kmipfs.key-id -v mybucketkey` on a bucket; a tree is copied in
// and read back, then again after a remount. The mount's secret is the one PyKMIP's client got.
func testCephFlow(t *testing.T, b *backend) {
	dir := t.TempDir()
	out, err := kmstest.RunPython(t.Context(), dir, cephScript, b.pyConf)
	if err != nil {
		t.Fatalf("Ceph's PyKMIP script against %s: %v\n%s", b.name, err, out)
	}
	keyHex := ""
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "KEY "); ok {
			keyHex = v
		}
	}
	for _, want := range []string{"'Name': 'pykmip-mybucketkey'", "'State': 'State.ACTIVE'", "'Cryptographic Length': '256'"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the script's attributes lack %s:\n%s", want, out)
		}
	}
	if len(keyHex) != 64 {
		t.Fatalf("no 32-byte key from the script:\n%s", out)
	}
	t.Logf("Ceph script against %s:\n%s", b.name, out)

	e := newEnv(t, withKMS(b.cfg), withTemplate("pykmip-$keyid"))
	bucket := e.path("mybucket")
	if err := os.Mkdir(bucket, 0o755); err != nil {
		t.Fatal(err)
	}
	kSetKeyID(t, bucket, "mybucketkey")
	src := filepath.Join(dir, "src")
	kTree(t, src, 60)
	kMustRun(t, "cp", "-a", src, bucket)
	kSameTree(t, src, filepath.Join(bucket, "src"))
	getfattr := requireTool(t, "getfattr")
	f := filepath.Join(bucket, "src", "d1", "f0001.bin")
	if v := kMustRun(t, getfattr, "--absolute-names", "--only-values", "-n", "user.kmipfs.key-name", f); v != "pykmip-mybucketkey" {
		t.Errorf("user.kmipfs.key-name of a copied file: %q", v)
	}
	if v := kMustRun(t, getfattr, "--absolute-names", "--only-values", "-n", "user.kmipfs.key-id", f); v != "mybucketkey" {
		t.Errorf("user.kmipfs.key-id of a copied file: %q", v)
	}
	// The secret behind the files is exactly the key the Python client created.
	secret, err := e.client.Secret(t.Context(), "pykmip-mybucketkey")
	if err != nil || hex.EncodeToString(secret) != keyHex {
		t.Fatalf("the mount's secret for pykmip-mybucketkey is %x (%v), PyKMIP created %s", secret, err, keyHex)
	}
	e.remount()
	kSameTree(t, src, filepath.Join(bucket, "src"))
	// Nothing of the plaintext reaches the store.
	probe := readPrefix(t, filepath.Join(src, "d3", "f0003.bin"), 64)
	for _, obj := range e.storeFiles() {
		if data, _ := os.ReadFile(obj); bytes.Contains(data, probe) {
			t.Fatalf("plaintext of f0003.bin found in %s", obj)
		}
	}
}

func readPrefix(t *testing.T, path string, n int) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data[:min(n, len(data))]
}

// TestCephFlowKMSServe is Must show 1 against `kmipfs kms serve`: the real binary serves KMIP, and the
// Python snippet from Ceph's documentation creates the key with PyKMIP's own client.
func TestCephFlowKMSServe(t *testing.T) {
	kmstest.RequirePyKMIP(t) // for the Python client
	dir := t.TempDir()
	addr := kFreeAddr(t)
	srv := kStart(t, "kms", "serve", "--dir", filepath.Join(dir, "kms"), "--addr", addr)
	srv.waitFor(t, "listening on")
	files := certs.Files{CA: filepath.Join(dir, "kms", "ca.crt"), CAKey: filepath.Join(dir, "kms", "ca.key"),
		ClientCert: filepath.Join(dir, "kms", "client.crt"), ClientKey: filepath.Join(dir, "kms", "client.key")}
	b := &backend{name: "kmipfs kms serve", files: files, pyConf: filepath.Join(dir, "client.conf"),
		cfg: kms.Config{Addr: addr, CAPath: files.CA, ClientCert: files.ClientCert, ClientKey: files.ClientKey}}
	if err := kmstest.WritePyKMIPClientConf(b.pyConf, addr, files); err != nil {
		t.Fatal(err)
	}
	testCephFlow(t, b)
	srv.stop(t)
}

// requestsLine matches the line a mount logs at unmount with the KMIP requests it made.
var requestsLine = regexp.MustCompile(`msg="kms: requests made" locate=(\d+) get=(\d+)`)

// testThousandFiles is Must show 2: copying 1000 small files into a bucket, and reading them back, makes
// one Locate and one Get (the setfattr that names the key fetches it; everything after is a cache hit).
// inProcess counts with the mount's kms client; otherwise the real binary mounts and the counts are
// read from the line it logs at unmount.
func testThousandFiles(t *testing.T, b *backend, inProcess bool) (locates, gets uint64) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for i := range 1000 {
		if err := os.MkdirAll(filepath.Join(src, fmt.Sprintf("d%02d", i/100)), 0o755); err != nil {
			t.Fatal(err)
		}
		data := []byte(strings.Repeat(fmt.Sprintf("small file %d\n", i), 1+i%20))
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("d%02d", i/100), fmt.Sprintf("f%04d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	keyName := "pykmip-bulkkey"
	ensureKey(t, b.cfg, keyName)
	copyAndRead := func(mnt string) {
		bucket := filepath.Join(mnt, "bulk")
		if err := os.Mkdir(bucket, 0o755); err != nil {
			t.Fatal(err)
		}
		kSetKeyID(t, bucket, "bulkkey")
		kMustRun(t, "cp", "-r", src, bucket)
		kSameTree(t, src, filepath.Join(bucket, "src"))
	}
	start := time.Now()
	if inProcess {
		e := newEnv(t, withKMS(b.cfg), withTemplate("pykmip-$keyid"))
		before := e.client.Stats()
		copyAndRead(e.mnt)
		after := e.client.Stats()
		locates, gets = after.Locate-before.Locate, after.Get-before.Get
		t.Logf("%s, in-process mount: %d Locate, %d Get, %d other KMIP requests for 1000 files copied and read back in %v; cache %v",
			b.name, locates, gets, after.Other-before.Other+after.Discover-before.Discover, time.Since(start).Round(time.Millisecond), e.cache)
		return locates, gets
	}
	cfg := kConfig(t, dir, b.cfg, "pykmip-$keyid", "")
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m := kStart(t, "mount", "--config", cfg, mnt)
	m.waitFor(t, "mounted at")
	copyAndRead(mnt)
	m.stop(t)
	if kMounted(mnt) {
		t.Fatal("still mounted after kmipfs exited")
	}
	match := requestsLine.FindStringSubmatch(m.out.String())
	if match == nil {
		t.Fatalf("no request counts in the mount's log:\n%s", m.out)
	}
	l, _ := strconv.ParseUint(match[1], 10, 64)
	g, _ := strconv.ParseUint(match[2], 10, 64)
	t.Logf("%s, kmipfs mount: %s (1000 files copied and read back in %v)", b.name, match[0], time.Since(start).Round(time.Millisecond))
	return l, g
}

func TestThousandFilesOneLocate(t *testing.T) {
	b, _ := embeddedBackend(t)
	if l, g := testThousandFiles(t, b, true); l != 1 || g != 1 {
		t.Errorf("1000 files made %d Locate and %d Get requests, want 1 and 1", l, g)
	}
}

// expiredClientCert issues, with the backend's own CA (crypto/x509), a client certificate for the right
// CN that expired yesterday, and returns its certificate and key files.
func expiredClientCert(t *testing.T, b *backend) (string, string) {
	t.Helper()
	caKey, err := certs.ReadKey(b.files.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certs.ReadCert(b.files.CA)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: certs.ClientCN},
		NotBefore:             time.Now().Add(-30 * 24 * time.Hour),
		NotAfter:              time.Now().Add(-24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "expired.crt"), filepath.Join(dir, "expired.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// testRefusedAtStart is Must show 4: with a wrong CA, a client certificate from another CA, an expired
// client certificate, or a port where nothing listens, `kmipfs mount` stops at its Discover Versions
// check with exit code 3 and one line that names the problem, and mounts nothing.
func testRefusedAtStart(t *testing.T, b *backend) {
	dir := t.TempDir()
	other, err := certs.Generate(filepath.Join(dir, "other-pki")) // an unrelated CA and its certificates
	if err != nil {
		t.Fatal(err)
	}
	expCert, expKey := expiredClientCert(t, b)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	timeout := 3 * time.Second
	cases := []struct {
		name   string
		modify func(*kms.Config)
		want   []string
		not    string
	}{
		{"wrong CA", func(c *kms.Config) { c.CAPath = other.CA },
			[]string{"certificate signed by unknown authority", "not signed by the CA in kms.ca_path"}, ""},
		{"wrong client certificate", func(c *kms.Config) { c.ClientCert, c.ClientKey = other.ClientCert, other.ClientKey },
			[]string{"remote error: tls:", "the server refused kms.client_cert", `issued by "CN=kmipfs loopback CA"`}, "expired"},
		{"expired client certificate", func(c *kms.Config) { c.ClientCert, c.ClientKey = expCert, expKey },
			[]string{"remote error: tls:", "kms.client_cert expired on"}, ""},
		{"wrong port", func(c *kms.Config) { c.Addr = kFreeAddr(t) },
			[]string{"connection refused", "nothing is listening at kms.addr"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := b.cfg
			cfg.Timeout.Duration = timeout
			c.modify(&cfg)
			path := kConfig(t, dir, cfg, "$keyid", "")
			start := time.Now()
			out, code := kRun(t, kmipfsBin, "mount", "--config", path, mnt)
			took := time.Since(start)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			t.Logf("%s, %s: exit %d after %v: %s", b.name, c.name, code, took.Round(time.Millisecond), out)
			if code != 3 {
				t.Fatalf("exit code %d, want 3 (KMIP server refused or unreachable); output:\n%s", code, out)
			}
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "kmipfs: ") {
				t.Fatalf("want exactly one line, got %d:\n%s", len(lines), out)
			}
			for _, w := range c.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("the line does not say %q: %s", w, lines[0])
				}
			}
			if c.not != "" && strings.Contains(lines[0], c.not) {
				t.Errorf("the line says %q: %s", c.not, lines[0])
			}
			if took > timeout {
				t.Errorf("refusing took %v, more than kms.timeout (%v)", took, timeout)
			}
			if kMounted(mnt) {
				t.Fatal("mounted despite the error")
			}
		})
	}
}

func TestMountRefusesBadKMIP(t *testing.T) {
	b, _ := embeddedBackend(t)
	testRefusedAtStart(t, b)
}

// testKeyCommands drives `kmipfs key create|list|show|revoke` with a config file, as an operator would.
func testKeyCommands(t *testing.T, b *backend) {
	dir := t.TempDir()
	cfg := kConfig(t, dir, b.cfg, "pykmip-$keyid", "")
	key := func(args ...string) (string, int) {
		t.Helper()
		return kRun(t, kmipfsBin, append([]string{"key"}, args...)...)
	}
	expect := func(out string, code, wantCode int, wants ...string) {
		t.Helper()
		if code != wantCode {
			t.Fatalf("exit %d, want %d:\n%s", code, wantCode, out)
		}
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
	}
	out, code := key("create", "--config", cfg, "cli-key")
	expect(out, code, 0, "created key id cli-key", `KMIP name "pykmip-cli-key"`, "AES-256", "Active")
	out, code = key("create", "--config", cfg, "cli-key")
	expect(out, code, 1, `key id "cli-key" already has an active key`)
	out, code = key("list", "--config", cfg)
	expect(out, code, 0, "KEY ID", "cli-key", "pykmip-cli-key", "Active", "AES-256")
	out, code = key("show", "--config", cfg, "cli-key")
	expect(out, code, 0, "key id:", "pykmip-cli-key", "state:", "Active", "algorithm:", "AES", "length:", "256 bits",
		"usage mask:", "Encrypt|Decrypt (12)", "created:")
	t.Logf("kmipfs key show against %s:\n%s", b.name, out)
	// The key works for a mount.
	e := newEnv(t, withKMS(b.cfg), withTemplate("pykmip-$keyid"))
	bucket := e.path("clibucket")
	if err := os.Mkdir(bucket, 0o755); err != nil {
		t.Fatal(err)
	}
	kSetKeyID(t, bucket, "cli-key")
	out, code = key("revoke", "--config", cfg, "cli-key")
	expect(out, code, 0, "revoked key id cli-key", "now Deactivated")
	out, code = key("show", "--config", cfg, "cli-key")
	expect(out, code, 0, "Deactivated")
	out, code = key("revoke", "--config", cfg, "cli-key")
	expect(out, code, 1, `no active key for key id "cli-key"`)
	out, code = key("show", "--config", cfg, "no-such-key")
	expect(out, code, 1, `no key for key id "no-such-key"`, "pykmip-no-such-key")
	out, code = key("create", "--config", kConfig(t, dir, kms.Config{Addr: kFreeAddr(t), CAPath: b.cfg.CAPath,
		ClientCert: b.cfg.ClientCert, ClientKey: b.cfg.ClientKey}, "$keyid", ""), "x")
	expect(out, code, 3, "nothing is listening at kms.addr")
	out, code = key("frobnicate")
	expect(out, code, 2, "unknown command")
}

func TestKeyCommands(t *testing.T) {
	b, _ := embeddedBackend(t)
	testKeyCommands(t, b)
}

// testRevokedKey: a key revoked in the KMIP server makes open, read and write of files under it fail
// with ENOKEY, with a log line naming the key, within the cache TTL and the 1 s re-check of open files;
// files under other keys are not affected. revoke revokes the KMIP object called name.
func testRevokedKey(t *testing.T, b *backend, revoke func(t *testing.T, name string)) {
	const ttl = time.Second
	const doomed, other = "revokeme", "keepme"
	ensureKey(t, b.cfg, "pykmip-"+doomed)
	ensureKey(t, b.cfg, "pykmip-"+other)
	e := newEnv(t, withKMS(b.cfg), withTemplate("pykmip-$keyid"), withKMSConfig(func(c *kms.Config) { c.CacheTTL.Duration = ttl }))
	e.logs.expect(`key not found in KMIP.*pykmip-` + doomed)
	bad, good := e.path("doomed"), e.path("kept")
	for _, p := range []struct{ dir, id string }{{bad, doomed}, {good, other}} {
		if err := os.Mkdir(p.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		kSetKeyID(t, p.dir, p.id)
	}
	data := bytes.Repeat([]byte("revocation test\n"), 1000)
	for _, d := range []string{bad, good} {
		if err := os.WriteFile(filepath.Join(d, "f"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// O_DIRECT: reads and writes on this descriptor reach kmipfs instead of the kernel's page cache,
	// which would go on serving data it already holds.
	open, err := os.OpenFile(filepath.Join(bad, "f"), os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	revoke(t, "pykmip-"+doomed)
	revokedAt := time.Now()

	// Open files notice within the cache TTL plus the 1 s re-check; new opens once the TTL is over.
	var readErr error
	buf := make([]byte, 4096)
	deadline := time.Now().Add(ttl + 5*time.Second)
	for {
		_, readErr = open.ReadAt(buf, 0)
		if readErr != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !errors.Is(readErr, syscall.ENOKEY) {
		t.Fatalf("read of an open file %v after the revocation: %v, want ENOKEY", time.Since(revokedAt), readErr)
	}
	t.Logf("%s: an open file failed with ENOKEY %v after the revocation", b.name, time.Since(revokedAt).Round(time.Millisecond))
	if _, err := open.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.ENOKEY) {
		t.Errorf("write of an open file under a revoked key: %v, want ENOKEY", err)
	}
	if _, err := os.ReadFile(filepath.Join(bad, "f")); !errors.Is(err, syscall.ENOKEY) {
		t.Errorf("open+read under a revoked key: %v, want ENOKEY", err)
	}
	if err := os.WriteFile(filepath.Join(bad, "new"), data, 0o644); !errors.Is(err, syscall.ENOKEY) {
		t.Errorf("create under a revoked key: %v, want ENOKEY", err)
	}
	// Nothing else is affected.
	if got, err := os.ReadFile(filepath.Join(good, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file under another key: %v", err)
	}
	if err := os.WriteFile(filepath.Join(good, "new"), data, 0o644); err != nil {
		t.Fatalf("create under another key: %v", err)
	}
	if entries, err := os.ReadDir(bad); err != nil || len(entries) != 1 {
		t.Errorf("listing the bucket of the revoked key: %v, %v", entries, err)
	}
	if lines := e.logs.find(`key not found in KMIP.*pykmip-` + doomed); len(lines) == 0 {
		t.Errorf("no log line names the revoked key")
	} else {
		t.Logf("%s: log line: %s", b.name, lines[0])
	}
}

func TestRevokedKeyENOKEY(t *testing.T) {
	b, _ := embeddedBackend(t)
	cfg := kConfig(t, t.TempDir(), b.cfg, "pykmip-$keyid", "")
	testRevokedKey(t, b, func(t *testing.T, name string) {
		kMustRun(t, kmipfsBin, "key", "revoke", "--config", cfg, strings.TrimPrefix(name, "pykmip-"))
	})
}

// outageServer is the KMIP server of an outage test: down takes it away (the port refuses), up brings
// it back on the same address and keys; freeze and thaw (PyKMIP only) make it hang and resume.
type outageServer struct {
	name         string
	down, up     func(t *testing.T, e *env)
	freeze, thaw func(t *testing.T, e *env)
}

// timedRead opens and reads path, returning the data, the error and how long it took.
func timedRead(path string) ([]byte, error, time.Duration) {
	start := time.Now()
	data, err := os.ReadFile(path)
	return data, err, time.Since(start)
}

// testOutage is Must show 3: with the KMIP server down, files whose key is cached read and write, even
// after the cache TTL (the cached copy is served while the server is unavailable); a file under an
// uncached key fails with EIO within the timeout; once the server is back it works, without a remount.
// With freeze, the same for a server that hangs instead of refusing.
func testOutage(t *testing.T, b *backend, s outageServer) {
	const timeout, ttl = 2 * time.Second, time.Second
	const bound = timeout + 2*time.Second
	ensureKey(t, b.cfg, "pykmip-key-c")
	e := newEnv(t, withKMS(b.cfg), withTemplate("pykmip-$keyid"), withKMSConfig(func(c *kms.Config) {
		// PyKMIP's shutdown waits up to 10 s for open sessions; the cached copy must outlive that.
		c.Timeout.Duration, c.CacheTTL.Duration, c.StaleTTL.Duration = timeout, ttl, time.Minute
	}))
	e.logs.expect(`KMIP server unavailable`)
	e.logs.expect(`key server unavailable; serving cached secret`)
	data := map[string][]byte{}
	for _, id := range []string{keyA, keyB, "key-c"} {
		dir := e.path("bucket-" + id)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		kSetKeyID(t, dir, id)
		d := make([]byte, 100_000)
		if _, err := rand.Read(d); err != nil {
			t.Fatal(err)
		}
		data[id] = d
		if err := os.WriteFile(filepath.Join(dir, "f"), d, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fa, fb, fc := e.path("bucket-"+keyA, "f"), e.path("bucket-"+keyB, "f"), e.path("bucket-key-c", "f")
	e.remount() // an empty cache
	if got, err, _ := timedRead(fa); err != nil || !bytes.Equal(got, data[keyA]) {
		t.Fatalf("read before the outage: %v", err)
	}

	s.down(t, e)
	time.Sleep(ttl + 200*time.Millisecond) // the cached secret of key-a is now past its TTL
	got, err, took := timedRead(fa)
	if err != nil || !bytes.Equal(got, data[keyA]) {
		t.Fatalf("server down: read of a file whose key is cached: %v", err)
	}
	t.Logf("%s down: cached key, read in %v", s.name, took.Round(time.Millisecond))
	newFile := e.path("bucket-"+keyA, "written-during-outage")
	if err := os.WriteFile(newFile, data[keyB], 0o644); err != nil {
		t.Fatalf("server down: create and write under a cached key: %v", err)
	}
	if got, err := os.ReadFile(newFile); err != nil || !bytes.Equal(got, data[keyB]) {
		t.Fatalf("server down: read back what was written: %v", err)
	}
	_, err, took = timedRead(fb)
	t.Logf("%s down: uncached key failed with %v after %v (kms.timeout %v)", s.name, err, took.Round(time.Millisecond), timeout)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("server down: read under an uncached key: %v, want EIO", err)
	}
	if took > bound {
		t.Fatalf("server down: EIO took %v, more than kms.timeout + 2s", took)
	}

	s.up(t, e)
	upAt := time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err, _ = timedRead(fb)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || !bytes.Equal(got, data[keyB]) {
		t.Fatalf("after the restart, without remounting: read under key-b: %v", err)
	}
	for _, p := range []string{fa, newFile} {
		if _, err := os.ReadFile(p); err != nil {
			t.Fatalf("after the restart: %s: %v", p, err)
		}
	}
	t.Logf("%s back: the uncached key works again %v after the restart, without a remount (kms.error_ttl 1s)",
		s.name, time.Since(upAt).Round(time.Millisecond))
	if s.freeze == nil {
		return
	}

	// A server that hangs: connections are accepted (the kernel queues them) but nothing answers.
	time.Sleep(ttl + 200*time.Millisecond)
	s.freeze(t, e)
	_, err, took = timedRead(fc)
	t.Logf("%s frozen: uncached key failed with %v after %v (kms.timeout %v)", s.name, err, took.Round(time.Millisecond), timeout)
	if !errors.Is(err, syscall.EIO) || took > bound {
		t.Fatalf("server hangs: read under an uncached key: %v after %v; want EIO within kms.timeout + 2s", err, took)
	}
	for i := range 3 {
		got, err, took = timedRead(fa)
		t.Logf("%s frozen: cached key, read %d in %v", s.name, i, took.Round(time.Millisecond))
		if err != nil || !bytes.Equal(got, data[keyA]) || took > bound {
			t.Fatalf("server hangs: read %d of a file whose key is cached: %v after %v", i, err, took)
		}
		if i > 0 && took > time.Second {
			t.Fatalf("server hangs: read %d of a cached key waited %v; only the first may wait for the timeout", i, took)
		}
	}
	s.thaw(t, e)
	deadline = time.Now().Add(10 * time.Second)
	for {
		got, err, _ = timedRead(fc)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || !bytes.Equal(got, data["key-c"]) {
		t.Fatalf("after the server resumed: %v", err)
	}
}

func TestKMIPOutage(t *testing.T) {
	b, k := embeddedBackend(t)
	testOutage(t, b, outageServer{name: "embedded server",
		down: func(t *testing.T, _ *env) { k.stop(t) },
		up:   func(t *testing.T, _ *env) { k.start(t) },
	})
}
