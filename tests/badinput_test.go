package tests

// Bad input that the other tests do not cover (TestXattrs covers empty and over-64 KiB values,
// TestNames names of 255 and 256 bytes, TestMountRefusesBadConfig unknown options, wrong types and
// a bad backend): xattr values with bytes that are easy to mishandle, key ids that are refused or
// that the template turns into odd KMIP names, invalid config values, a metadata database of a
// newer format, and a store folder that is not kmipfs's. Each gets a clear error and changes
// nothing.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/meta"
)

// TestXattrOddValues: values that are not UTF-8, or hold '$', '/', NUL or newlines, are stored
// byte for byte, on files and directories, and survive a remount.
func TestXattrOddValues(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("oddxattr", keyA)
	f := filepath.Join(b, "f")
	writeFile(t, f, []byte("x"))
	d := filepath.Join(b, "d")
	must(t, os.Mkdir(d, 0o755))
	values := map[string][]byte{
		"user.not-utf8":  {0xff, 0xfe, 0xc3, 0x28, 0x80},
		"user.dollar":    []byte("$keyid $HOME ${x}"),
		"user.slash":     []byte("/etc/passwd/../x/"),
		"user.nul":       []byte("a\x00b\x00"),
		"user.only-nul":  {0},
		"user.newlines":  []byte("line1\nline2\r\n"),
		"user.binary-4k": randBytes(t, 4096),
	}
	check := func(when string) {
		t.Helper()
		for _, p := range []string{f, d} {
			for name, want := range values {
				buf := make([]byte, 8192)
				n, err := syscall.Getxattr(p, name, buf)
				if err != nil || !bytes.Equal(buf[:n], want) {
					t.Errorf("%s: %s on %s: %q %v, want %q", when, name, filepath.Base(p), buf[:max(n, 0)], err, want)
				}
			}
		}
	}
	for _, p := range []string{f, d} {
		for name, v := range values {
			must(t, syscall.Setxattr(p, name, v, 0))
		}
	}
	check("after setxattr")
	e.remount()
	check("after a remount")
	if got := readFile(t, f); string(got) != "x" {
		t.Fatalf("file content changed: %q", got)
	}
}

// TestKeyIDOddValues: key ids kmipfs refuses (EINVAL, with a warning naming the rule, and nothing
// changes), and odd ones it accepts, whose KMIP name is the template with every $keyid replaced
// once, not recursively.
func TestKeyIDOddValues(t *testing.T) {
	e := newEnv(t, withTemplate("t/$keyid/$keyid"))
	e.logs.expect(`key id refused`)
	e.logs.expect(`key not found in KMIP`)
	b := e.bucket("oddkeys", keyA)
	f := filepath.Join(b, "f")
	data := randBytes(t, 10000)
	writeFile(t, f, data)
	refused := map[string][]byte{
		"empty":          {},
		"NUL":            []byte("a\x00b"),
		"slash":          []byte("a/b"),
		"newline":        []byte("a\nb"),
		"carriage":       []byte("a\rb"),
		"not UTF-8":      {0xff, 0xfe},
		"201 bytes long": []byte(strings.Repeat("k", 201)),
	}
	for what, v := range refused {
		for _, p := range []string{b, f} {
			expectErrno(t, syscall.Setxattr(p, "user.kmipfs.key-id", v, 0), syscall.EINVAL, "key id "+what+" on "+filepath.Base(p))
			if got, err := getxattr(p, "user.kmipfs.key-id"); err != nil || got != keyA {
				t.Fatalf("key id %s: the key id became %q (%v)", what, got, err)
			}
		}
	}
	if n := len(e.logs.find(`key id refused`)); n < len(refused) {
		t.Errorf("%d warnings for %d refused key ids", n, 2*len(refused))
	}
	// Accepted: the template replaces each $keyid once, and a '$keyid' inside a key id stays.
	odd := []string{"$keyid", "a$b", "with space", "ключ-✓", "k'\"`;|&", strings.Repeat("m", 200), "..", "-"}
	for _, id := range odd {
		name := kms.KeyName("t/$keyid/$keyid", id)
		if want := "t/" + id + "/" + id; name != want {
			t.Fatalf("KeyName of %q: %q, want %q", id, name, want)
		}
		// Unknown to KMIP first: ENOKEY, nothing changes.
		expectErrno(t, setxattr(f, "user.kmipfs.key-id", id), syscall.ENOKEY, "unknown odd key id "+id)
		if got, _ := getxattr(f, "user.kmipfs.key-id"); got != keyA {
			t.Fatalf("key id changed by a failed setxattr: %q", got)
		}
		e.kms.createKey(t, name)
		// Wait out the negative cache (the harness's negative_ttl is 1s).
		waitFor(t, "odd key id "+id+" accepted", func() bool { return setxattr(b, "user.kmipfs.key-id", id) == nil })
		if got, err := getxattr(b, "user.kmipfs.key-name"); err != nil || got != name {
			t.Fatalf("key name of %q: %q %v, want %q", id, got, err, name)
		}
		g := filepath.Join(b, "g")
		writeFile(t, g, data)
		if got, _ := getxattr(g, "user.kmipfs.key-id"); got != id {
			t.Fatalf("new file's key id: %q, want %q", got, id)
		}
		if got := readFile(t, g); !bytes.Equal(got, data) {
			t.Fatalf("file under key id %q reads back wrong", id)
		}
		must(t, os.Remove(g))
	}
	e.remount()
	if got := readFile(t, f); !bytes.Equal(got, data) {
		t.Fatal("the file changed")
	}
}

