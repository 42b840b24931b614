package local_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/kmipfs/kmipfs/objstore"
	"github.com/kmipfs/kmipfs/objstore/local"
	"github.com/kmipfs/kmipfs/objstore/storetest"
)

func newStore(t testing.TB, root string) *local.Store {
	t.Helper()
	s, err := local.New(root, local.Options{Logger: local.NewTestLogger(t)})
	if err != nil {
		t.Fatalf("New(%q): %v", root, err)
	}
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return newStore(t, t.TempDir()) })
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) objstore.Store { return newStore(b, b.TempDir()) })
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("Lstat: %v", err)
	}
	return fi.Mode()
}

// TestPermissions checks the modes of everything the store creates, with a umask of 0 so that the store's own
// modes are what is seen.
func TestPermissions(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	root := filepath.Join(t.TempDir(), "missing", "root")
	s := newStore(t, root)
	ctx := t.Context()
	if err := s.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "bkt", "a/b/obj", []byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "bkt", "flat", []byte("data")); err != nil {
		t.Fatal(err)
	}
	want := map[string]fs.FileMode{
		"":            fs.ModeDir | 0o700,
		".tmp":        fs.ModeDir | 0o700,
		"bkt":         fs.ModeDir | 0o700,
		"bkt/a":       fs.ModeDir | 0o700,
		"bkt/a/b":     fs.ModeDir | 0o700,
		"bkt/a/b/obj": 0o600,
		"bkt/flat":    0o600,
	}
	for rel, m := range want {
		if got := mode(t, filepath.Join(root, rel)); got != m {
			t.Errorf("mode of %q = %v, want %v", rel, got, m)
		}
	}
	if got := mode(t, filepath.Dir(root)); got != fs.ModeDir|0o700 {
		t.Errorf("mode of the created parent of root = %v, want %v", got, fs.ModeDir|0o700)
	}
}

// TestLayout checks that keys map to the documented paths, so that an operator can find an object on disk.
func TestLayout(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	ctx := t.Context()
	if err := s.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	key := "0123456789abcdef0123456789abcdef/0000000000000001"
	if err := s.Put(ctx, "bkt", key, []byte("sealed")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, "bkt", "0123456789abcdef0123456789abcdef", "0000000000000001"))
	if err != nil || string(got) != "sealed" {
		t.Fatalf("object file = %q, %v", got, err)
	}
}

func TestNewRefusesFileRoot(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := local.New(file, local.Options{}); err == nil {
		t.Fatalf("New on a regular file succeeded")
	}
	if _, err := local.New("", local.Options{}); err == nil {
		t.Fatalf("New with an empty root succeeded")
	}
}

func TestStaleTempCleanup(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	ctx := t.Context()
	if err := s.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "bkt", "obj", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(root, ".tmp")
	deadPid := 1<<22 + 1 // above the largest pid_max Linux allows
	stale := []string{fmt.Sprintf("put-%d-111", deadPid), fmt.Sprintf("put-%d-222", deadPid), "not-ours"}
	live := []string{fmt.Sprintf("put-%d-333", os.Getpid()), "put-1-444"}
	for _, name := range append(slices.Clone(stale), live...) {
		if err := os.WriteFile(filepath.Join(tmp, name), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(tmp, "stray-dir", "sub"), 0o700); err != nil {
		t.Fatal(err)
	}

	var logBuf bytes.Buffer
	s2, err := local.New(root, local.Options{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	slices.Sort(live)
	if !slices.Equal(left, live) {
		t.Fatalf(".tmp after New = %q, want only the files of live processes %q", left, live)
	}
	if !strings.Contains(logBuf.String(), "removed stale temporary files") || !strings.Contains(logBuf.String(), "count=4") {
		t.Errorf("New logged %q, want a line counting 4 removed files", logBuf.String())
	}
	if got, err := s2.Get(ctx, "bkt", "obj", 0, -1); err != nil || string(got) != "kept" {
		t.Fatalf("object after clean-up = %q, %v", got, err)
	}
}

// TestTempFilesNeverListed runs Puts against Lists and Buckets and checks that no temporary file ever shows.
func TestTempFilesNeverListed(t *testing.T) {
	s := newStore(t, t.TempDir())
	ctx := t.Context()
	if err := s.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for i := range 25 {
				if err := s.Put(ctx, "bkt", fmt.Sprintf("k/%d/%d", w, i), make([]byte, 4096)); err != nil {
					t.Errorf("Put: %v", err)
					return
				}
			}
		})
	}
	var seen sync.WaitGroup
	seen.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			err := s.List(ctx, "bkt", "", func(info objstore.Info) error {
				if !strings.HasPrefix(info.Key, "k/") || strings.Contains(info.Key, "put-") {
					return fmt.Errorf("List returned %q", info.Key)
				}
				if info.Size != 4096 {
					return fmt.Errorf("List returned %q with size %d", info.Key, info.Size)
				}
				return nil
			})
			if err != nil {
				t.Errorf("List: %v", err)
				return
			}
			names, err := s.Buckets(ctx)
			if err != nil || !slices.Equal(names, []string{"bkt"}) {
				t.Errorf("Buckets = %q, %v", names, err)
				return
			}
		}
	})
	wg.Wait()
	close(done)
	seen.Wait()
}

