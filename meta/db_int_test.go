package meta

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

func openTest(t *testing.T, dir string) *DB {
	t.Helper()
	db, err := Open(dir, Options{InMemory: dir == ""})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// rawUpdate writes to the Badger database underneath, bypassing meta, to
// simulate corruption or another program.
func rawUpdate(t *testing.T, db *DB, fn func(*badger.Txn) error) {
	t.Helper()
	if err := db.bdb.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func withBadger(t *testing.T, dir string, fn func(*badger.Txn) error) {
	t.Helper()
	bdb, err := badger.Open(badgerOptions(dir, false, slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := bdb.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesUnknownFormat(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	withBadger(t, dir, func(txn *badger.Txn) error { return txn.Set(formatKey, encodeFormat(formatVersion+1)) })
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("Open of format %d: %v", formatVersion+1, err)
	}
	withBadger(t, dir, func(txn *badger.Txn) error { return txn.Set(formatKey, []byte("garbage")) })
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrFormat) {
		t.Errorf("Open with a garbage format record: %v", err)
	}
}

func TestOpenRefusesForeignDatabase(t *testing.T) {
	dir := t.TempDir()
	withBadger(t, dir, func(txn *badger.Txn) error { return txn.Set([]byte("some-other-app"), []byte("x")) })
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrFormat) {
		t.Errorf("Open of a foreign Badger database: %v", err)
	}
}

func TestUpdateRetriesConflicts(t *testing.T) {
	db := openTest(t, "")
	ctx := t.Context()
	attempts := 0
	err := db.update(ctx, func(x *tx) error {
		attempts++
		in, err := x.get(RootIno)
		if err != nil {
			return err
		}
		if attempts < 3 {
			// Another writer changes the inode this transaction read.
			rawUpdate(t, db, func(txn *badger.Txn) error {
				c := in.clone()
				c.Mtime = int64(attempts)
				return txn.Set(inodeKey(RootIno), encodeInode(c))
			})
		}
		in.Ctime = 99
		x.put(in)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if attempts != 3 {
		t.Errorf("%d attempts, want 3", attempts)
	}
	in, err := db.Get(ctx, RootIno)
	if err != nil || in.Mtime != 2 || in.Ctime != 99 {
		t.Errorf("root = %+v, %v", in, err)
	}

	// A transaction that always conflicts gives up with ErrConflict, or
	// with the context's error once that is cancelled.
	cctx, cancel := context.WithCancel(ctx)
	attempts = 0
	err = db.update(cctx, func(x *tx) error {
		attempts++
		if attempts == 5 {
			cancel()
		}
		if _, err := x.get(RootIno); err != nil {
			return err
		}
		rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Set(inodeKey(RootIno), encodeInode(in)) })
		return x.t.Set([]byte{prefixCounter, 0x7f}, nil)
	})
	if !errors.Is(err, context.Canceled) || attempts != 5 {
		t.Errorf("cancelled retry loop: %v after %d attempts", err, attempts)
	}
	if testing.Short() {
		return
	}
	attempts = 0
	err = db.update(ctx, func(x *tx) error {
		attempts++
		if _, err := x.get(RootIno); err != nil {
			return err
		}
		rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Set(inodeKey(RootIno), encodeInode(in)) })
		return x.t.Set([]byte{prefixCounter, 0x7f}, nil)
	})
	if !errors.Is(err, badger.ErrConflict) || attempts != maxTxnAttempts {
		t.Errorf("endless conflict: %v after %d attempts", err, attempts)
	}
}

