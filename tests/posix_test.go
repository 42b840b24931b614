package tests

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func setxattr(path, name, value string) error {
	return syscall.Setxattr(path, name, []byte(value), 0)
}

func getxattr(path, name string) (string, error) {
	buf := make([]byte, 64<<10)
	n, err := syscall.Getxattr(path, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readString is readFile for text: logs and command output.
func readString(t *testing.T, path string) string {
	t.Helper()
	return string(readFile(t, path))
}

func expectErrno(t *testing.T, err error, want syscall.Errno, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
}

// TestWriteReadPersist writes files of awkward sizes, reads them back, remounts and reads again.
func TestWriteReadPersist(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("data", keyA)
	sizes := []int{0, 1, 4095, 4096, 4097, 3*4096 + 17, 1 << 20, 5<<20 + 3}
	want := map[string][]byte{}
	for _, n := range sizes {
		p := filepath.Join(b, "f"+strconv.Itoa(n))
		want[p] = randBytes(t, n)
		writeFile(t, p, want[p])
	}
	check := func(stage string) {
		for p, w := range want {
			got := readFile(t, p)
			if !bytes.Equal(got, w) {
				t.Fatalf("%s: %s: content differs (got %d bytes, want %d)", stage, p, len(got), len(w))
			}
			st, err := os.Stat(p)
			if err != nil || st.Size() != int64(len(w)) {
				t.Fatalf("%s: stat %s: %v size %d", stage, p, err, st.Size())
			}
		}
	}
	check("before remount")
	e.remount()
	check("after remount")
}

// TestRandomWritesAndTruncate overwrites parts of blocks, extends with holes and truncates, checking
// against the same operations on a byte slice.
func TestRandomWritesAndTruncate(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("rwt", keyA)
	p := filepath.Join(b, "file")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var ref []byte
	pwrite := func(off int, data []byte) {
		t.Helper()
		if _, err := f.WriteAt(data, int64(off)); err != nil {
			t.Fatal(err)
		}
		if end := off + len(data); end > len(ref) {
			ref = append(ref, make([]byte, end-len(ref))...)
		}
		copy(ref[off:], data)
	}
	truncate := func(n int) {
		t.Helper()
		if err := f.Truncate(int64(n)); err != nil {
			t.Fatal(err)
		}
		if n < len(ref) {
			ref = ref[:n]
		} else {
			ref = append(ref, make([]byte, n-len(ref))...)
		}
	}
	verify := func(stage string) {
		t.Helper()
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, ref) {
			t.Fatalf("%s: content differs (got %d bytes, want %d)", stage, len(got), len(ref))
		}
	}
	pwrite(0, randBytes(t, 10000))
	pwrite(100, []byte("hello"))          // inside block 0
	pwrite(4090, randBytes(t, 12))        // across the block 0/1 boundary
	pwrite(50000, []byte("after a hole")) // leaves a hole
	verify("writes")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	truncate(6000) // cuts block 1
	verify("truncate down")
	truncate(20000) // bytes past 6000 must read as zeros
	verify("truncate up")
	pwrite(19990, randBytes(t, 30))
	truncate(4096) // exactly on a block boundary
	truncate(9000)
	verify("truncate on boundary then up")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	e.remount()
	verify("after remount")
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	ref = nil
	verify("truncate to zero")
}

func TestNamespace(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("nsp", keyA)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(b, "a", "b", "c"), 0o755))
	writeFile(t, filepath.Join(b, "a", "b", "c", "f"), []byte("deep"))
	must(os.Rename(filepath.Join(b, "a", "b"), filepath.Join(b, "moved")))
	if got := readFile(t, filepath.Join(b, "moved", "c", "f")); string(got) != "deep" {
		t.Fatalf("after directory rename: %q", got)
	}
	// Rename over an existing file replaces it atomically (the editor save pattern).
	writeFile(t, filepath.Join(b, "doc"), []byte("old"))
	writeFile(t, filepath.Join(b, "doc.tmp"), []byte("new"))
	must(os.Rename(filepath.Join(b, "doc.tmp"), filepath.Join(b, "doc")))
	if got := readFile(t, filepath.Join(b, "doc")); string(got) != "new" {
		t.Fatalf("rename over: %q", got)
	}
	ents, err := os.ReadDir(b)
	must(err)
	var names []string
	for _, de := range ents {
		names = append(names, de.Name())
	}
	sort.Strings(names)
	if got := names; len(got) != 3 || got[0] != "a" || got[1] != "doc" || got[2] != "moved" {
		t.Fatalf("readdir: %v", got)
	}
	expectErrno(t, os.Remove(filepath.Join(b, "moved")), syscall.ENOTEMPTY, "rmdir non-empty")
	must(os.Remove(filepath.Join(b, "moved", "c", "f")))
	must(os.Remove(filepath.Join(b, "moved", "c")))
	must(os.Remove(filepath.Join(b, "moved")))
	_, err = os.Stat(filepath.Join(b, "moved"))
	expectErrno(t, err, syscall.ENOENT, "stat removed dir")

	// A file unlinked while open stays readable until closed, and its objects go after that.
	p := filepath.Join(b, "open-unlinked")
	data := randBytes(t, 100000)
	writeFile(t, p, data)
	f, err := os.Open(p)
	must(err)
	must(os.Remove(p))
	got, err := io.ReadAll(f)
	must(err)
	if !bytes.Equal(got, data) {
		t.Fatal("open unlinked file: content differs")
	}
	must(f.Close())

	// Symlinks and hard links.
	must(os.Symlink("doc", filepath.Join(b, "link")))
	if target, err := os.Readlink(filepath.Join(b, "link")); err != nil || target != "doc" {
		t.Fatalf("readlink: %q %v", target, err)
	}
	must(os.Link(filepath.Join(b, "doc"), filepath.Join(b, "a", "hard")))
	st, err := os.Stat(filepath.Join(b, "doc"))
	must(err)
	if n := st.Sys().(*syscall.Stat_t).Nlink; n != 2 {
		t.Fatalf("nlink after link: %d", n)
	}
	if got := readFile(t, filepath.Join(b, "a", "hard")); string(got) != "new" {
		t.Fatalf("hard link content: %q", got)
	}

	e.remount()
	if got := readFile(t, filepath.Join(b, "a", "hard")); string(got) != "new" {
		t.Fatalf("hard link after remount: %q", got)
	}
}