func TestKeyCollisionRefused(t *testing.T) {
	s := newStore(t, t.TempDir())
	ctx := t.Context()
	if err := s.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "bkt", "a", []byte("file")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "bkt", "a/b", []byte("below a file")); !errors.Is(err, objstore.ErrInvalidKey) {
		t.Fatalf("Put(a/b) with object a = %v, want ErrInvalidKey", err)
	}
	if err := s.Put(ctx, "bkt", "a/b/c", []byte("below a file")); !errors.Is(err, objstore.ErrInvalidKey) {
		t.Fatalf("Put(a/b/c) with object a = %v, want ErrInvalidKey", err)
	}
	if err := s.Put(ctx, "bkt", "d/e", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "bkt", "d", []byte("over a directory")); !errors.Is(err, objstore.ErrInvalidKey) {
		t.Fatalf("Put(d) with object d/e = %v, want ErrInvalidKey", err)
	}
	long := strings.Repeat("s", 256)
	if err := s.Put(ctx, "bkt", "x/"+long, []byte("x")); !errors.Is(err, objstore.ErrInvalidKey) {
		t.Fatalf("Put with a 256-byte segment = %v, want ErrInvalidKey", err)
	}
	if _, err := s.Stat(ctx, "bkt", long); !errors.Is(err, objstore.ErrInvalidKey) {
		t.Fatalf("Stat with a 256-byte segment = %v, want ErrInvalidKey", err)
	}
}

func TestDeleteRemovesEmptyDirectories(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	ctx := t.Context()
	if err := s.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"x/y/z", "x/keep", "p/q/r"} {
		if err := s.Put(ctx, "bkt", key, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{"x/y/z", "p/q/r"} {
		if err := s.Delete(ctx, "bkt", key); err != nil {
			t.Fatal(err)
		}
	}
	for _, gone := range []string{"bkt/x/y", "bkt/p"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists after its last object was deleted (%v)", gone, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "bkt", "x", "keep")); err != nil {
		t.Errorf("sibling object removed: %v", err)
	}
}

func TestDeleteBucketIgnoresLeftoverDirectories(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	ctx := t.Context()
	if err := s.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	// As if a crash had interrupted the clean-up of a Delete.
	if err := os.MkdirAll(filepath.Join(root, "bkt", "a", "b", "c"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "bkt", "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBucket(ctx, "bkt"); err != nil {
		t.Fatalf("DeleteBucket of a bucket holding only empty directories: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "bkt")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("bucket directory still exists: %v", err)
	}
}

// TestStraysIgnored puts files on disk that Put could never have written and checks that List and Buckets skip
// them and Get does not serve them.
func TestStraysIgnored(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	ctx := t.Context()
	for _, b := range []string{"bkt", "zzz"} {
		if err := s.CreateBucket(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, "bkt", "real", []byte("v")); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(root, "lost+found"), 0o700))
	must(os.Mkdir(filepath.Join(root, "Upper"), 0o700))
	must(os.WriteFile(filepath.Join(root, "afile"), nil, 0o600))
	must(os.WriteFile(filepath.Join(root, "bkt", "bad name"), nil, 0o600))
	must(os.Symlink("/etc/passwd", filepath.Join(root, "bkt", "link")))
	must(os.Symlink(filepath.Join(root, "zzz"), filepath.Join(root, "alias")))

	names, err := s.Buckets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"alias", "bkt", "zzz"}; !slices.Equal(names, want) {
		t.Fatalf("Buckets = %q, want %q", names, want)
	}
	var keys []string
	err = s.List(ctx, "bkt", "", func(info objstore.Info) error {
		keys = append(keys, info.Key)
		return nil
	})
	if err != nil || !slices.Equal(keys, []string{"real"}) {
		t.Fatalf("List = %q, %v; want only the real object", keys, err)
	}
	if _, err := s.Get(ctx, "bkt", "bad name", 0, -1); !errors.Is(err, objstore.ErrInvalidKey) {
		t.Fatalf("Get of a stray with an invalid name = %v, want ErrInvalidKey", err)
	}
}

// TestGetSparseRange reads one block far into a huge sparse object: it only works if Get reads the range and not
// the file.
func TestGetSparseRange(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	ctx := t.Context()
	if err := s.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "bkt", "huge", []byte("head")); err != nil {
		t.Fatal(err)
	}
	const size = 64 << 30
	if err := os.Truncate(filepath.Join(root, "bkt", "huge"), size); err != nil {
		t.Skipf("the file system cannot hold a sparse 64 GiB file: %v", err)
	}
	got, err := s.Get(ctx, "bkt", "huge", size/2, 4096)
	if err != nil || len(got) != 4096 || !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatalf("Get of a block in the hole = %d bytes, %v; want 4096 zero bytes", len(got), err)
	}
	if got, err := s.Get(ctx, "bkt", "huge", 0, 4); err != nil || string(got) != "head" {
		t.Fatalf("Get of the head = %q, %v", got, err)
	}
	if got, err := s.Get(ctx, "bkt", "huge", size-2, 10); err != nil || len(got) != 2 {
		t.Fatalf("Get past the end = %d bytes, %v; want 2", len(got), err)
	}
}

