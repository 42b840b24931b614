package tests

// Permissions and secrets: only the owner of a file or directory, or root, may change its key id;
// without allow_other no other user reaches the mount; and the logs of a mounted workload that
// goes through the error paths (unknown and refused key ids, a re-key, a store outage, a tampered
// block) never contain a KMIP secret, a data key, a wrapped key or file plaintext.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kmipfs/kmipfs/crypt"
	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/meta"
	"github.com/kmipfs/kmipfs/objstore/faulty"
)

// TestKeyIDOwnerOrRoot: a user may set the key id of their own files and directories; root may
// set it on anybody's; the key id of someone else's file stays as it was after the refusal.
// (TestPermissions checks the refusal itself.)
func TestKeyIDOwnerOrRoot(t *testing.T) {
	e := newEnv(t, withAllowOther())
	makeReachable(t, e.mnt)
	bin := publicHelper(t)
	b := e.bucket("owner", keyA)
	must(t, os.Chmod(b, 0o777))
	rootFile := filepath.Join(b, "roots")
	writeFile(t, rootFile, []byte("root's"))
	must(t, os.Chmod(rootFile, 0o666))
	mine, mydir := filepath.Join(b, "mine"), filepath.Join(b, "mydir")
	got := asUser(t, bin, nobody, nobody,
		op("create", mine),
		op("write", mine, "nobody's data"),
		op("mkdir", mydir),
		op("setxattr", mine, "user.kmipfs.key-id", keyB),
		op("setxattr", mydir, "user.kmipfs.key-id", keyB),
		op("setxattr", rootFile, "user.kmipfs.key-id", keyB),
	)
	want := []syscall.Errno{0, 0, 0, 0, 0, syscall.EPERM}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("as nobody, op %d: %v, want %v", i, got[i], want[i])
		}
	}
	for _, p := range []string{mine, mydir} {
		if v, _ := getxattr(p, "user.kmipfs.key-id"); v != keyB {
			t.Errorf("%s: key id %q, want %q set by its owner", filepath.Base(p), v, keyB)
		}
	}
	if v, _ := getxattr(rootFile, "user.kmipfs.key-id"); v != keyA {
		t.Errorf("root's file: key id %q after a refused change, want %q", v, keyA)
	}
	// Root may re-key nobody's file, which stays readable.
	must(t, setxattr(mine, "user.kmipfs.key-id", keyA))
	if v, _ := getxattr(mine, "user.kmipfs.key-id"); v != keyA {
		t.Errorf("nobody's file re-keyed by root: %q", v)
	}
	e.remount()
	if got := readFile(t, mine); string(got) != "nobody's data" {
		t.Fatalf("re-keyed file reads %q", got)
	}
}

// TestAllowOtherOff: without fs.allow_other (the default), another user cannot even stat the
// mount point.
func TestAllowOtherOff(t *testing.T) {
	e := newEnv(t)
	makeReachable(t, e.mnt)
	bin := publicHelper(t)
	b := e.bucket("private", keyA)
	writeFile(t, filepath.Join(b, "f"), []byte("x"))
	must(t, os.Chmod(filepath.Join(b, "f"), 0o666))
	got := asUser(t, bin, nobody, nobody, op("stat", e.mnt), op("read", filepath.Join(b, "f")), op("readdir", e.mnt))
	for i, g := range got {
		if g != syscall.EACCES {
			t.Errorf("as nobody without allow_other, op %d: %v, want EACCES", i, g)
		}
	}
}

// secretForms returns the ways a secret could appear in a log line: raw, hex, base64, and Go's
// %v of a byte slice.
func secretForms(b []byte) []string {
	forms := []string{
		string(b),
		hex.EncodeToString(b),
		strings.ToUpper(hex.EncodeToString(b)),
		base64.StdEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b),
		strings.Trim(fmt.Sprint(b), "[]"),
	}
	// A prefix is enough to leak: look for the first 12 bytes' encodings too.
	if len(b) > 12 {
		p := b[:12]
		forms = append(forms, hex.EncodeToString(p), base64.StdEncoding.EncodeToString(p)[:16], strings.Trim(fmt.Sprint(p), "[]"))
	}
	return forms
}

// allLogs returns every recorded line of the mount, at every level.
func allLogs(l *logRecorder) []string {
	root := l.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	return append([]string(nil), root.records...)
}

