package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/objstore"
	"github.com/kmipfs/kmipfs/objstore/local"
	"github.com/kmipfs/kmipfs/objstore/s3"
	"github.com/kmipfs/kmipfs/objstore/s3/s3test"
)

// KMIPFS_TEST_STORE selects the object store of every in-process mount (env.mount): "local" (the default) or
// "s3", a versitygw on loopback, started once per test binary and wiped before each test, whose posix root is
// e.storeDir (it keeps <bucket>/<key> as plain files, as the local store does, so the tests that look at the
// objects work on both).
func testStoreKind(t *testing.T) string {
	switch k := os.Getenv("KMIPFS_TEST_STORE"); k {
	case "", "local":
		return "local"
	case "s3":
		return "s3"
	default:
		t.Fatalf("KMIPFS_TEST_STORE=%q: expected \"local\" or \"s3\"", k)
		return ""
	}
}

// sharedS3 is the versitygw of this test binary. stopSharedS3 stops it; if nothing does, it dies with the
// binary (s3test sets Pdeathsig).
var sharedS3 struct {
	once sync.Once
	srv  *s3test.Server
	skip bool
	err  error
}

// s3Server returns the binary's versitygw, starting it on first use; it skips t (fails it under
// KMIPFS_TEST_DISALLOW_SKIP) when versitygw is not installed.
func s3Server(t *testing.T) *s3test.Server {
	t.Helper()
	sharedS3.once.Do(func() {
		bin, skip, err := s3test.Find()
		if err != nil {
			sharedS3.skip, sharedS3.err = skip, err
			return
		}
		removeStaleS3Dirs()
		dir, err := os.MkdirTemp("", fmt.Sprintf("kmipfs-versitygw-%d-", os.Getpid()))
		if err != nil {
			sharedS3.err = err
			return
		}
		sharedS3.srv, sharedS3.err = s3test.StartDir(bin, dir, s3test.Options{})
	})
	if sharedS3.skip {
		t.Skip(sharedS3.err)
	}
	if sharedS3.err != nil {
		t.Fatalf("versitygw: %v", sharedS3.err)
	}
	return sharedS3.srv
}

// removeStaleS3Dirs removes the directories of shared versitygw servers whose test binary is gone (named
// kmipfs-versitygw-PID-*), so that runs that nobody stopped with stopSharedS3 do not fill the disk.
func removeStaleS3Dirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "kmipfs-versitygw-*-*"))
	for _, d := range dirs {
		pidText, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), "kmipfs-versitygw-"), "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
}

// stopSharedS3 stops the binary's versitygw, if it started one, and removes its directory; TestMain calls it
// after the tests.
func stopSharedS3() {
	if srv := sharedS3.srv; srv != nil {
		_ = srv.Stop()
		_ = os.RemoveAll(filepath.Dir(srv.Root))
	}
}

// prepareStore points e.storeDir at the store the mount will use, empty.
func (e *env) prepareStore() {
	e.t.Helper()
	if testStoreKind(e.t) != "s3" {
		return
	}
	srv := s3Server(e.t)
	if err := srv.Wipe(); err != nil {
		e.t.Fatalf("wipe versitygw: %v", err)
	}
	e.storeDir = srv.Root
	registerS3Dir(e.dir, srv)
	e.t.Cleanup(func() { registerS3Dir(e.dir, nil) })
}

// openStore opens the store selected by KMIPFS_TEST_STORE, as cmd/kmipfs would.
func (e *env) openStore(logger *slog.Logger) (objstore.Store, error) {
	if testStoreKind(e.t) != "s3" {
		return local.New(e.storeDir, local.Options{Logger: logger})
	}
	return s3.Open(s3Server(e.t).Config(""), s3.Options{Logger: logger})
}

// s3ByDir is the versitygw serving the kmipfs state under a directory: the shared one for an env's dir
// (prepareStore registers it), a server of its own for any other directory given to storeTOML, so that two
// filesystems of one test do not see each other's objects, as with two local store directories.
var s3ByDir struct {
	mu   sync.Mutex
	srvs map[string]*s3test.Server
}

