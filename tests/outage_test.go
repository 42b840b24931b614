package tests

// Object store outages on a mounted filesystem, with the store decorated by objstore/faulty: a
// store failing half of its requests during a copy, close and fsync while the store refuses
// writes, and a store that is full (a small tmpfs). The application gets EIO (ENOSPC when full);
// the dirty data stays in memory and lands once the store is back; a file never reads back wrong.
// KMIP outages are tested in kmip_test.go.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kmipfs/kmipfs/objstore"
	"github.com/kmipfs/kmipfs/objstore/faulty"
)

// withFaulty decorates the mount's store with a faulty.Store; *fp is the current one (a new one
// at every mount, starting without a Rule).
func withFaulty(fp **faulty.Store) envOption {
	seed := uint64(0)
	return withStore(func(s objstore.Store) objstore.Store {
		seed++
		*fp = faulty.New(s, seed)
		return *fp
	})
}

// expectStoreErrors announces the log lines a failing store causes.
func expectStoreErrors(e *env) {
	e.logs.expect(`I/O error`)
	e.logs.expect(`file closed with data the store did not take`)
	e.logs.expect(`delete of superseded object failed`)
	e.logs.expect(`object store is full`)
}

// copySource makes a tree to copy: one file large enough to flush several times while it is
// written, and many small ones.
func copySource(t *testing.T) (string, map[string][]byte) {
	t.Helper()
	src := t.TempDir()
	files := map[string][]byte{"big.bin": randBytes(t, 40<<20+12345)}
	for i := 0; i < 40; i++ {
		files[fmt.Sprintf("small/%02d.bin", i)] = randBytes(t, (i*7919)%(200<<10))
	}
	for name, data := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, data)
	}
	return src, files
}

// checkCopy reads every copied file that exists: a read fails with EIO (allowEIO) or returns a
// prefix of the source, and complete files are counted. A file never reads back wrong.
func checkCopy(t *testing.T, dst string, files map[string][]byte, allowEIO bool) (complete, partial, failed int) {
	t.Helper()
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dst, name))
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case err != nil:
			if !allowEIO || !errors.Is(err, syscall.EIO) {
				t.Errorf("read %s: %v", name, err)
			}
			failed++
			continue
		}
		switch {
		case bytes.Equal(got, want):
			complete++
		case len(got) < len(want) && bytes.Equal(got, want[:len(got)]):
			partial++
		default:
			t.Errorf("%s reads back wrong: %d bytes, not the source or a prefix of it (%d bytes)", name, len(got), len(want))
		}
	}
	return complete, partial, failed
}

// TestStoreOutageCopy: the store fails half of its requests while cp copies a tree in. The copy
// either completes with correct bytes or reports EIO; after the store recovers, a re-run
// completes; no file ever reads back wrong, before or after a remount.
func TestStoreOutageCopy(t *testing.T) {
	var fs *faulty.Store
	e := newEnv(t, withFaulty(&fs))
	expectStoreErrors(e)
	dst := e.bucket("outage", keyA)
	src, files := copySource(t)

	fs.Set(faulty.Rule{FailRate: 0.5})
	out, err := run("cp", "-r", src+"/.", dst+"/")
	c := fs.Counts()
	t.Logf("cp while the store fails half of its requests (%d of %d failed): %v\n%s", c.Failed, c.Calls, err, out)
	if err != nil && !strings.Contains(out, "Input/output error") {
		t.Fatalf("cp failed, but not with EIO: %v\n%s", err, out)
	}
	if c.Failed == 0 {
		t.Fatal("no request failed: the outage did not happen")
	}
	complete, partial, failed := checkCopy(t, dst, files, true)
	t.Logf("during the outage: %d files complete, %d cut short, %d reads failed with EIO", complete, partial, failed)

	fs.Clear()
	complete, partial, _ = checkCopy(t, dst, files, false)
	t.Logf("after the store recovered: %d files complete, %d cut short", complete, partial)
	e.remount() // unmounting stores the data kept in memory
	checkCopy(t, dst, files, false)

	if out, err := run("cp", "-r", src+"/.", dst+"/"); err != nil {
		t.Fatalf("cp after the store recovered: %v\n%s", err, out)
	}
	if complete, _, _ := checkCopy(t, dst, files, false); complete != len(files) {
		t.Fatalf("after the re-run %d of %d files are complete", complete, len(files))
	}
	e.remount()
	if complete, _, _ := checkCopy(t, dst, files, false); complete != len(files) {
		t.Fatalf("after the re-run and a remount %d of %d files are complete", complete, len(files))
	}
	checkMeta(t, e)
}