// TestNoSecretsInLogs runs a workload through the error paths with known secrets and plaintext
// and searches every log line of the mount (all levels) and of the real binary for them.
func TestNoSecretsInLogs(t *testing.T) {
	requireLocalStore(t)
	var fs *faulty.Store
	e := newEnv(t, withFaulty(&fs))
	expectStoreErrors(e)
	e.logs.expect(`authentication failed`)
	e.logs.expect(`key not found in KMIP`)
	e.logs.expect(`key id refused`)
	b := e.bucket("secrets", keyA)
	sub := filepath.Join(b, "sub")
	must(t, os.Mkdir(sub, 0o755))
	must(t, setxattr(sub, "user.kmipfs.key-id", keyB))

	phrase := "plaintext-canary-" + hex.EncodeToString(randBytes(t, 8))
	text := []byte(strings.Repeat(phrase+"\n", 2000))
	files := []string{filepath.Join(b, "text"), filepath.Join(sub, "text"), filepath.Join(b, "rekeyed")}
	for _, p := range files {
		writeFile(t, p, text)
	}
	_ = setxattr(b, "user.kmipfs.key-id", "no-such-key")            // ENOKEY
	_ = syscall.Setxattr(b, "user.kmipfs.key-id", []byte("a/b"), 0) // EINVAL
	must(t, setxattr(files[2], "user.kmipfs.key-id", keyB))         // re-key
	must(t, setxattr(files[0], "user.comment", phrase))             // an xattr value is not logged either

	// A store outage while the text is written and fsync'd.
	f, err := os.Create(filepath.Join(b, "outage"))
	must(t, err)
	_, err = f.Write(text)
	must(t, err)
	fs.Set(faulty.Rule{Ops: faulty.OpPut, FailRate: 1})
	expectErrno(t, f.Sync(), syscall.EIO, "fsync during the outage")
	fs.Clear()
	must(t, f.Sync())
	must(t, f.Close())
	files = append(files, filepath.Join(b, "outage"))

	// The data keys, from the wrapped keys in meta and the secrets from KMIP.
	ctx := context.Background()
	keks := map[string][]byte{}
	for _, id := range []string{keyA, keyB} {
		name := kms.KeyName(e.template, id)
		kek, err := e.cache.Secret(ctx, name)
		must(t, err)
		keks[name] = bytes.Clone(kek)
	}
	secrets := map[string][]byte{}
	for name, kek := range keks {
		secrets["KMIP secret "+name] = kek
	}
	for _, p := range files {
		var st syscall.Stat_t
		must(t, syscall.Stat(p, &st))
		in, err := e.db.Get(ctx, meta.Ino(st.Ino))
		must(t, err)
		dek, err := crypt.UnwrapKey(keks[in.KeyName], in.WrappedKey, crypt.FileID(in.FileID), in.KeyName)
		must(t, err)
		secrets["data key of "+p] = dek
		secrets["wrapped key of "+p] = bytes.Clone(in.WrappedKey)
	}

	// A tampered block: its read fails and is logged.
	e.unmount()
	objs := e.storeFiles()
	if len(objs) == 0 {
		t.Fatal("no objects")
	}
	obj := readFile(t, objs[0])
	obj[100] ^= 1
	writeFile(t, objs[0], obj)
	e.mount()
	for _, p := range files {
		_, _ = os.ReadFile(p)
	}
	lines := allLogs(e.logs)
	if len(e.logs.find(`authentication failed`)) == 0 || len(e.logs.find(`I/O error`)) == 0 {
		t.Fatalf("the workload did not reach the error paths; log:\n%s", strings.Join(lines, "\n"))
	}
	searchSecrets(t, "the mount's log", strings.Join(lines, "\n"), secrets, phrase)
	t.Logf("searched %d log lines of the mount for %d secrets and the plaintext", len(lines), len(secrets))

	// The real binary at debug level, with the same KMIP server and secrets.
	dir := t.TempDir()
	cfg := kConfig(t, dir, e.kms.clientConfig(""), e.template, "[log]\nlevel = \"debug\"\n")
	mnt := filepath.Join(dir, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	p := startProc(t, "mount", "--config", cfg, mnt)
	p.waitMounted(t, mnt)
	bb := filepath.Join(mnt, "bin")
	must(t, os.Mkdir(bb, 0o755))
	must(t, setxattr(bb, "user.kmipfs.key-id", keyA))
	_ = setxattr(bb, "user.kmipfs.key-id", "no-such-key")
	writeFile(t, filepath.Join(bb, "text"), text)
	must(t, setxattr(filepath.Join(bb, "text"), "user.kmipfs.key-id", keyB))
	if got := readFile(t, filepath.Join(bb, "text")); !bytes.Equal(got, text) {
		t.Fatal("the binary's mount reads back wrong")
	}
	p.stop(t)
	out := p.out.String()
	if !strings.Contains(out, "level=DEBUG") && !strings.Contains(out, `"level":"DEBUG"`) {
		t.Logf("note: the binary logged no debug lines")
	}
	kekOnly := map[string][]byte{}
	for name, kek := range keks {
		kekOnly["KMIP secret "+name] = kek
	}
	searchSecrets(t, "the binary's output", out, kekOnly, phrase)
}

func searchSecrets(t *testing.T, where, log string, secrets map[string][]byte, phrase string) {
	t.Helper()
	for what, s := range secrets {
		for _, form := range secretForms(s) {
			if len(form) >= 8 && strings.Contains(log, form) {
				t.Errorf("%s contains the %s (as %q)", where, what, form)
			}
		}
	}
	if strings.Contains(log, phrase) || strings.Contains(log, phrase[:20]) {
		t.Errorf("%s contains file plaintext", where)
	}
}