func TestFoldCounters(t *testing.T) {
	db := openTest(t, "")
	ctx := t.Context()
	b, err := db.Create(ctx, RootIno, "b", Inode{Mode: syscall.S_IFDIR | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := db.Create(ctx, b.Ino, string(rune('A'+i)), Inode{Mode: syscall.S_IFREG, Size: 10}); err != nil {
			t.Fatal(err)
		}
	}
	countDeltas := func() int {
		n := 0
		_ = db.bdb.View(func(txn *badger.Txn) error {
			keys, err := keysWithPrefix(txn, deltaPrefix, 0)
			n = len(keys)
			return err
		})
		return n
	}
	if n := countDeltas(); n != 51 {
		t.Errorf("%d deltas before fold, want 51", n)
	}
	if err := db.fold(); err != nil {
		t.Fatal(err)
	}
	if n := countDeltas(); n != 0 {
		t.Errorf("%d deltas after fold", n)
	}
	if inodes, bytes, err := db.Stats(ctx); err != nil || inodes != 52 || bytes != 500 {
		t.Errorf("Stats after fold = %d, %d, %v", inodes, bytes, err)
	}
}

func TestCheckFindsCorruption(t *testing.T) {
	ctx := t.Context()
	db := openTest(t, "")
	b, _ := db.Create(ctx, RootIno, "b", Inode{Mode: syscall.S_IFDIR | 0o755})
	f, _ := db.Create(ctx, b.Ino, "f", Inode{Mode: syscall.S_IFREG | 0o644})
	if _, _, err := db.CommitWrite(ctx, f.Ino, Write{Object: "o", Blocks: []uint64{0, 1}}, nil); err != nil {
		t.Fatal(err)
	}
	if p, err := db.Check(ctx); err != nil || len(p) != 0 {
		t.Fatalf("clean database: %q, %v", p, err)
	}
	for _, tc := range []struct {
		name string
		fn   func(*badger.Txn) error
		want string
	}{
		{"dangling entry", func(txn *badger.Txn) error {
			return txn.Set(direntKey(b.Ino, "ghost"), encodeDirent(999, syscall.S_IFREG))
		}, "names missing inode 999"},
		{"wrong nlink", func(txn *badger.Txn) error {
			c := f.clone()
			c.Nlink = 3
			return txn.Set(inodeKey(f.Ino), encodeInode(c))
		}, "nlink 3, 1 entries"},
		{"refcount", func(txn *badger.Txn) error {
			return txn.Set(refcountKey(ObjectRef{"b", "o"}), encodeUint(5))
		}, "refcount 5, 2 live blocks"},
		{"counters", func(txn *badger.Txn) error {
			return txn.Set(deltaKey(1<<60, 1), encodeCounters(counters{inodes: 1}))
		}, "counters say 4 inodes"},
		{"unknown key", func(txn *badger.Txn) error { return txn.Set([]byte("zzz"), nil) }, "unknown key"},
		{"bad inode", func(txn *badger.Txn) error { return txn.Set(inodeKey(f.Ino), []byte{1, 2, 3}) }, "inode"},
		{"overlap", func(txn *badger.Txn) error {
			return txn.Set(extentKey(f.Ino, 1), encodeExtent(Extent{Count: 1, Object: "o", Slot: 1}))
		}, "overlap"},
		{"queued but live", func(txn *badger.Txn) error { return txn.Set(gcKey(ObjectRef{"b", "o"}), nil) }, "queued for GC"},
		{"missing orphan mark", func(txn *badger.Txn) error { return txn.Set(orphanKey(f.Ino), nil) }, "orphan mark"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t, "")
			b2, _ := db.Create(ctx, RootIno, "b", Inode{Mode: syscall.S_IFDIR | 0o755})
			f2, _ := db.Create(ctx, b2.Ino, "f", Inode{Mode: syscall.S_IFREG | 0o644})
			if b2.Ino != b.Ino || f2.Ino != f.Ino {
				t.Skip("inode numbers differ between databases")
			}
			if _, _, err := db.CommitWrite(ctx, f.Ino, Write{Object: "o", Blocks: []uint64{0, 1}}, nil); err != nil {
				t.Fatal(err)
			}
			rawUpdate(t, db, tc.fn)
			p, err := db.Check(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(p, "\n"), tc.want) {
				t.Errorf("problems %q lack %q", p, tc.want)
			}
		})
	}
}

// TestCorruptRecordsAreErrors checks that reading damaged records returns
// ErrFormat through the public API instead of panicking.
func TestCorruptRecordsAreErrors(t *testing.T) {
	ctx := t.Context()
	db := openTest(t, "")
	b, _ := db.Create(ctx, RootIno, "b", Inode{Mode: syscall.S_IFDIR | 0o755})
	f, _ := db.Create(ctx, b.Ino, "f", Inode{Mode: syscall.S_IFREG | 0o644})
	rawUpdate(t, db, func(txn *badger.Txn) error {
		if err := txn.Set(direntKey(b.Ino, "bad"), []byte{9}); err != nil {
			return err
		}
		if err := txn.Set(extentKey(f.Ino, 0), []byte{1, 0}); err != nil {
			return err
		}
		return txn.Set(inodeKey(77), encodeInode(&Inode{Ino: 78, Mode: syscall.S_IFREG}))
	})
	_, err := db.Lookup(ctx, b.Ino, "bad")
	if !errors.Is(err, ErrFormat) {
		t.Errorf("Lookup of a bad entry: %v", err)
	}
	if _, err := db.ReadDir(ctx, b.Ino); !errors.Is(err, ErrFormat) {
		t.Errorf("ReadDir with a bad entry: %v", err)
	}
	if _, err := db.Extents(ctx, f.Ino); !errors.Is(err, ErrFormat) {
		t.Errorf("Extents with a bad extent: %v", err)
	}
	if _, _, err := db.CommitWrite(ctx, f.Ino, Write{Object: "x", Blocks: []uint64{0}}, nil); !errors.Is(err, ErrFormat) {
		t.Errorf("CommitWrite over a bad extent: %v", err)
	}
	if _, err := db.Get(ctx, 77); !errors.Is(err, ErrFormat) {
		t.Errorf("Get of an inode stored under another number: %v", err)
	}
}