// TestStoreOutageFsync: while the store refuses writes, fsync and close return EIO, the data
// stays readable from memory, a file stored before is untouched, and an fsync after the store is
// back stores it. Also when the store kept an object but its reply was lost, and when only the
// store's Sync fails.
func TestStoreOutageFsync(t *testing.T) {
	cases := []struct {
		name     string
		rule     faulty.Rule
		closeEIO bool // the store refuses the Put, so close (a flush) fails too
	}{
		{"put refused", faulty.Rule{Ops: faulty.OpPut, FailRate: 1}, true},
		{"put stored, reply lost", faulty.Rule{Ops: faulty.OpPut, FailRate: 1, AfterOp: true}, true},
		{"sync fails", faulty.Rule{Ops: faulty.OpSync, FailRate: 1}, false},
		{"store down", faulty.Rule{Ops: faulty.OpWrites, FailRate: 1}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var fs *faulty.Store
			e := newEnv(t, withFaulty(&fs))
			expectStoreErrors(e)
			b := e.bucket("fsync", keyA)
			stored := randBytes(t, 100<<10)
			writeFile(t, filepath.Join(b, "stored"), stored)

			p := filepath.Join(b, "f")
			data := randBytes(t, 300<<10+17)
			f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(data); err != nil {
				t.Fatal(err)
			}
			fs.Set(c.rule)
			for i := 0; i < 2; i++ {
				expectErrno(t, f.Sync(), syscall.EIO, fmt.Sprintf("fsync %d while the store fails", i+1))
			}
			got := make([]byte, len(data)+1)
			if n, err := f.ReadAt(got, 0); n != len(data) || !bytes.Equal(got[:n], data) {
				t.Fatalf("read while the store fails: %d bytes, %v; want the written data", n, err)
			}
			err = f.Close()
			if c.closeEIO {
				expectErrno(t, err, syscall.EIO, "close while the store fails")
			} else if err != nil {
				t.Fatalf("close (nothing left to store): %v", err)
			}
			if got := readFile(t, filepath.Join(b, "stored")); !bytes.Equal(got, stored) {
				t.Fatal("a file stored before the outage changed")
			}
			if got := readFile(t, p); !bytes.Equal(got, data) {
				t.Fatal("after the failed close, the file does not read back as written")
			}

			fs.Clear()
			f, err = os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatalf("fsync after the store is back: %v", err)
			}
			if err := f.Close(); err != nil {
				t.Fatalf("close after the store is back: %v", err)
			}
			e.remount()
			if got := readFile(t, p); !bytes.Equal(got, data) {
				t.Fatal("after a remount the file does not read back as written")
			}
			if got := readFile(t, filepath.Join(b, "stored")); !bytes.Equal(got, stored) {
				t.Fatal("after a remount a file stored before the outage changed")
			}
			checkMeta(t, e)
		})
	}
}

