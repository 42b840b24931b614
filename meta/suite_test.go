package meta_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/kmipfs/kmipfs/meta"
)

// backend opens a fresh database for one test.
type backend struct {
	name string
	open func(t *testing.T) *meta.DB
}

var backends = []backend{
	{"mem", func(t *testing.T) *meta.DB { return openDB(t, "", meta.Options{InMemory: true}) }},
	{"disk", func(t *testing.T) *meta.DB { return openDB(t, t.TempDir(), meta.Options{}) }},
}

// suite lists the tests that run on every backend.
var suite = []struct {
	name string
	fn   func(t *testing.T, db *meta.DB)
}{
	{"CreateLookupReadDir", testCreateLookupReadDir},
	{"CreateErrors", testCreateErrors},
	{"DirNlink", testDirNlink},
	{"HardLinksAndOrphans", testHardLinksAndOrphans},
	{"UnlinkRmdir", testUnlinkRmdir},
	{"Rename", testRename},
	{"RenameExchange", testRenameExchange},
	{"Update", testUpdate},
	{"UpdateRetriesOnConflict", testUpdateRetriesOnConflict},
	{"NextGen", testNextGen},
	{"Xattrs", testXattrs},
	{"CommitWriteSplitting", testCommitWriteSplitting},
	{"CommitWriteTruncate", testCommitWriteTruncate},
	{"CommitWriteHoles", testCommitWriteHoles},
	{"CreateTmpLinkOrphan", testCreateTmpLinkOrphan},
	{"CommitWriteErrors", testCommitWriteErrors},
	{"GCQueuedOnce", testGCQueuedOnce},
	{"Compaction", testCompaction},
	{"ReleaseFreesObjects", testReleaseFreesObjects},
	{"ExtentModel", testExtentModel},
	{"ConcurrentCreates", testConcurrentCreates},
	{"ConcurrentUpdates", testConcurrentUpdates},
	{"Stats", testStats},
	{"StatsFold", testStatsFold},
	{"Cancelled", testCancelled},
}

func TestSuite(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for _, tc := range suite {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, b.open(t))
				})
			}
		})
	}
}

// openDB opens a database that is checked for consistency and closed when
// the test ends. Badger warnings fail the test.
func openDB(t *testing.T, dir string, opts meta.Options) *meta.DB {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	db, err := meta.Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		checkDB(t, db)
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// checkDB fails the test for every inconsistency Check finds.
func checkDB(t *testing.T, db *meta.DB) {
	t.Helper()
	// Not t.Context(): it is already cancelled when cleanups run.
	problems, err := db.Check(context.Background())
	if errors.Is(err, meta.ErrClosed) {
		return // closed and checked by the test itself
	}
	if err != nil {
		t.Errorf("Check: %v", err)
	}
	for _, p := range problems {
		t.Errorf("Check: %s", p)
	}
}

// failHandler fails the test on any record at Warn or above, as the style
// guide asks: in tests a warning is a failure.
type failHandler struct {
	t  *testing.T
	mu *sync.Mutex
}

var _ slog.Handler = failHandler{}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(failHandler{t: t, mu: new(sync.Mutex)})
}

func (h failHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h failHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.t.Errorf("unexpected log at %v: %s", r.Level, r.Message)
	return nil
}
func (h failHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h failHandler) WithGroup(string) slog.Handler      { return h }

const t0 = int64(1_700_000_000_000_000_000)

func mkdir(t *testing.T, db *meta.DB, parent meta.Ino, name string) *meta.Inode {
	t.Helper()
	in, err := db.Create(t.Context(), parent, name, meta.Inode{Mode: syscall.S_IFDIR | 0o755, Ctime: t0})
	if err != nil {
		t.Fatalf("mkdir %q: %v", name, err)
	}
	return in
}

func mkfile(t *testing.T, db *meta.DB, parent meta.Ino, name string) *meta.Inode {
	t.Helper()
	in, err := db.Create(t.Context(), parent, name, meta.Inode{
		Mode: syscall.S_IFREG | 0o644, Ctime: t0, Uid: 1000, Gid: 1000,
		FileID: [16]byte{1, 2, 3}, KeyID: "k1", KeyName: "pykmip-k1", WrappedKey: []byte("wrapped"),
	})
	if err != nil {
		t.Fatalf("create %q: %v", name, err)
	}
	return in
}