func TestBuckets(t *testing.T) {
	e := newEnv(t)
	e.logs.expect(`bucket name refused`)
	// A regular file at the root is refused.
	err := os.WriteFile(e.path("file-at-root"), []byte("x"), 0o644)
	expectErrno(t, err, syscall.EPERM, "create at root")
	// Names S3 would refuse are EINVAL.
	for _, name := range []string{"UPPER", "under_score", "-dash", "1.2.3.4", "a..b", strings.Repeat("x", 64)} {
		expectErrno(t, os.Mkdir(e.path(name), 0o755), syscall.EINVAL, "mkdir "+name)
	}
	b1 := e.bucket("bucket-one", keyA)
	e.bucket("bucket-two", keyA)
	if _, err := os.Stat(filepath.Join(e.storeDir, "bucket-one")); err != nil {
		t.Fatalf("bucket not created in the store: %v", err)
	}
	writeFile(t, filepath.Join(b1, "f"), []byte("data"))
	// Rename and link across buckets are EXDEV.
	expectErrno(t, os.Rename(filepath.Join(b1, "f"), e.path("bucket-two", "f")), syscall.EXDEV, "rename across buckets")
	expectErrno(t, os.Link(filepath.Join(b1, "f"), e.path("bucket-two", "f")), syscall.EXDEV, "link across buckets")
	expectErrno(t, os.Remove(b1), syscall.ENOTEMPTY, "rmdir non-empty bucket")
	if err := os.Remove(filepath.Join(b1, "f")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(b1); err != nil {
		t.Fatal(err)
	}
	// The store bucket goes once the kernel has released the last file of it (release is
	// asynchronous to close).
	waitFor(t, "bucket removed from the store", func() bool {
		_, err := os.Stat(filepath.Join(e.storeDir, "bucket-one"))
		return errors.Is(err, os.ErrNotExist)
	}, func() string { out, _ := run("ls", "-laR", filepath.Join(e.storeDir, "bucket-one")); return out })
	ents, err := os.ReadDir(e.mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "bucket-two" {
		t.Fatalf("root lists %v", ents)
	}
}

func TestKeyIDs(t *testing.T) {
	e := newEnv(t)
	e.logs.expect(`no key id for a new file`)
	e.logs.expect(`key not found in KMIP`)
	b := e.bucket("keys", keyA)
	if got, err := getxattr(b, "user.kmipfs.key-id"); err != nil || got != keyA {
		t.Fatalf("bucket key id: %q %v", got, err)
	}
	if got, err := getxattr(b, "user.kmipfs.key-name"); err != nil || got != "kmipfs-"+keyA {
		t.Fatalf("bucket key name: %q %v", got, err)
	}
	// Inheritance: the nearest ancestor wins.
	sub := filepath.Join(b, "sub", "deeper")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(sub, "inherits"), []byte("a"))
	if got, _ := getxattr(filepath.Join(sub, "inherits"), "user.kmipfs.key-id"); got != keyA {
		t.Fatalf("inherited key id: %q", got)
	}
	if err := setxattr(filepath.Join(b, "sub"), "user.kmipfs.key-id", keyB); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(sub, "nearer"), []byte("b"))
	if got, _ := getxattr(filepath.Join(sub, "nearer"), "user.kmipfs.key-id"); got != keyB {
		t.Fatalf("nearest ancestor key id: %q", got)
	}
	if got, _ := getxattr(filepath.Join(sub, "nearer"), "user.kmipfs.key-name"); got != "kmipfs-"+keyB {
		t.Fatalf("key name: %q", got)
	}
	if got, _ := getxattr(filepath.Join(sub, "nearer"), "user.kmipfs.cipher"); got == "" {
		t.Fatal("no cipher xattr")
	}

	// A key id KMIP does not have: ENOKEY, nothing changes.
	expectErrno(t, setxattr(b, "user.kmipfs.key-id", "no-such-key"), syscall.ENOKEY, "setfattr unknown key")
	if got, _ := getxattr(b, "user.kmipfs.key-id"); got != keyA {
		t.Fatalf("key id changed by a failed setxattr: %q", got)
	}
	// A bucket without any key id: creating a file is ENOKEY.
	bare := e.bucket("bare", "")
	err := os.WriteFile(filepath.Join(bare, "f"), []byte("x"), 0o644)
	expectErrno(t, err, syscall.ENOKEY, "create with no key id")
	if _, err := os.Stat(filepath.Join(bare, "f")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file exists after ENOKEY: %v", err)
	}

	// Re-keying a file re-wraps its data key; the data stays readable, also after a remount.
	p := filepath.Join(b, "rekeyed")
	data := randBytes(t, 10000)
	writeFile(t, p, data)
	objectsBefore := len(e.storeFiles())
	if err := setxattr(p, "user.kmipfs.key-id", keyB); err != nil {
		t.Fatal(err)
	}
	if len(e.storeFiles()) != objectsBefore {
		t.Fatal("re-keying rewrote objects")
	}
	expectErrno(t, syscall.Removexattr(p, "user.kmipfs.key-id"), syscall.EPERM, "remove key id of a file")
	expectErrno(t, setxattr(p, "user.kmipfs.key-name", "x"), syscall.EPERM, "set key name")
	e.remount()
	if got := readFile(t, p); !bytes.Equal(got, data) {
		t.Fatal("re-keyed file content differs")
	}
	if got, _ := getxattr(p, "user.kmipfs.key-id"); got != keyB {
		t.Fatalf("re-keyed file key id: %q", got)
	}

	// Other user.* xattrs are stored as given.
	if err := setxattr(p, "user.comment", "hello xattr"); err != nil {
		t.Fatal(err)
	}
	if got, _ := getxattr(p, "user.comment"); got != "hello xattr" {
		t.Fatalf("user xattr: %q", got)
	}
	_, err = getxattr(p, "user.missing")
	expectErrno(t, err, syscall.ENODATA, "missing xattr")
}