func registerS3Dir(dir string, srv *s3test.Server) {
	s3ByDir.mu.Lock()
	defer s3ByDir.mu.Unlock()
	if s3ByDir.srvs == nil {
		s3ByDir.srvs = map[string]*s3test.Server{}
	}
	s3ByDir.srvs[dir] = srv
}

// storeTOML is the [store] section of a kmipfs.toml for the binary, for the filesystem whose state is under dir:
// dir/objects for the local store; for KMIPFS_TEST_STORE=s3 the versitygw of the env whose dir it is, or else one
// started for dir (and stopped with t).
func storeTOML(t *testing.T, dir string) string {
	t.Helper()
	if testStoreKind(t) != "s3" {
		return fmt.Sprintf("[store]\npath = %q\n", filepath.Join(dir, "objects"))
	}
	s3ByDir.mu.Lock()
	srv := s3ByDir.srvs[dir]
	s3ByDir.mu.Unlock()
	if srv == nil {
		s3Server(t) // skips or fails as the shared server would
		srv = s3test.Start(t)
		registerS3Dir(dir, srv)
		t.Cleanup(func() { registerS3Dir(dir, nil) })
	}
	return fmt.Sprintf("[store]\nbackend = \"s3\"\nendpoint = %q\npath_style = true\ncredentials_file = %q\n",
		srv.Endpoint, srv.CredentialsFile)
}

// runFor is run with a longer bound, for copies of a gigabyte through a slow store.
func runFor(d time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// envInt reads a size from the environment, for the long run of a test.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: expected a number", name, v)
	}
	return n
}

