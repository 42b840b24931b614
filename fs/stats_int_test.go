package fs

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kmipfs/kmipfs/crypt"
)

// TestStatsFollowWrites: dirty bytes and files follow writes and flushes, a flush is counted with
// the sealed bytes it stored, a refused one as an error, and superseded objects as GC work.
func TestStatsFollowWrites(t *testing.T) {
	tf := newTestFS(t)
	of := tf.newFile(t, "f")
	of.write(t, 0, make([]byte, 3*blockSize))
	s := tf.Stats()
	if s.DirtyBytes != 3*blockSize || s.DirtyFiles != 1 || s.OpenFiles != 1 {
		t.Fatalf("after writing 3 blocks: dirty %d bytes in %d files, %d open; want %d in 1, 1 open",
			s.DirtyBytes, s.DirtyFiles, s.OpenFiles, 3*blockSize)
	}
	down := errors.New("store down")
	tf.store.SetFault(func(op, bucket, key string) error {
		if op == "put" {
			return down
		}
		return nil
	})
	if err := of.flush(); !errors.Is(err, down) {
		t.Fatalf("flush with the store down: %v", err)
	}
	tf.store.SetFault(nil)
	if s := tf.Stats(); s.FlushErrors != 1 || s.Flushes != 0 || s.DirtyFiles != 1 {
		t.Fatalf("after a refused flush: %+v", s)
	}
	if err := of.flush(); err != nil {
		t.Fatal(err)
	}
	s = tf.Stats()
	if s.Flushes != 1 || s.FlushedBytes != 3*crypt.CipherBS || s.DirtyBytes != 0 || s.DirtyFiles != 0 {
		t.Fatalf("after a flush of 3 blocks: flushes %d, %d bytes stored, dirty %d bytes in %d files",
			s.Flushes, s.FlushedBytes, s.DirtyBytes, s.DirtyFiles)
	}
	of.write(t, 0, make([]byte, 3*blockSize)) // supersedes every block of the first object
	if err := of.flush(); err != nil {
		t.Fatal(err)
	}
	tf.gc.wait(context.Background())
	if s := tf.Stats(); s.GCDeleted != 1 || s.GCErrors != 0 || s.GCPending != 0 {
		t.Fatalf("after superseding an object: deleted %d, errors %d, pending %d; want 1, 0, 0",
			s.GCDeleted, s.GCErrors, s.GCPending)
	}
	if s := tf.Stats(); s.Meta.Hits+s.Meta.Misses == 0 {
		t.Fatalf("meta cache counters did not move: %+v", s.Meta)
	}
}

// TestOpTableBuckets: a request lands in the first bucket whose bound it does not pass, the
// snapshot is cumulative, and failures are counted apart.
func TestOpTableBuckets(t *testing.T) {
	tf := newTestFS(t)
	ops := &tf.stats.ops
	now := time.Now()
	ops.record(OpWrite, now, fuse.OK)                           // well under 100 µs
	ops.record(OpWrite, now.Add(-50*time.Millisecond), fuse.OK) // 10-100 ms
	ops.record(OpWrite, now.Add(-time.Minute), fuse.EIO)        // beyond every bound
	ops.record(OpLookup, now, fuse.ENOENT)
	s := tf.Stats()
	w := s.Ops[OpWrite]
	if w.Count != 3 || w.Errors != 1 || w.Op.String() != "write" {
		t.Fatalf("write: %+v", w)
	}
	want := [len(LatencyBuckets)]uint64{1, 1, 1, 2, 2, 2}
	if w.Buckets != want {
		t.Fatalf("write buckets %v, want %v", w.Buckets, want)
	}
	if w.Seconds < 60 || w.Seconds > 70 {
		t.Fatalf("write seconds %v, want about 60.05", w.Seconds)
	}
	if l := s.Ops[OpLookup]; l.Count != 1 || l.Errors != 1 {
		t.Fatalf("lookup: %+v", l)
	}
	for op := range NumOps {
		if op.String() == "unknown" || op.String() == "" {
			t.Errorf("op %d has no name", op)
		}
	}
}

// TestStatusXattr: the root's status attribute comes from Options.Status; a size query and the
// read after it see the same document, other nodes have none, and nobody can set it.
func TestStatusXattr(t *testing.T) {
	tf := newTestFS(t)
	n := 0
	tf.status = StatusFunc(func(context.Context) ([]byte, error) {
		n++
		if n == 1 {
			return []byte(`{"n":1}`), nil
		}
		return []byte(`{"n":"later"}`), nil
	})
	ctx := context.Background()
	size, errno := tf.root.Getxattr(ctx, xattrStatus, nil)
	if errno != 0 || size != 7 {
		t.Fatalf("size query: %d, %v", size, errno)
	}
	buf := make([]byte, size)
	if got, errno := tf.root.Getxattr(ctx, xattrStatus, buf); errno != 0 || string(buf[:got]) != `{"n":1}` {
		t.Fatalf("read after the size query: %q, %v", buf[:got], errno)
	}
	big := make([]byte, 100)
	if got, errno := tf.root.Getxattr(ctx, xattrStatus, big); errno != 0 || string(big[:got]) != `{"n":"later"}` {
		t.Fatalf("a later read builds a new document: %q, %v", big[:got], errno)
	}
	if errno := tf.root.Setxattr(ctx, xattrStatus, []byte("x"), 0); errno != syscall.EPERM {
		t.Fatalf("setxattr on the root: %v, want EPERM", errno)
	}
	of := tf.newFile(t, "f")
	file := &node{fsys: tf.FS, ino: of.ino}
	if _, errno := file.Getxattr(ctx, xattrStatus, big); errno != syscall.ENODATA {
		t.Fatalf("getxattr on a file: %v, want ENODATA", errno)
	}
	if errno := file.Setxattr(ctx, xattrStatus, []byte("x"), 0); errno != syscall.EPERM {
		t.Fatalf("setxattr on a file: %v, want EPERM", errno)
	}
}

// BenchmarkOpRecord is the cost the request counters add to every FUSE request.
func BenchmarkOpRecord(b *testing.B) {
	var ops opTable
	for b.Loop() {
		ops.record(OpRead, time.Now(), fuse.OK)
	}
}