func TestDefaultKeyID(t *testing.T) {
	e := newEnv(t, withDefaultKeyID(keyB))
	b := e.bucket("defaulted", "")
	writeFile(t, filepath.Join(b, "f"), []byte("x"))
	if got, _ := getxattr(filepath.Join(b, "f"), "user.kmipfs.key-id"); got != keyB {
		t.Fatalf("default key id: %q", got)
	}
}

// TestNoPlaintextInStore checks that what reaches the store is ciphertext.
func TestNoPlaintextInStore(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("secret", keyA)
	phrase := []byte("the quick brown fox keeps a secret")
	writeFile(t, filepath.Join(b, "text"), bytes.Repeat(phrase, 1000))
	files := e.storeFiles()
	if len(files) == 0 {
		t.Fatal("no objects in the store")
	}
	for _, f := range files {
		if bytes.Contains(readFile(t, f), phrase[:16]) {
			t.Fatalf("plaintext found in %s", f)
		}
	}
}

// TestTamper flips one byte of a stored block: that block reads as EIO with a log line naming the
// file; the other blocks still read.
func TestTamper(t *testing.T) {
	e := newEnv(t)
	e.logs.expect(`authentication failed`)
	b := e.bucket("tamper", keyA)
	p := filepath.Join(b, "victim")
	data := randBytes(t, 3*4096)
	writeFile(t, p, data)
	e.unmount()
	files := e.storeFiles()
	if len(files) != 1 {
		t.Fatalf("want one object, have %v", files)
	}
	obj := readFile(t, files[0])
	obj[4124+100] ^= 0x01 // inside the ciphertext of block 1
	writeFile(t, files[0], obj)
	e.mount()

	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:4096]) {
		t.Fatalf("block 0: %v", err)
	}
	if _, err := f.ReadAt(buf, 8192); err != nil || !bytes.Equal(buf, data[8192:]) {
		t.Fatalf("block 2: %v", err)
	}
	_, err = f.ReadAt(buf, 4096)
	expectErrno(t, err, syscall.EIO, "read tampered block")
	if _, err := f.ReadAt(buf, 4096); !errors.Is(err, syscall.EIO) {
		t.Fatalf("second read of the tampered block: %v", err)
	}
	if lines := e.logs.find(`authentication failed.*path=/tamper/victim`); len(lines) != 1 {
		t.Fatalf("want one log line naming the file, got %d: %v", len(lines), lines)
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool, explain ...func() string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			var detail []string
			for _, f := range explain {
				detail = append(detail, f())
			}
			t.Fatalf("timed out waiting: %s\n%s", what, strings.Join(detail, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