// TestNoSpace fills a tiny tmpfs. Mounting needs root (CAP_SYS_ADMIN); without it the test is skipped.
func TestNoSpace(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		t.Skipf("cannot mount a 1 MiB tmpfs to provoke ENOSPC (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	root := filepath.Join(dir, "store")
	s := newStore(t, root)
	ctx := t.Context()
	if err := s.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	small := bytes.Repeat([]byte("s"), 100<<10)
	if err := s.Put(ctx, "bkt", "dir/small", small); err != nil {
		t.Fatalf("Put of 100 KiB on a 1 MiB tmpfs: %v", err)
	}
	big := make([]byte, 2<<20)
	for _, key := range []string{"dir/big", "dir/small"} { // a new object, and an overwrite
		err := s.Put(ctx, "bkt", key, big)
		if !errors.Is(err, objstore.ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Put(%s) of 2 MiB on a 1 MiB tmpfs = %v, want ErrNoSpace wrapping ENOSPC", key, err)
		}
		if !strings.Contains(err.Error(), "no space left on device") {
			t.Fatalf("error %q lost the OS's text", err)
		}
	}
	if _, err := s.Stat(ctx, "bkt", "dir/big"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Stat of the failed object = %v, want ErrNotFound", err)
	}
	if got, err := s.Get(ctx, "bkt", "dir/small", 0, -1); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("the object a failed overwrite targeted = %d bytes, %v; want it intact", len(got), err)
	}
	entries, err := os.ReadDir(filepath.Join(root, ".tmp"))
	if err != nil || len(entries) != 0 {
		t.Fatalf("temporary files after ENOSPC: %v, %v", entries, err)
	}
	// The space of the failed Puts was given back.
	if err := s.Put(ctx, "bkt", "after", small); err != nil {
		t.Fatalf("Put after ENOSPC: %v", err)
	}
}

// TestSyncMakesPutsDurable checks the bookkeeping behind Sync: it takes every path waiting since
// the last Sync (objects and the directories that got entries), a second Sync finds nothing, an
// object deleted before the Sync does not make it fail, and overflowing the bound falls back to
// syncfs. (That the data reaches the disk is the kernel's promise for fsync and syncfs; a test
// cannot pull the power.)
func TestSyncMakesPutsDurable(t *testing.T) {
	ctx := context.Background()
	s, err := local.New(t.TempDir(), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"f1/0001", "f1/0002", "f2/0001"} {
		if err := s.Put(ctx, "bkt", k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "bkt", "f2/0001"); err != nil {
		t.Fatal(err)
	}
	if n := local.PendingSyncs(s); n == 0 {
		t.Fatal("no paths wait for Sync after three Puts")
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if n := local.PendingSyncs(s); n != 0 {
		t.Fatalf("%d paths still wait after Sync", n)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("second Sync: %v", err)
	}
	for i := 0; i < local.MaxPending+10; i++ {
		if err := s.Put(ctx, "bkt", fmt.Sprintf("g/%05d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync after overflow: %v", err)
	}
	if n := local.PendingSyncs(s); n != 0 {
		t.Fatalf("%d paths wait after the overflow Sync", n)
	}
}

// TestNewRefusesForeignRoot: a folder with someone else's files is not taken over, and nothing is
// written into it; an empty one, one with only lost+found, and one made by an earlier kmipfs are.
func TestNewRefusesForeignRoot(t *testing.T) {
	foreign := t.TempDir()
	if err := os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := local.New(foreign, local.Options{}); !errors.Is(err, local.ErrForeignRoot) {
		t.Fatalf("New on a foreign folder: %v", err)
	}
	if entries, _ := os.ReadDir(foreign); len(entries) != 1 {
		t.Fatalf("New wrote into a foreign folder: %d entries", len(entries))
	}
	for _, pre := range [][]string{nil, {"lost+found"}, {".tmp"}} {
		root := t.TempDir()
		for _, d := range pre {
			if err := os.Mkdir(filepath.Join(root, d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := local.New(root, local.Options{}); err != nil {
			t.Fatalf("New on a root holding %v: %v", pre, err)
		}
		if _, err := local.New(root, local.Options{}); err != nil {
			t.Fatalf("second New on a root holding %v: %v", pre, err)
		}
	}
}