// TestS3CopyNoPlaintext is the S3 acceptance test, with the real binary and a config file using backend "s3"
// with a bucket prefix: cp -a a tree of many files and one large file in and back out, byte for byte, and no
// object on the server holds any line of the input. KMIPFS_S3_FILES (default 300) and KMIPFS_S3_BIG_MB
// (default 64) size it; the run is 2000 and 1024. With KMIPFS_TEST_S3_ENDPOINT it runs against that
// server (the radosgw of scripts/ceph-rgw.sh) instead of versitygw, and deletes its test buckets.
func TestS3CopyNoPlaintext(t *testing.T) {
	setfattr := requireTool(t, "setfattr")
	scfg, ext := s3test.External()
	root := "" // versitygw's posix directory, to look at the objects as files too
	if !ext {
		srv := s3Server(t)
		scfg, root = srv.Config(""), srv.Root
	}
	const prefix = "kfs-"
	scfg.BucketPrefix = prefix
	api, err := s3.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	if ext {
		if err := s3test.WipeAccount(t.Context(), scfg); err != nil {
			t.Fatalf("empty the test account of %s: %v", scfg.Endpoint, err)
		}
		// t.Context() is done by the time cleanups run.
		t.Cleanup(func() { _ = s3test.WipeAccount(context.Background(), scfg) })
	}
	nFiles, bigMB := envInt(t, "KMIPFS_S3_FILES", 300), envInt(t, "KMIPFS_S3_BIG_MB", 64)
	dir := t.TempDir()
	k := startKMSServer(t, filepath.Join(dir, "kms"))
	k.createKey(t, "kmipfs-"+keyA)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "kmipfs.toml")
	writeFile(t, cfgPath, []byte(fmt.Sprintf(`[kms]
addr = %q
ca_path = %q
client_cert = %q
client_key = %q
key_template = "kmipfs-$keyid"
[store]
backend = "s3"
endpoint = %q
region = %q
path_style = true
bucket_prefix = %q
credentials_file = %q
[meta]
path = %q
`, k.addr, k.files.CA, k.files.ClientCert, k.files.ClientKey, scfg.Endpoint, scfg.Region, prefix,
		scfg.CredentialsFile, filepath.Join(dir, "meta"))))

	// The input: every line carries a marker, so that one search finds any plaintext line in any object.
	const marker = "kmipfs-plaintext-line"
	src := filepath.Join(dir, "src")
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range nFiles {
		p := filepath.Join(src, fmt.Sprintf("d%02d", i%37), fmt.Sprintf("sub%d", i%5), fmt.Sprintf("f%04d.txt", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for j := range rng.IntN(200) {
			fmt.Fprintf(&b, "%s %d.%d %x\n", marker, i, j, rng.Uint64())
		}
		writeFile(t, p, []byte(b.String()))
	}
	if err := os.Symlink("d00/sub0/f0000.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	big, err := os.Create(filepath.Join(src, "big.txt"))
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(marker + " of the big file, padded to sixty-four bytes......\n")
	chunk := bytes.Repeat(line, (1<<20)/len(line)+1)[:1<<20]
	for range bigMB {
		if _, err := big.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := big.Close(); err != nil {
		t.Fatal(err)
	}

	m := startProc(t, "mount", "--config", cfgPath, mnt)
	m.waitMounted(t, mnt)
	bucket := filepath.Join(mnt, "b")
	if err := os.Mkdir(bucket, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := run(setfattr, "-n", "user.kmipfs.key-id", "-v", keyA, bucket); err != nil {
		t.Fatalf("setfattr: %v %s", err, out)
	}
	// kmipfs bucket "b" (one character) is S3 bucket "kfs-b".
	if names, err := api.Buckets(t.Context()); err != nil || !slices.Contains(names, "b") {
		t.Fatalf("S3 bucket %sb: Buckets = %q, %v", prefix, names, err)
	}
	if out, err := runFor(30*time.Minute, "cp", "-a", src, bucket); err != nil {
		t.Fatalf("cp -a in: %v %s", err, out)
	}
	m.stop(t)

	// A fresh mount reads everything back from S3.
	m = startProc(t, "mount", "--config", cfgPath, mnt)
	m.waitMounted(t, mnt)
	back := filepath.Join(dir, "back")
	if out, err := runFor(30*time.Minute, "cp", "-a", filepath.Join(bucket, "src"), back); err != nil {
		t.Fatalf("cp -a out: %v %s", err, out)
	}
	if out, err := runFor(30*time.Minute, "diff", "-r", "--no-dereference", src, back); err != nil {
		t.Fatalf("the copy that came back differs: %v\n%s", err, out)
	}
	m.stop(t)

	plaintext := func(data []byte) bool {
		return bytes.Contains(data, []byte(marker)) || bytes.Contains(data, line[20:50])
	}
	objects, size := 0, int64(0)
	err = api.List(t.Context(), "b", "", func(info objstore.Info) error {
		data, err := api.Get(t.Context(), "b", info.Key, 0, -1)
		if err != nil {
			return err
		}
		objects++
		size += int64(len(data))
		if plaintext(data) {
			t.Errorf("object %s holds plaintext", info.Key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if objects == 0 || size < int64(bigMB)<<20 {
		t.Fatalf("the bucket holds %d objects of %d bytes in all, less than the input", objects, size)
	}
	if root != "" {
		files := 0
		err = filepath.WalkDir(filepath.Join(root, prefix+"b"), func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files++
			if plaintext(data) {
				t.Errorf("file %s of versitygw's posix directory holds plaintext", p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if files != objects {
			t.Errorf("versitygw's directory holds %d files, the S3 listing %d objects", files, objects)
		}
	}
	t.Logf("%d files and %d MiB: %d objects, %d bytes on the server", nFiles, bigMB, objects, size)
}

// s3Config writes a kmipfs.toml for the binary with the [kms] section of k and storeSection as [store].
func s3Config(t *testing.T, dir string, k *kmsServer, storeSection string) string {
	t.Helper()
	p := filepath.Join(dir, fmt.Sprintf("kmipfs-%d.toml", rand.Uint32()))
	writeFile(t, p, []byte(fmt.Sprintf("[kms]\naddr = %q\nca_path = %q\nclient_cert = %q\nclient_key = %q\n"+
		"key_template = \"kmipfs-$keyid\"\n%s[meta]\npath = %q\n", k.addr, k.files.CA, k.files.ClientCert,
		k.files.ClientKey, storeSection, filepath.Join(dir, "meta"))))
	return p
}

// TestS3MountRefusesBadConfig: a wrong [store] for S3 stops kmipfs at start with the option's name and exit
// code 2, and never echoes a secret.
func TestS3MountRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	k := startKMSServer(t, filepath.Join(dir, "kms"))
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(dir, "creds")
	writeFile(t, creds, []byte("[default]\naws_access_key_id = AKID\naws_secret_access_key = do-not-print-me\n"))
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	ok := "backend = \"s3\"\nendpoint = \"http://127.0.0.1:1\"\npath_style = true\ncredentials_file = \"" + creds + "\"\n"
	cases := []struct{ name, store, want string }{
		{"no credentials", "backend = \"s3\"\nendpoint = \"http://127.0.0.1:1\"\n", "store.credentials_file"},
		{"missing credentials file", strings.Replace(ok, creds, creds+".nope", 1), "store.credentials_file"},
		{"bad endpoint", strings.Replace(ok, "http://127.0.0.1:1", "s3.example.com", 1), "store.endpoint"},
		{"bad prefix", ok + "bucket_prefix = \"Kmipfs_\"\n", "store.bucket_prefix"},
		{"path with s3", ok + "path = \"" + filepath.Join(dir, "objects") + "\"\n", "store.path"},
		{"s3 option with local", "endpoint = \"http://127.0.0.1:1\"\n", "need backend = \"s3\""},
		{"unknown option", ok + "endpiont = \"x\"\n", "store.endpiont"},
		{"small part", ok + "part_size = 1024\n", "store.part_size"},
		{"bad timeout", ok + "timeout = \"soon\"\n", "timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := s3Config(t, dir, k, "[store]\n"+c.store)
			out, code := kRun(t, kmipfsBin, "mount", "--config", cfg, mnt)
			if code != 2 || !strings.Contains(out, c.want) {
				t.Fatalf("exit %d, want 2 and output naming %q:\n%s", code, c.want, out)
			}
			if strings.Contains(out, "do-not-print-me") {
				t.Fatalf("the output shows the secret key:\n%s", out)
			}
			if isMounted(mnt) {
				t.Fatal("mounted despite the error")
			}
		})
	}
}

// TestS3Outage: while the S3 server is down, close of a written file fails with EIO within seconds (never
// hangs), the data stays readable from kmipfs's buffer, and once the server is back it reaches the store and
// survives a remount.
func TestS3Outage(t *testing.T) {
	setfattr := requireTool(t, "setfattr")
	s3Server(t) // skip or fail as for the shared server
	srv := s3test.Start(t)
	dir := t.TempDir()
	k := startKMSServer(t, filepath.Join(dir, "kms"))
	k.createKey(t, "kmipfs-"+keyA)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := s3Config(t, dir, k, fmt.Sprintf("[store]\nbackend = \"s3\"\nendpoint = %q\npath_style = true\n"+
		"credentials_file = %q\nretries = 2\ntimeout = \"2s\"\n", srv.Endpoint, srv.CredentialsFile))
	m := startProc(t, "mount", "--config", cfg, mnt)
	m.waitMounted(t, mnt)
	bucket := filepath.Join(mnt, "outage")
	if err := os.Mkdir(bucket, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := run(setfattr, "-n", "user.kmipfs.key-id", "-v", keyA, bucket); err != nil {
		t.Fatalf("setfattr: %v %s", err, out)
	}
	before := randBytes(t, 3*4096+5)
	writeFile(t, filepath.Join(bucket, "before"), before)

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	during := randBytes(t, 5*4096+7)
	start := time.Now()
	f, err := os.Create(filepath.Join(bucket, "during"))
	if err != nil {
		t.Fatalf("create while S3 is down: %v", err)
	}
	if _, err := f.Write(during); err != nil {
		t.Fatalf("write while S3 is down: %v", err)
	}
	err = f.Close()
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("close while S3 is down: %v, want EIO", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("close while S3 is down took %v", d)
	}
	if got, err := os.ReadFile(filepath.Join(bucket, "during")); err != nil || !bytes.Equal(got, during) {
		t.Fatalf("the data whose store failed is not readable from the buffer: %d bytes, %v", len(got), err)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(bucket, "before")); err != nil || !bytes.Equal(got, before) {
		t.Fatalf("file written before the outage: %d bytes, %v", len(got), err)
	}
	m.stop(t) // flushes what is still buffered
	m = startProc(t, "mount", "--config", cfg, mnt)
	m.waitMounted(t, mnt)
	if got, err := os.ReadFile(filepath.Join(bucket, "during")); err != nil || !bytes.Equal(got, during) {
		t.Fatalf("after the outage and a remount, the file written during it: %d bytes, %v\n%s", len(got), err, m.out)
	}
	m.stop(t)
}