func get(t *testing.T, db *meta.DB, ino meta.Ino) *meta.Inode {
	t.Helper()
	in, err := db.Get(t.Context(), ino)
	if err != nil {
		t.Fatalf("Get %d: %v", ino, err)
	}
	return in
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

func wantNlink(t *testing.T, db *meta.DB, ino meta.Ino, want uint32) {
	t.Helper()
	if got := get(t, db, ino).Nlink; got != want {
		t.Errorf("inode %d: nlink %d, want %d", ino, got, want)
	}
}

func names(t *testing.T, db *meta.DB, dir meta.Ino) []string {
	t.Helper()
	ents, err := db.ReadDir(t.Context(), dir)
	if err != nil {
		t.Fatalf("ReadDir %d: %v", dir, err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name)
	}
	return out
}

func testCreateLookupReadDir(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	root := get(t, db, meta.RootIno)
	if !root.IsDir() || root.Mode != syscall.S_IFDIR|0o755 || root.Uid != 0 || root.Gid != 0 || root.Nlink != 2 {
		t.Fatalf("root = %+v", root)
	}
	b := mkdir(t, db, meta.RootIno, "bucket")
	if b.Bucket != "bucket" || b.Parent != meta.RootIno || b.Nlink != 2 || b.Ino <= meta.RootIno {
		t.Errorf("bucket = %+v", b)
	}
	root = get(t, db, meta.RootIno)
	if root.Nlink != 3 || root.Mtime != t0 || root.Ctime != t0 {
		t.Errorf("root after mkdir = %+v", root)
	}
	f := mkfile(t, db, b.Ino, "file")
	if f.Bucket != "bucket" || f.Parent != 0 || f.Nlink != 1 || !f.IsRegular() || f.Ino == b.Ino {
		t.Errorf("file = %+v", f)
	}
	l, err := db.Create(ctx, b.Ino, "link", meta.Inode{Mode: syscall.S_IFLNK | 0o777, Target: "file", Ctime: t0,
		KeyID: "ignored", WrappedKey: []byte("ignored")})
	if err != nil {
		t.Fatal(err)
	}
	if !l.IsSymlink() || l.Target != "file" || l.KeyID != "" || l.WrappedKey != nil {
		t.Errorf("symlink = %+v", l)
	}
	sub := mkdir(t, db, b.Ino, "sub")
	if sub.Bucket != "bucket" || sub.Parent != b.Ino {
		t.Errorf("sub = %+v", sub)
	}
	if _, err := db.Create(ctx, b.Ino, "fifo", meta.Inode{Mode: syscall.S_IFIFO | 0o600, Ctime: t0}); err != nil {
		t.Fatal(err)
	}

	got, err := db.Lookup(ctx, b.Ino, "file")
	if err != nil {
		t.Fatal(err)
	}
	if got.Ino != f.Ino || got.KeyID != "k1" || got.KeyName != "pykmip-k1" || string(got.WrappedKey) != "wrapped" ||
		got.FileID != f.FileID || got.Uid != 1000 {
		t.Errorf("Lookup = %+v, want %+v", got, f)
	}
	ents, err := db.ReadDir(ctx, b.Ino)
	if err != nil {
		t.Fatal(err)
	}
	want := []meta.Dirent{
		{Name: "fifo", Mode: syscall.S_IFIFO},
		{Name: "file", Ino: f.Ino, Mode: syscall.S_IFREG},
		{Name: "link", Ino: l.Ino, Mode: syscall.S_IFLNK},
		{Name: "sub", Ino: sub.Ino, Mode: syscall.S_IFDIR},
	}
	if len(ents) != len(want) {
		t.Fatalf("ReadDir = %+v", ents)
	}
	for i := range want {
		if ents[i].Name != want[i].Name || ents[i].Mode != want[i].Mode || (want[i].Ino != 0 && ents[i].Ino != want[i].Ino) {
			t.Errorf("ReadDir[%d] = %+v, want %+v", i, ents[i], want[i])
		}
	}
	if n := names(t, db, meta.RootIno); !slices.Equal(n, []string{"bucket"}) {
		t.Errorf("root entries %q", n)
	}
	if ents, err := db.ReadDir(ctx, sub.Ino); err != nil || len(ents) != 0 {
		t.Errorf("empty ReadDir = %v, %v", ents, err)
	}
	// Buckets are independent: a second one gets its own name.
	b2 := mkdir(t, db, meta.RootIno, "other")
	if f2 := mkfile(t, db, b2.Ino, "file"); f2.Bucket != "other" {
		t.Errorf("file in other bucket = %+v", f2)
	}
}

func testCreateErrors(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	reg := meta.Inode{Mode: syscall.S_IFREG | 0o644}
	_, err := db.Create(ctx, b.Ino, "f", reg)
	wantErr(t, "create existing", err, meta.ErrExist)
	_, err = db.Create(ctx, b.Ino, "f", meta.Inode{Mode: syscall.S_IFDIR | 0o755})
	wantErr(t, "mkdir over file", err, meta.ErrExist)
	_, err = db.Create(ctx, 9999, "x", reg)
	wantErr(t, "create in missing parent", err, meta.ErrNotFound)
	_, err = db.Create(ctx, f.Ino, "x", reg)
	wantErr(t, "create in file", err, meta.ErrNotDir)
	_, err = db.Create(ctx, b.Ino, "nomode", meta.Inode{Mode: 0o644})
	wantErr(t, "create without type", err, meta.ErrInvalid)
	for _, name := range []string{"", ".", "..", "a/b", "/", "nul\x00", strings.Repeat("x", 256)} {
		_, err := db.Create(ctx, b.Ino, name, reg)
		wantErr(t, "create "+name[:min(len(name), 10)], err, meta.ErrInvalid)
		_, err = db.Lookup(ctx, b.Ino, name)
		wantErr(t, "lookup "+name[:min(len(name), 10)], err, meta.ErrInvalid)
	}
	_, err = db.Create(ctx, b.Ino, strings.Repeat("x", 256), reg)
	wantErr(t, "create 256-byte name", err, meta.ErrNameTooLong)
	if _, err := db.Create(ctx, b.Ino, strings.Repeat("x", 255), reg); err != nil {
		t.Errorf("create 255-byte name: %v", err)
	}
	_, err = db.Lookup(ctx, b.Ino, "missing")
	wantErr(t, "lookup missing", err, meta.ErrNotFound)
	_, err = db.Lookup(ctx, 9999, "missing")
	wantErr(t, "lookup in missing dir", err, meta.ErrNotFound)
	_, err = db.Lookup(ctx, f.Ino, "x")
	wantErr(t, "lookup in file", err, meta.ErrNotDir)
	_, err = db.ReadDir(ctx, f.Ino)
	wantErr(t, "readdir file", err, meta.ErrNotDir)
	_, err = db.ReadDir(ctx, 9999)
	wantErr(t, "readdir missing", err, meta.ErrNotFound)
	_, err = db.Get(ctx, 9999)
	wantErr(t, "get missing", err, meta.ErrNotFound)
	if err != nil && !strings.HasPrefix(err.Error(), "meta: get 9999") {
		t.Errorf("error message %q does not name op and inode", err)
	}
}

func testDirNlink(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	d1 := mkdir(t, db, b.Ino, "d1")
	mkdir(t, db, b.Ino, "d2")
	mkfile(t, db, b.Ino, "f") // files do not count
	wantNlink(t, db, b.Ino, 4)
	d3 := mkdir(t, db, d1.Ino, "d3")
	wantNlink(t, db, d1.Ino, 3)
	wantNlink(t, db, d3.Ino, 2)
	if err := db.Rmdir(ctx, d1.Ino, "d3", t0+1); err != nil {
		t.Fatal(err)
	}
	d1 = get(t, db, d1.Ino)
	if d1.Nlink != 2 || d1.Mtime != t0+1 || d1.Ctime != t0+1 {
		t.Errorf("d1 after rmdir = %+v", d1)
	}
	if err := db.Rmdir(ctx, b.Ino, "d2", t0); err != nil {
		t.Fatal(err)
	}
	wantNlink(t, db, b.Ino, 3)
	wantNlink(t, db, meta.RootIno, 3)
}

func testHardLinksAndOrphans(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	d := mkdir(t, db, b.Ino, "d")
	f := mkfile(t, db, b.Ino, "f")
	in, err := db.Link(ctx, f.Ino, d.Ino, "g", t0+5)
	if err != nil {
		t.Fatal(err)
	}
	if in.Nlink != 2 || in.Ctime != t0+5 {
		t.Errorf("after link: %+v", in)
	}
	if dd := get(t, db, d.Ino); dd.Mtime != t0+5 || dd.Nlink != 2 {
		t.Errorf("link target dir = %+v", dd)
	}
	if g, err := db.Lookup(ctx, d.Ino, "g"); err != nil || g.Ino != f.Ino {
		t.Errorf("lookup link: %v, %v", g, err)
	}
	_, err = db.Link(ctx, d.Ino, b.Ino, "dlink", t0)
	wantErr(t, "link directory", err, meta.ErrIsDir)
	_, err = db.Link(ctx, f.Ino, b.Ino, "d", t0)
	wantErr(t, "link over existing", err, meta.ErrExist)
	_, err = db.Link(ctx, 9999, b.Ino, "x", t0)
	wantErr(t, "link missing", err, meta.ErrNotFound)
	_, err = db.Link(ctx, f.Ino, f.Ino, "x", t0)
	wantErr(t, "link into file", err, meta.ErrNotDir)
	other := mkdir(t, db, meta.RootIno, "other")
	_, err = db.Link(ctx, f.Ino, other.Ino, "x", t0)
	wantErr(t, "link across buckets", err, meta.ErrCrossBucket)
	_, err = db.Link(ctx, f.Ino, meta.RootIno, "x", t0)
	wantErr(t, "link into root", err, meta.ErrCrossBucket)

	in, err = db.Unlink(ctx, b.Ino, "f", t0+6)
	if err != nil {
		t.Fatal(err)
	}
	if in.Nlink != 1 || in.Ctime != t0+6 {
		t.Errorf("after first unlink: %+v", in)
	}
	if o, _ := db.Orphans(ctx); len(o) != 0 {
		t.Errorf("orphans with a link left: %v", o)
	}
	_, err = db.Release(ctx, f.Ino)
	wantErr(t, "release linked file", err, meta.ErrInvalid)
	in, err = db.Unlink(ctx, d.Ino, "g", t0+7)
	if err != nil {
		t.Fatal(err)
	}
	if in.Nlink != 0 {
		t.Errorf("after last unlink: %+v", in)
	}
	// The orphan stays readable for open handles.
	if got := get(t, db, f.Ino); got.Nlink != 0 || got.KeyID != "k1" {
		t.Errorf("orphan = %+v", got)
	}
	orphans, err := db.Orphans(ctx)
	if err != nil || !slices.Equal(orphans, []meta.Ino{f.Ino}) {
		t.Errorf("Orphans = %v, %v", orphans, err)
	}
	_, err = db.Link(ctx, f.Ino, b.Ino, "back", t0)
	wantErr(t, "link orphan", err, meta.ErrNotFound)
	if err := db.SetXattr(ctx, f.Ino, "user.x", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	freed, err := db.Release(ctx, f.Ino)
	if err != nil || len(freed) != 0 {
		t.Fatalf("Release = %v, %v", freed, err)
	}
	_, err = db.Get(ctx, f.Ino)
	wantErr(t, "get released", err, meta.ErrNotFound)
	_, err = db.Release(ctx, f.Ino)
	wantErr(t, "release twice", err, meta.ErrNotFound)
	if o, _ := db.Orphans(ctx); len(o) != 0 {
		t.Errorf("orphans after release: %v", o)
	}
	// A symlink is orphaned and released the same way.
	l, err := db.Create(ctx, b.Ino, "l", meta.Inode{Mode: syscall.S_IFLNK | 0o777, Target: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Unlink(ctx, b.Ino, "l", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Release(ctx, l.Ino); err != nil {
		t.Fatal(err)
	}
}

func testUnlinkRmdir(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	d := mkdir(t, db, b.Ino, "d")
	mkfile(t, db, d.Ino, "f")
	_, err := db.Unlink(ctx, b.Ino, "d", t0)
	wantErr(t, "unlink dir", err, meta.ErrIsDir)
	err = db.Rmdir(ctx, d.Ino, "f", t0)
	wantErr(t, "rmdir file", err, meta.ErrNotDir)
	err = db.Rmdir(ctx, b.Ino, "d", t0)
	wantErr(t, "rmdir non-empty", err, meta.ErrNotEmpty)
	err = db.Rmdir(ctx, b.Ino, "missing", t0)
	wantErr(t, "rmdir missing", err, meta.ErrNotFound)
	_, err = db.Unlink(ctx, b.Ino, "missing", t0)
	wantErr(t, "unlink missing", err, meta.ErrNotFound)
	_, err = db.Unlink(ctx, 9999, "x", t0)
	wantErr(t, "unlink in missing dir", err, meta.ErrNotFound)
	if _, err := db.Unlink(ctx, d.Ino, "f", t0); err != nil {
		t.Fatal(err)
	}
	if err := db.SetXattr(ctx, d.Ino, "user.key", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Rmdir(ctx, b.Ino, "d", t0+3); err != nil {
		t.Fatal(err)
	}
	_, err = db.Get(ctx, d.Ino)
	wantErr(t, "get removed dir", err, meta.ErrNotFound)
	_, err = db.GetXattr(ctx, d.Ino, "user.key")
	wantErr(t, "xattr of removed dir", err, meta.ErrNotFound)
	if bb := get(t, db, b.Ino); bb.Nlink != 2 || bb.Mtime != t0+3 {
		t.Errorf("bucket after rmdir = %+v", bb)
	}
	// An empty bucket can be removed from the root.
	if err := db.Rmdir(ctx, meta.RootIno, "b", t0); err != nil {
		t.Fatal(err)
	}
	wantNlink(t, db, meta.RootIno, 2)
}

func rename(t *testing.T, db *meta.DB, op meta.Ino, on string, np meta.Ino, nn string, flags uint32) (*meta.Inode, error) {
	t.Helper()
	return db.Rename(t.Context(), op, on, np, nn, flags, t0+100)
}

func testRename(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	d1 := mkdir(t, db, b.Ino, "d1")
	d2 := mkdir(t, db, b.Ino, "d2")

	t.Run("move file", func(t *testing.T) {
		f := mkfile(t, db, d1.Ino, "f")
		r, err := rename(t, db, d1.Ino, "f", d2.Ino, "g", 0)
		if err != nil || r != nil {
			t.Fatalf("Rename = %v, %v", r, err)
		}
		if _, err := db.Lookup(ctx, d1.Ino, "f"); !errors.Is(err, meta.ErrNotFound) {
			t.Errorf("old name: %v", err)
		}
		g, err := db.Lookup(ctx, d2.Ino, "g")
		if err != nil || g.Ino != f.Ino || g.Ctime != t0+100 || g.Nlink != 1 {
			t.Errorf("new name: %+v, %v", g, err)
		}
		for _, p := range []meta.Ino{d1.Ino, d2.Ino} {
			if in := get(t, db, p); in.Mtime != t0+100 || in.Ctime != t0+100 {
				t.Errorf("parent %d times %+v", p, in)
			}
		}
		if _, err := db.Unlink(ctx, d2.Ino, "g", t0); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Release(ctx, f.Ino); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("replace file", func(t *testing.T) {
		src := mkfile(t, db, d1.Ino, "src")
		dst := mkfile(t, db, d2.Ino, "dst")
		r, err := rename(t, db, d1.Ino, "src", d2.Ino, "dst", 0)
		if err != nil {
			t.Fatal(err)
		}
		if r == nil || r.Ino != dst.Ino || r.Nlink != 0 || r.Ctime != t0+100 {
			t.Fatalf("replaced = %+v", r)
		}
		if o, _ := db.Orphans(ctx); !slices.Contains(o, dst.Ino) {
			t.Errorf("replaced file not orphaned: %v", o)
		}
		if got, _ := db.Lookup(ctx, d2.Ino, "dst"); got == nil || got.Ino != src.Ino {
			t.Errorf("dst now %+v", got)
		}
		if _, err := db.Release(ctx, dst.Ino); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Unlink(ctx, d2.Ino, "dst", t0); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Release(ctx, src.Ino); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("replace hard-linked file", func(t *testing.T) {
		mkfile(t, db, d1.Ino, "src")
		dst := mkfile(t, db, d2.Ino, "dst")
		if _, err := db.Link(ctx, dst.Ino, d2.Ino, "dst2", t0); err != nil {
			t.Fatal(err)
		}
		r, err := rename(t, db, d1.Ino, "src", d2.Ino, "dst", 0)
		if err != nil || r == nil || r.Nlink != 1 {
			t.Fatalf("Rename = %+v, %v", r, err)
		}
		if o, _ := db.Orphans(ctx); slices.Contains(o, dst.Ino) {
			t.Errorf("file with a link left is orphaned")
		}
		for _, n := range []string{"dst", "dst2"} {
			in, _ := db.Unlink(ctx, d2.Ino, n, t0)
			if in.Nlink == 0 {
				if _, err := db.Release(ctx, in.Ino); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
	t.Run("two names of one inode", func(t *testing.T) {
		f := mkfile(t, db, d1.Ino, "a")
		if _, err := db.Link(ctx, f.Ino, d1.Ino, "b", t0); err != nil {
			t.Fatal(err)
		}
		if r, err := rename(t, db, d1.Ino, "a", d1.Ino, "b", 0); err != nil || r != nil {
			t.Fatalf("Rename = %v, %v", r, err)
		}
		if n := names(t, db, d1.Ino); !slices.Equal(n, []string{"a", "b"}) {
			t.Errorf("entries %q, want both names kept", n)
		}
		wantNlink(t, db, f.Ino, 2)
		db.Unlink(ctx, d1.Ino, "a", t0)
		db.Unlink(ctx, d1.Ino, "b", t0)
		if _, err := db.Release(ctx, f.Ino); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("same name", func(t *testing.T) {
		f := mkfile(t, db, d1.Ino, "same")
		if r, err := rename(t, db, d1.Ino, "same", d1.Ino, "same", 0); err != nil || r != nil {
			t.Fatalf("Rename = %v, %v", r, err)
		}
		if got := get(t, db, f.Ino); got.Ctime != t0 {
			t.Errorf("no-op rename changed ctime: %+v", got)
		}
		_, err := rename(t, db, d1.Ino, "same", d1.Ino, "same", meta.RenameNoReplace)
		wantErr(t, "same name with NoReplace", err, meta.ErrExist)
		db.Unlink(ctx, d1.Ino, "same", t0)
		db.Release(ctx, f.Ino)
	})
	t.Run("replace empty dir", func(t *testing.T) {
		src := mkdir(t, db, d1.Ino, "sdir")
		mkfile(t, db, src.Ino, "inside")
		dst := mkdir(t, db, d2.Ino, "ddir")
		if err := db.SetXattr(ctx, dst.Ino, "user.a", nil, 0); err != nil {
			t.Fatal(err)
		}
		wantNlink(t, db, d1.Ino, 3)
		wantNlink(t, db, d2.Ino, 3)
		r, err := rename(t, db, d1.Ino, "sdir", d2.Ino, "ddir", 0)
		if err != nil {
			t.Fatal(err)
		}
		if r == nil || r.Ino != dst.Ino || r.Nlink != 0 {
			t.Errorf("replaced = %+v", r)
		}
		_, err = db.Get(ctx, dst.Ino)
		wantErr(t, "replaced dir", err, meta.ErrNotFound)
		wantNlink(t, db, d1.Ino, 2)
		wantNlink(t, db, d2.Ino, 3)
		moved := get(t, db, src.Ino)
		if moved.Parent != d2.Ino || moved.Ctime != t0+100 {
			t.Errorf("moved dir = %+v", moved)
		}
		if n := names(t, db, src.Ino); !slices.Equal(n, []string{"inside"}) {
			t.Errorf("moved dir entries %q", n)
		}
		// Move it back within one parent and rename: parent nlink unchanged.
		if _, err := rename(t, db, d2.Ino, "ddir", d2.Ino, "renamed", 0); err != nil {
			t.Fatal(err)
		}
		wantNlink(t, db, d2.Ino, 3)
	})
	t.Run("non-empty dir target", func(t *testing.T) {
		mkdir(t, db, d1.Ino, "x")
		full := mkdir(t, db, d2.Ino, "full")
		mkfile(t, db, full.Ino, "f")
		_, err := rename(t, db, d1.Ino, "x", d2.Ino, "full", 0)
		wantErr(t, "rename over non-empty dir", err, meta.ErrNotEmpty)
	})
	t.Run("type mismatch", func(t *testing.T) {
		mkdir(t, db, d1.Ino, "adir")
		mkfile(t, db, d1.Ino, "afile")
		_, err := rename(t, db, d1.Ino, "adir", d1.Ino, "afile", 0)
		wantErr(t, "dir over file", err, meta.ErrNotDir)
		_, err = rename(t, db, d1.Ino, "afile", d1.Ino, "adir", 0)
		wantErr(t, "file over dir", err, meta.ErrIsDir)
	})
	t.Run("own subtree", func(t *testing.T) {
		top := mkdir(t, db, d1.Ino, "top")
		mid := mkdir(t, db, top.Ino, "mid")
		low := mkdir(t, db, mid.Ino, "low")
		_, err := rename(t, db, d1.Ino, "top", low.Ino, "top", 0)
		wantErr(t, "into own subtree", err, meta.ErrInvalid)
		_, err = rename(t, db, d1.Ino, "top", top.Ino, "self", 0)
		wantErr(t, "into itself", err, meta.ErrInvalid)
		_, err = rename(t, db, top.Ino, "mid", low.Ino, "x", meta.RenameExchange)
		wantErr(t, "exchange into own subtree", err, meta.ErrNotFound)
		// Moving a deep directory up is fine.
		if _, err := rename(t, db, mid.Ino, "low", d1.Ino, "low", 0); err != nil {
			t.Fatal(err)
		}
		if got := get(t, db, low.Ino); got.Parent != d1.Ino {
			t.Errorf("low parent %d", got.Parent)
		}
		wantNlink(t, db, mid.Ino, 2)
	})
	t.Run("noreplace", func(t *testing.T) {
		mkfile(t, db, d1.Ino, "n1")
		mkfile(t, db, d1.Ino, "n2")
		_, err := rename(t, db, d1.Ino, "n1", d1.Ino, "n2", meta.RenameNoReplace)
		wantErr(t, "noreplace over existing", err, meta.ErrExist)
		if _, err := rename(t, db, d1.Ino, "n1", d1.Ino, "n3", meta.RenameNoReplace); err != nil {
			t.Errorf("noreplace to free name: %v", err)
		}
	})
	t.Run("errors", func(t *testing.T) {
		_, err := rename(t, db, d1.Ino, "missing", d2.Ino, "x", 0)
		wantErr(t, "missing source", err, meta.ErrNotFound)
		_, err = rename(t, db, d1.Ino, "n2", 9999, "x", 0)
		wantErr(t, "missing target dir", err, meta.ErrNotFound)
		_, err = rename(t, db, d1.Ino, "n2", d1.Ino, "x", meta.RenameNoReplace|meta.RenameExchange)
		wantErr(t, "both flags", err, meta.ErrInvalid)
		_, err = rename(t, db, d1.Ino, "n2", d1.Ino, "x", 4)
		wantErr(t, "unknown flag", err, meta.ErrInvalid)
		_, err = rename(t, db, d1.Ino, "n2", d1.Ino, strings.Repeat("y", 256), 0)
		wantErr(t, "long name", err, meta.ErrNameTooLong)
		_, err = rename(t, db, d1.Ino, "n2", d1.Ino, "..", 0)
		wantErr(t, "dot-dot", err, meta.ErrInvalid)
	})
	t.Run("cross bucket", func(t *testing.T) {
		other := mkdir(t, db, meta.RootIno, "other")
		_, err := rename(t, db, d1.Ino, "n2", other.Ino, "n2", 0)
		wantErr(t, "file to other bucket", err, meta.ErrCrossBucket)
		_, err = rename(t, db, b.Ino, "d1", other.Ino, "d1", 0)
		wantErr(t, "dir to other bucket", err, meta.ErrCrossBucket)
		_, err = rename(t, db, meta.RootIno, "other", meta.RootIno, "renamed", 0)
		wantErr(t, "rename bucket", err, meta.ErrCrossBucket)
		_, err = rename(t, db, b.Ino, "d1", meta.RootIno, "d1", 0)
		wantErr(t, "dir to root", err, meta.ErrCrossBucket)
		_, err = rename(t, db, meta.RootIno, "other", b.Ino, "other", 0)
		wantErr(t, "bucket into bucket", err, meta.ErrCrossBucket)
		_, err = rename(t, db, d1.Ino, "n2", other.Ino, "x", meta.RenameExchange)
		wantErr(t, "exchange across buckets", err, meta.ErrCrossBucket)
	})
}

func testRenameExchange(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	d1 := mkdir(t, db, b.Ino, "d1")
	d2 := mkdir(t, db, b.Ino, "d2")
	f := mkfile(t, db, d1.Ino, "f")
	sub := mkdir(t, db, d2.Ino, "sub")
	r, err := rename(t, db, d1.Ino, "f", d2.Ino, "sub", meta.RenameExchange)
	if err != nil || r != nil {
		t.Fatalf("exchange = %v, %v", r, err)
	}
	if got, _ := db.Lookup(ctx, d1.Ino, "f"); got == nil || got.Ino != sub.Ino {
		t.Errorf("d1/f = %+v", got)
	}
	if got, _ := db.Lookup(ctx, d2.Ino, "sub"); got == nil || got.Ino != f.Ino {
		t.Errorf("d2/sub = %+v", got)
	}
	if got := get(t, db, sub.Ino); got.Parent != d1.Ino || got.Ctime != t0+100 {
		t.Errorf("exchanged dir = %+v", got)
	}
	if got := get(t, db, f.Ino); got.Ctime != t0+100 {
		t.Errorf("exchanged file = %+v", got)
	}
	wantNlink(t, db, d1.Ino, 3)
	wantNlink(t, db, d2.Ino, 2)
	ents, _ := db.ReadDir(ctx, d1.Ino)
	if len(ents) != 1 || ents[0].Mode != syscall.S_IFDIR {
		t.Errorf("d1 entries %+v", ents)
	}
	_, err = rename(t, db, d1.Ino, "f", d2.Ino, "missing", meta.RenameExchange)
	wantErr(t, "exchange with missing", err, meta.ErrNotFound)
	// Two directories in one parent swap names; nlink unchanged.
	mkdir(t, db, d1.Ino, "g")
	if _, err := rename(t, db, d1.Ino, "f", d1.Ino, "g", meta.RenameExchange); err != nil {
		t.Fatal(err)
	}
	wantNlink(t, db, d1.Ino, 4)
	// Exchanging a directory with its own ancestor is refused both ways.
	inner := mkdir(t, db, sub.Ino, "inner")
	_, err = rename(t, db, sub.Ino, "inner", d1.Ino, "g", meta.RenameExchange)
	wantErr(t, "exchange with ancestor", err, meta.ErrInvalid)
	_, err = rename(t, db, d1.Ino, "g", sub.Ino, "inner", meta.RenameExchange)
	wantErr(t, "exchange with descendant", err, meta.ErrInvalid)
	_ = inner
}

var errStop = errors.New("stop here")

func testUpdate(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	in, err := db.Update(ctx, f.Ino, func(in *meta.Inode) error {
		in.Mode = 0o600 // permission bits only: the type is kept
		in.Uid, in.Gid = 7, 8
		in.Size = 12345
		in.Atime, in.Mtime, in.Ctime = 1, 2, 3
		in.KeyID, in.KeyName, in.WrappedKey = "k2", "pykmip-k2", []byte("rewrapped")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := get(t, db, f.Ino)
	for _, g := range []*meta.Inode{in, got} {
		if g.Mode != syscall.S_IFREG|0o600 || g.Uid != 7 || g.Gid != 8 || g.Size != 12345 || g.Atime != 1 ||
			g.Mtime != 2 || g.Ctime != 3 || g.KeyID != "k2" || string(g.WrappedKey) != "rewrapped" || g.FileID != f.FileID {
			t.Errorf("after update: %+v", g)
		}
	}
	_, err = db.Update(ctx, f.Ino, func(in *meta.Inode) error { return errStop })
	if err != errStop {
		t.Errorf("fn error returned as %v", err)
	}
	for name, fn := range map[string]func(*meta.Inode){
		"ino":    func(in *meta.Inode) { in.Ino++ },
		"nlink":  func(in *meta.Inode) { in.Nlink = 5 },
		"parent": func(in *meta.Inode) { in.Parent = 3 },
		"bucket": func(in *meta.Inode) { in.Bucket = "x" },
		"type":   func(in *meta.Inode) { in.Mode = syscall.S_IFDIR | 0o755 },
	} {
		_, err := db.Update(ctx, f.Ino, func(in *meta.Inode) error { fn(in); return nil })
		wantErr(t, "update "+name, err, meta.ErrInvalid)
	}
	if g := get(t, db, f.Ino); g.Uid != 7 || g.Nlink != 1 {
		t.Errorf("refused update changed the inode: %+v", g)
	}
	_, err = db.Update(ctx, 9999, func(*meta.Inode) error { return nil })
	wantErr(t, "update missing", err, meta.ErrNotFound)
}

func testUpdateRetriesOnConflict(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	calls := 0
	in, err := db.Update(ctx, f.Ino, func(in *meta.Inode) error {
		calls++
		if calls == 1 {
			// A concurrent change commits after this transaction read the
			// inode, so its commit conflicts and fn runs again on the new
			// state.
			if _, err := db.Update(ctx, f.Ino, func(in *meta.Inode) error { in.Uid = 42; return nil }); err != nil {
				return err
			}
		}
		in.Gid = 43
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Errorf("fn ran %d times, want 2", calls)
	}
	if in.Uid != 42 || in.Gid != 43 {
		t.Errorf("lost update: %+v", in)
	}
}

func testNextGen(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	for want := uint64(1); want <= 3; want++ {
		if g, err := db.NextGen(ctx, f.Ino); err != nil || g != want {
			t.Fatalf("NextGen = %d, %v; want %d", g, err, want)
		}
	}
	_, err := db.NextGen(ctx, b.Ino)
	wantErr(t, "NextGen on dir", err, meta.ErrInvalid)
	_, err = db.NextGen(ctx, 9999)
	wantErr(t, "NextGen on missing", err, meta.ErrNotFound)

	const workers, each = 8, 20
	var mu sync.Mutex
	seen := make(map[uint64]bool)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				g, err := db.NextGen(ctx, f.Ino)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[g] {
					t.Errorf("generation %d handed out twice", g)
				}
				seen[g] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if g := get(t, db, f.Ino).Gen; g != 3+workers*each {
		t.Errorf("Gen = %d, want %d", g, 3+workers*each)
	}
}

func testXattrs(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	buf := []byte("value")
	if err := db.SetXattr(ctx, f.Ino, "user.b", buf, 0); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXXX") // the stored value must not alias the caller's buffer
	if v, err := db.GetXattr(ctx, f.Ino, "user.b"); err != nil || string(v) != "value" {
		t.Errorf("GetXattr = %q, %v", v, err)
	}
	err := db.SetXattr(ctx, f.Ino, "user.b", []byte("x"), meta.XattrCreate)
	wantErr(t, "create existing", err, meta.ErrExist)
	err = db.SetXattr(ctx, f.Ino, "user.a", []byte("x"), meta.XattrReplace)
	wantErr(t, "replace missing", err, meta.ErrNotFound)
	if err := db.SetXattr(ctx, f.Ino, "user.b", []byte("v2"), meta.XattrReplace); err != nil {
		t.Errorf("replace existing: %v", err)
	}
	if err := db.SetXattr(ctx, f.Ino, "user.a", nil, meta.XattrCreate); err != nil {
		t.Errorf("create empty value: %v", err)
	}
	if v, err := db.GetXattr(ctx, f.Ino, "user.a"); err != nil || v == nil || len(v) != 0 {
		t.Errorf("empty value = %q (nil %v), %v", v, v == nil, err)
	}
	if err := db.SetXattr(ctx, f.Ino, "security.capability", []byte{0, 1, 2}, 0); err != nil {
		t.Error(err)
	}
	big := make([]byte, meta.MaxXattrSize)
	if err := db.SetXattr(ctx, f.Ino, "user.big", big, 0); err != nil {
		t.Errorf("64 KiB value: %v", err)
	}
	err = db.SetXattr(ctx, f.Ino, "user.big", make([]byte, meta.MaxXattrSize+1), 0)
	wantErr(t, "value too big", err, meta.ErrInvalid)
	err = db.SetXattr(ctx, f.Ino, "", []byte("x"), 0)
	wantErr(t, "empty name", err, meta.ErrInvalid)
	err = db.SetXattr(ctx, f.Ino, "user."+strings.Repeat("n", 251), []byte("x"), 0)
	wantErr(t, "long name", err, meta.ErrNameTooLong)
	err = db.SetXattr(ctx, f.Ino, "user.x", []byte("x"), 4)
	wantErr(t, "bad flags", err, meta.ErrInvalid)
	list, err := db.ListXattr(ctx, f.Ino)
	if want := []string{"security.capability", "user.a", "user.b", "user.big"}; err != nil || !slices.Equal(list, want) {
		t.Errorf("ListXattr = %q, %v; want %q", list, err, want)
	}
	if err := db.RemoveXattr(ctx, f.Ino, "user.a"); err != nil {
		t.Error(err)
	}
	err = db.RemoveXattr(ctx, f.Ino, "user.a")
	wantErr(t, "remove missing", err, meta.ErrNotFound)
	_, err = db.GetXattr(ctx, f.Ino, "user.a")
	wantErr(t, "get removed", err, meta.ErrNotFound)
	// Xattrs are per inode: another file sees none.
	g := mkfile(t, db, b.Ino, "g")
	if list, err := db.ListXattr(ctx, g.Ino); err != nil || len(list) != 0 {
		t.Errorf("ListXattr of other file = %q, %v", list, err)
	}
	_, err = db.GetXattr(ctx, 9999, "user.a")
	wantErr(t, "get on missing inode", err, meta.ErrNotFound)
	err = db.SetXattr(ctx, 9999, "user.a", nil, 0)
	wantErr(t, "set on missing inode", err, meta.ErrNotFound)
	_, err = db.ListXattr(ctx, 9999)
	wantErr(t, "list on missing inode", err, meta.ErrNotFound)
	// Directories carry xattrs too (the bucket key id).
	if err := db.SetXattr(ctx, b.Ino, "user.kmipfs.key-id", []byte("mybucketkey"), 0); err != nil {
		t.Error(err)
	}
}

func testConcurrentCreates(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	const workers, each = 16, 12
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				name := string(rune('a'+w)) + "-" + string(rune('a'+i))
				mode := uint32(syscall.S_IFREG | 0o644)
				if i%3 == 0 {
					mode = syscall.S_IFDIR | 0o755 // bumps the parent's nlink too
				}
				if _, err := db.Create(ctx, b.Ino, name, meta.Inode{Mode: mode, Ctime: t0}); err != nil {
					t.Errorf("create %s: %v", name, err)
					return
				}
			}
		})
	}
	// Everyone also races for one name: exactly one wins.
	var winners sync.Map
	for w := range workers {
		wg.Go(func() {
			_, err := db.Create(ctx, b.Ino, "contended", meta.Inode{Mode: syscall.S_IFREG | 0o644})
			switch {
			case err == nil:
				winners.Store(w, true)
			case !errors.Is(err, meta.ErrExist):
				t.Errorf("contended create: %v", err)
			}
		})
	}
	wg.Wait()
	n := 0
	winners.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Errorf("%d creators of one name succeeded", n)
	}
	ents, err := db.ReadDir(ctx, b.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != workers*each+1 {
		t.Errorf("%d entries, want %d", len(ents), workers*each+1)
	}
	inos := make(map[meta.Ino]bool)
	for _, e := range ents {
		if inos[e.Ino] {
			t.Errorf("inode %d used twice", e.Ino)
		}
		inos[e.Ino] = true
	}
	wantNlink(t, db, b.Ino, 2+workers*((each+2)/3))
	if inodes, _, err := db.Stats(ctx); err != nil || inodes != uint64(2+workers*each+1) {
		t.Errorf("Stats inodes = %d, %v; want %d", inodes, err, 2+workers*each+1)
	}
}

func testConcurrentUpdates(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	const workers, each = 8, 15
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if _, err := db.Update(ctx, f.Ino, func(in *meta.Inode) error { in.Size++; return nil }); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := get(t, db, f.Ino).Size; got != workers*each {
		t.Errorf("Size = %d after %d increments", got, workers*each)
	}
	if _, bytes, _ := db.Stats(ctx); bytes != workers*each {
		t.Errorf("Stats bytes = %d", bytes)
	}
}

func testStats(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	want := func(inodes, bytes uint64) {
		t.Helper()
		i, by, err := db.Stats(ctx)
		if err != nil || i != inodes || by != bytes {
			t.Errorf("Stats = %d, %d, %v; want %d, %d", i, by, err, inodes, bytes)
		}
	}
	want(1, 0)
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	g := mkfile(t, db, b.Ino, "g")
	want(4, 0)
	if _, _, err := db.CommitWrite(ctx, f.Ino, meta.Write{Object: "o1", Gen: 1, Blocks: []uint64{0, 1}},
		func(in *meta.Inode) error { in.Size = 2 * meta.BlockSize; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Update(ctx, g.Ino, func(in *meta.Inode) error { in.Size = 100; return nil }); err != nil {
		t.Fatal(err)
	}
	// Directory and symlink sizes do not count.
	if _, err := db.Update(ctx, b.Ino, func(in *meta.Inode) error { in.Size = 4096; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Create(ctx, b.Ino, "l", meta.Inode{Mode: syscall.S_IFLNK | 0o777, Target: "f", Size: 1}); err != nil {
		t.Fatal(err)
	}
	want(5, 2*meta.BlockSize+100)
	if _, err := db.Unlink(ctx, b.Ino, "f", t0); err != nil {
		t.Fatal(err)
	}
	want(5, 2*meta.BlockSize+100) // an orphan still holds its space
	if _, err := db.Release(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	want(4, 100)
	mkdir(t, db, b.Ino, "d")
	if err := db.Rmdir(ctx, b.Ino, "d", t0); err != nil {
		t.Fatal(err)
	}
	want(4, 100)
}

func testStatsFold(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	// Enough changes to start background folds of the counter deltas.
	const n = 700
	for i := range n {
		f, err := db.Create(ctx, b.Ino, "f"+string(rune('0'+i%10))+string(rune('a'+i/10%26))+string(rune('A'+i/260)),
			meta.Inode{Mode: syscall.S_IFREG | 0o644, Size: 3})
		if err != nil {
			t.Fatal(err)
		}
		_ = f
	}
	if inodes, bytes, err := db.Stats(ctx); err != nil || inodes != n+2 || bytes != 3*n {
		t.Errorf("Stats = %d, %d, %v; want %d, %d", inodes, bytes, err, n+2, 3*n)
	}
}

func testCancelled(t *testing.T, db *meta.DB) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := db.Create(ctx, meta.RootIno, "b", meta.Inode{Mode: syscall.S_IFDIR | 0o755})
	wantErr(t, "create", err, context.Canceled)
	_, err = db.Get(ctx, meta.RootIno)
	wantErr(t, "get", err, context.Canceled)
	_, err = db.Update(ctx, meta.RootIno, func(*meta.Inode) error { return nil })
	wantErr(t, "update", err, context.Canceled)
	_, _, err = db.Stats(ctx)
	wantErr(t, "stats", err, context.Canceled)
	if _, err := db.Lookup(t.Context(), meta.RootIno, "b"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("cancelled create happened: %v", err)
	}
}
