package meta_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/kmipfs/kmipfs/meta"
)

// reopen closes db and opens dir again, checking the database both times.
func reopen(t *testing.T, db *meta.DB, dir string, opts meta.Options) *meta.DB {
	t.Helper()
	checkDB(t, db)
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openDB(t, dir, opts)
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, meta.Options{})
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	d := mkdir(t, db, b.Ino, "d")
	f := mkfile(t, db, d.Ino, "f")
	o := mkfile(t, db, d.Ino, "orphan")
	if _, _, err := db.CommitWrite(ctx, f.Ino, meta.Write{Object: "f/1", Gen: 1, Blocks: []uint64{0, 1, 3}},
		func(in *meta.Inode) error { in.Size = 4 * meta.BlockSize; return nil }); err != nil {
		t.Fatal(err)
	}
	commit(t, db, o.Ino, meta.Write{Object: "o/1", Gen: 1, Blocks: []uint64{0}})
	commit(t, db, o.Ino, meta.Write{Object: "o/2", Gen: 2, Blocks: []uint64{0}}) // o/1 queued for GC
	if _, err := db.Unlink(ctx, d.Ino, "orphan", t0); err != nil {
		t.Fatal(err)
	}
	if err := db.SetXattr(ctx, b.Ino, "user.kmipfs.key-id", []byte("mybucketkey"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.NextGen(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	inodes, size, err := db.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}

	db = reopen(t, db, dir, meta.Options{})
	got, err := db.Lookup(ctx, d.Ino, "f")
	if err != nil {
		t.Fatal(err)
	}
	if got.Ino != f.Ino || got.Size != 4*meta.BlockSize || got.Gen != 1 || string(got.WrappedKey) != "wrapped" ||
		got.KeyName != "pykmip-k1" || got.FileID != f.FileID || got.Bucket != "b" {
		t.Errorf("after reopen: %+v", got)
	}
	wantExtents(t, db, f.Ino, []meta.Extent{
		{Block: 0, Count: 2, Object: "f/1", Slot: 0, Gen: 1},
		{Block: 3, Count: 1, Object: "f/1", Slot: 2, Gen: 1},
	})
	if v, err := db.GetXattr(ctx, b.Ino, "user.kmipfs.key-id"); err != nil || string(v) != "mybucketkey" {
		t.Errorf("xattr after reopen = %q, %v", v, err)
	}
	if orphans, _ := db.Orphans(ctx); !slices.Equal(orphans, []meta.Ino{o.Ino}) {
		t.Errorf("orphans after reopen = %v", orphans)
	}
	if pending, _ := db.PendingGC(ctx); !slices.Equal(pending, refs("b", "o/1")) {
		t.Errorf("GC queue after reopen = %v", pending)
	}
	if i, s, err := db.Stats(ctx); err != nil || i != inodes || s != size {
		t.Errorf("Stats after reopen = %d, %d, %v; want %d, %d", i, s, err, inodes, size)
	}
	if n := names(t, db, d.Ino); !slices.Equal(n, []string{"f"}) {
		t.Errorf("entries after reopen %q", n)
	}
	// Inode numbers keep growing across opens; none is reused.
	n := mkfile(t, db, d.Ino, "new")
	if n.Ino <= o.Ino {
		t.Errorf("new inode %d not above %d", n.Ino, o.Ino)
	}
	// What fs does at mount: release the orphans left by a crash.
	freed, err := db.Release(ctx, o.Ino)
	if err != nil {
		t.Fatal(err)
	}
	wantFreed(t, "release orphan", freed, refs("b", "o/2"))
}

func TestEncryptedAtRest(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{7}, 32)
	db := openDB(t, dir, meta.Options{EncryptionKey: key, SyncWrites: true})
	mkdir(t, db, meta.RootIno, "secretbucket")
	checkDB(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := meta.Open(dir, meta.Options{EncryptionKey: bytes.Repeat([]byte{8}, 32)})
	wantErr(t, "wrong key", err, meta.ErrInvalid)
	_, err = meta.Open(dir, meta.Options{EncryptionKey: []byte("short")})
	wantErr(t, "bad key length", err, meta.ErrInvalid)
	db = openDB(t, dir, meta.Options{EncryptionKey: key})
	if _, err := db.Lookup(t.Context(), meta.RootIno, "secretbucket"); err != nil {
		t.Errorf("lookup with the right key: %v", err)
	}
}

// recordHandler keeps the records it gets.
type recordHandler struct {
	mu   *sync.Mutex
	msgs *[]string
	t    *testing.T
}

var _ slog.Handler = recordHandler{}

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Level >= slog.LevelWarn {
		h.t.Errorf("unexpected %v: %s", r.Level, r.Message)
	}
	*h.msgs = append(*h.msgs, r.Message)
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

func TestBadgerLogsAtDebug(t *testing.T) {
	var msgs []string
	mu := new(sync.Mutex)
	dir := t.TempDir()
	db, err := meta.Open(dir, meta.Options{Logger: slog.New(recordHandler{mu, &msgs, t})})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(msgs) == 0 {
		t.Fatal("Badger logged nothing")
	}
	for _, m := range msgs {
		if !strings.HasPrefix(m, "badger: ") || strings.HasSuffix(m, "\n") {
			t.Errorf("log line %q", m)
		}
	}
}

func TestCloseTwice(t *testing.T) {
	db, err := meta.Open("", meta.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestOpenNotADirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := meta.Open(filepath.Join(file, "db"), meta.Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "meta: open") {
		t.Errorf("Open under a regular file: %v", err)
	}
}

// TestConcurrentMixed runs creates, renames, links, unlinks and writes from
// several goroutines across a few directories; the database must stay
// consistent (openDB's cleanup runs Check).
func TestConcurrentMixed(t *testing.T) {
	db := openDB(t, "", meta.Options{InMemory: true})
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	dirs := []meta.Ino{b.Ino, mkdir(t, db, b.Ino, "x").Ino, mkdir(t, db, b.Ino, "y").Ino}
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := range 30 {
				d := dirs[(w+i)%3]
				name := string(rune('a' + i%5))
				in, err := db.Create(ctx, d, name, meta.Inode{Mode: syscall.S_IFREG | 0o644})
				switch {
				case errors.Is(err, meta.ErrExist):
				case err != nil:
					t.Error(err)
					return
				default:
					_, _, err := db.CommitWrite(ctx, in.Ino, meta.Write{Object: name + string(rune('0'+w)) + string(rune('a'+i)), Blocks: []uint64{uint64(i)}},
						func(in *meta.Inode) error { in.Size = uint64(i+1) * meta.BlockSize; return nil })
					if err != nil && !errors.Is(err, meta.ErrNotFound) {
						t.Error(err)
					}
				}
				if _, err := db.Rename(ctx, d, name, dirs[(w+i+1)%3], name, 0, t0); err != nil && !errors.Is(err, meta.ErrNotFound) {
					t.Error(err)
				}
				if src, err := db.Lookup(ctx, dirs[(w+i+1)%3], name); err == nil {
					if _, err := db.Link(ctx, src.Ino, d, name+"l", t0); err != nil && !errors.Is(err, meta.ErrExist) && !errors.Is(err, meta.ErrNotFound) {
						t.Error(err)
					}
				}
				if in, err := db.Unlink(ctx, dirs[(w+i+2)%3], name, t0); err == nil && in.Nlink == 0 {
					if _, err := db.Release(ctx, in.Ino); err != nil {
						t.Error(err)
					}
				} else if err != nil && !errors.Is(err, meta.ErrNotFound) {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

func TestCommitTooBig(t *testing.T) {
	db := openDB(t, "", meta.Options{InMemory: true})
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	var bl []uint64
	for i := range uint64(40000) {
		bl = append(bl, 2*i) // every block its own extent
	}
	_, _, err := db.CommitWrite(t.Context(), f.Ino, meta.Write{Object: "huge", Gen: 1, Blocks: bl}, nil)
	wantErr(t, "40000 extents", err, meta.ErrTooBig)
	wantExtents(t, db, f.Ino, nil)
	// Split, the parts fit.
	commit(t, db, f.Ino, meta.Write{Object: "h1", Gen: 1, Blocks: bl[:5000]})
	commit(t, db, f.Ino, meta.Write{Object: "h2", Gen: 2, Blocks: bl[5000:10000]})
	if exts, err := db.Extents(t.Context(), f.Ino); err != nil || len(exts) != 10000 {
		t.Errorf("%d extents, %v", len(exts), err)
	}
}