// badinputBinary prepares a config for the real binary: a KMIP server with keyA, store and
// metadata under dir, and a mount point.
func badinputBinary(t *testing.T) (dir, cfg, mnt string) {
	t.Helper()
	dir = t.TempDir()
	k := startKMSServer(t, filepath.Join(dir, "kms"))
	k.createKey(t, kms.KeyName("kmipfs-$keyid", keyA))
	cfg = kConfig(t, dir, k.clientConfig(""), "kmipfs-$keyid", "")
	mnt = filepath.Join(dir, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	return dir, cfg, mnt
}

// refusedMount runs `kmipfs mount` and expects it to exit with code, naming every string of want
// in its output, without mounting. A mount that comes up anyway is unmounted and fails the test.
func refusedMount(t *testing.T, cfg, mnt string, code int, want ...string) string {
	t.Helper()
	p := startProc(t, "mount", "--config", cfg, mnt)
	deadline := time.After(30 * time.Second)
	for {
		select {
		case <-p.done:
		case <-deadline:
			t.Fatalf("kmipfs neither exited nor mounted in 30s; output:\n%s", p.out)
		case <-time.After(20 * time.Millisecond):
			if !isMounted(mnt) {
				continue
			}
			_ = p.cmd.Process.Signal(syscall.SIGINT)
			<-p.done
			if isMounted(mnt) {
				_ = exec.Command("fusermount3", "-u", "-z", mnt).Run()
			}
			t.Fatalf("mounted instead of refusing (want exit %d naming %q); output:\n%s", code, want, p.out)
		}
		break
	}
	out := p.out.String()
	got := 0
	if ee, ok := p.err.(*exec.ExitError); ok {
		got = ee.ExitCode()
	} else if p.err != nil {
		t.Fatalf("kmipfs: %v\n%s", p.err, out)
	}
	if got != code {
		t.Fatalf("exit code %d, want %d; output:\n%s", got, code, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("output does not name %q:\n%s", w, out)
		}
	}
	return out
}

// TestMountRefusesNewerMeta: a metadata database written by a newer kmipfs (a higher schema
// format version) is refused by mount and by fsck with a message that says so, and is not changed.
func TestMountRefusesNewerMeta(t *testing.T) {
	dir, cfg, mnt := badinputBinary(t)
	metaDir := filepath.Join(dir, "meta")
	db, err := meta.Open(metaDir, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	must(t, db.Close())
	// Bump the format record, as a newer kmipfs would have written it: magic, then the version.
	bdb, err := badger.Open(badger.DefaultOptions(metaDir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	var newer []byte
	err = bdb.Update(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte{'V'})
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		i := bytes.IndexFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e })
		if i < 0 {
			t.Fatalf("format record %q has no version", v)
		}
		ver, n := binary.Uvarint(v[i:])
		if n <= 0 || i+n != len(v) {
			t.Fatalf("format record %q: cannot read the version", v)
		}
		newer = binary.AppendUvarint(bytes.Clone(v[:i]), ver+1)
		return txn.Set([]byte{'V'}, newer)
	})
	must(t, err)
	must(t, bdb.Close())
	snap := badgerDump(t, metaDir)

	refusedMount(t, cfg, mnt, 4, "format version", metaDir)
	out, code := kRun(t, kmipfsBin, "fsck", "--config", cfg)
	if code != 2 || !strings.Contains(out, "format version") {
		t.Fatalf("fsck of a newer database: exit %d, want 2 and a message naming the format version:\n%s", code, out)
	}
	if got := badgerDump(t, metaDir); !equalSnapshots(got, snap) {
		t.Fatalf("the refused database was changed: %d records, was %d", len(got), len(snap))
	}
}