// fullStore mounts kmipfs with the local store on an 8 MiB tmpfs and writes three files of 1 MiB.
func fullStore(t *testing.T) (e *env, bucket string, before map[string][]byte) {
	t.Helper()
	requireLocalStore(t)
	small := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(small, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", small).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", small).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", small, err, out)
		}
	})
	e = newEnv(t, withStoreDir(filepath.Join(small, "objects")))
	t.Cleanup(func() {
		// Unmount before the tmpfs goes (cleanups run last-in first-out).
		if e.srv != nil {
			e.unmount()
		}
	})
	expectStoreErrors(e)
	bucket = e.bucket("full", keyA)
	before = map[string][]byte{}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("before-%d", i)
		before[name] = randBytes(t, 1<<20+i*777)
		writeFile(t, filepath.Join(bucket, name), before[name])
	}
	return e, bucket, before
}

// fill writes 1 MiB chunks with an fsync after each to path until the store is full, closes the
// file, and checks that the application got ENOSPC (from write, fsync or close).
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var full error
	where := ""
	chunk := randBytes(t, 1<<20)
	for i := 0; i < 32 && full == nil; i++ {
		if _, err := f.Write(chunk); err != nil {
			full, where = err, fmt.Sprintf("write of MiB %d", i)
		} else if err := f.Sync(); err != nil {
			full, where = err, fmt.Sprintf("fsync after MiB %d", i)
		}
	}
	if err := f.Close(); full == nil && err != nil {
		full, where = err, "close"
	}
	if full == nil {
		t.Fatal("wrote 32 MiB into an 8 MiB store without an error")
	}
	expectErrno(t, full, syscall.ENOSPC, where)
	t.Logf("the store filled up: %s: %v", where, full)
}

func checkFiles(t *testing.T, dir string, files map[string][]byte, when string) {
	t.Helper()
	for name, want := range files {
		if got := readFile(t, filepath.Join(dir, name)); !bytes.Equal(got, want) {
			t.Fatalf("%s: %s differs", when, name)
		}
	}
}

// TestStoreFull: the local store on an 8 MiB tmpfs. Writing past it gives the application ENOSPC
// (on write, close or fsync); files written before are intact, also after a remount; truncating
// the file that did not fit drops its unstored data and frees its space for new files.
func TestStoreFull(t *testing.T) {
	e, b, before := fullStore(t)
	p := filepath.Join(b, "filler")
	fill(t, p)
	checkFiles(t, b, before, "when the store filled up")
	if err := os.Truncate(p, 0); err != nil {
		t.Fatalf("truncate the file that did not fit: %v", err)
	}
	e.remount()
	checkFiles(t, b, before, "after a remount")
	if st, err := os.Stat(p); err != nil || st.Size() != 0 {
		t.Fatalf("truncated file after a remount: %v %v", st, err)
	}
	after := randBytes(t, 1<<20)
	waitFor(t, "space freed by the truncated file", func() bool {
		return os.WriteFile(filepath.Join(b, "after"), after, 0o644) == nil
	})
	if got := readFile(t, filepath.Join(b, "after")); !bytes.Equal(got, after) {
		t.Fatal("a file written after space was freed differs")
	}
	checkMeta(t, e)
}

// TestStoreFullUnlink: the file that did not fit is closed (ENOSPC, its data kept in memory)
// and then removed. Nothing can read that data any more, so it must be dropped: the unmount
// must not try to store it, and the file's objects must be freed while mounted. (This failed
// before c1719da: the kept data state stopped releaseOrphan, and FlushAll tried to store the
// dead data at unmount.)
func TestStoreFullUnlink(t *testing.T) {
	e, b, before := fullStore(t)
	p := filepath.Join(b, "filler")
	fill(t, p)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	after := randBytes(t, 1<<20)
	waitFor(t, "space freed by the removed file", func() bool {
		return os.WriteFile(filepath.Join(b, "after"), after, 0o644) == nil
	})
	e.remount()
	checkFiles(t, b, before, "after a remount")
	if got := readFile(t, filepath.Join(b, "after")); !bytes.Equal(got, after) {
		t.Fatal("a file written after space was freed differs")
	}
	checkMeta(t, e)
}