// TestMountRefusesForeignStore: store.path names a folder with someone else's files (it is not
// empty and was never a kmipfs store). Mounting it must not present its subdirectories as
// buckets, and must not change it.
// (objstore/local marks the stores it makes with a .kmipfs-store file.)
func TestMountRefusesForeignStore(t *testing.T) {
	if k := testStoreKind(t); k != "local" {
		// An S3 account has no root folder to claim: buckets kmipfs did not make are kept apart by
		// store.bucket_prefix and never listed (objstore/s3 TestBucketPrefix, docs/S3.md).
		t.Skipf("checks the local store's claim on a foreign folder (store.path); KMIPFS_TEST_STORE=%s has none", k)
	}
	dir, cfg, mnt := badinputBinary(t)
	foreign := filepath.Join(dir, "home")
	must(t, os.MkdirAll(filepath.Join(foreign, "photos"), 0o755))
	writeFile(t, filepath.Join(foreign, "photos", "cat.jpg"), []byte("not an object"))
	writeFile(t, filepath.Join(foreign, "notes.txt"), []byte("my notes"))
	snap := dirSnapshot(t, foreign)
	text := strings.Replace(string(readFile(t, cfg)), filepath.Join(dir, "objects"), foreign, 1)
	cfg = filepath.Join(dir, "foreign.toml")
	writeFile(t, cfg, []byte(text))
	refusedMount(t, cfg, mnt, 4, foreign)
	if got := dirSnapshot(t, foreign); !equalSnapshots(got, snap) {
		t.Fatalf("the foreign folder was changed: %v, was %v", got, snap)
	}
}

// TestMountRefusesBadValues: option values of the right type that make no sense are refused at
// start with the option's name (exit 2), and nothing is created (no store or meta directory).
func TestMountRefusesBadValues(t *testing.T) {
	dir, cfg, mnt := badinputBinary(t)
	good := string(readFile(t, cfg))
	kmsEnd := strings.Index(good, "[store]")
	withKMS := func(line string) string { return good[:kmsEnd] + line + "\n" + good[kmsEnd:] }
	cases := []struct{ name, config, want string }{
		{"negative timeout", withKMS(`timeout = "-1s"`), "timeout"},
		{"duration without unit", withKMS(`cache_ttl = "10"`), "cache_ttl"},
		{"empty address", strings.Replace(good, "addr = ", "addr = \"\"\n#", 1), "addr"},
		{"log level", good + "[log]\nlevel = \"loud\"\n", "log.level"},
		{"log format", good + "[log]\nformat = \"xml\"\n", "log.format"},
		{"negative dirty bound", good + "[fs]\nmax_dirty_mib = -5\n", "max_dirty_mib"},
		{"default key id with a slash", good + "[fs]\ndefault_key_id = \"a/b\"\n", "default_key_id"},
	}
	// The [store] cases of the store under test; TestS3MountRefusesBadConfig has more of S3's.
	if testStoreKind(t) == "s3" {
		creds := regexp.MustCompile(`credentials_file = ".*"`).FindString(good)
		cases = append(cases, []struct{ name, config, want string }{
			{"credentials file is a directory", strings.Replace(good, creds, fmt.Sprintf("credentials_file = %q", dir), 1),
				"store.credentials_file"},
			{"local option on s3", strings.Replace(good, "[store]\n", fmt.Sprintf("[store]\npath = %q\n", filepath.Join(dir, "objects")), 1),
				"store.path"},
		}...)
	} else {
		cases = append(cases, []struct{ name, config, want string }{
			{"store path is a file", strings.Replace(good, filepath.Join(dir, "objects"), cfg, 1), "store.path"},
			{"s3 option on local", strings.Replace(good, "[store]\n", "[store]\nregion = \"us-east-1\"\n", 1), "store"},
		}...)
	}
	for _, c := range cases {
		if !strings.Contains(good, "[store]\n") || c.config == good {
			t.Fatalf("case %q does not change the config:\n%s", c.name, good)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sub := t.TempDir()
			p := filepath.Join(sub, "kmipfs.toml")
			cfgText := strings.ReplaceAll(c.config, filepath.Join(dir, "meta"), filepath.Join(sub, "meta"))
			writeFile(t, p, []byte(cfgText))
			refusedMount(t, p, mnt, 2, c.want)
			if _, err := os.Stat(filepath.Join(sub, "meta")); err == nil {
				t.Error("a refused config created the metadata directory")
			}
		})
	}
}

// dirSnapshot lists every path below dir with its size and mode, and the content of small files.
func dirSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		v := info.Mode().String()
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(b)
		}
		snap[strings.TrimPrefix(p, dir)] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func equalSnapshots(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// badgerDump returns every key and value of the Badger database in dir.
func badgerDump(t *testing.T, dir string) map[string]string {
	t.Helper()
	bdb, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	dump := map[string]string{}
	err = bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			dump[string(it.Item().KeyCopy(nil))] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dump
}
