package meta_test

import (
	"syscall"
	"testing"

	"github.com/kmipfs/kmipfs/meta"
)

// testCommitWriteHoles punches holes into an extent map (fallocate PUNCH_HOLE and ZERO_RANGE):
// extents are split, live-block counts follow, an object whose blocks are all punched is freed,
// and new blocks in the same commit win over the holes.
func testCommitWriteHoles(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	commit(t, db, f.Ino, meta.Write{Object: "A", Gen: 1, Blocks: blocks(0, 8)})
	commit(t, db, f.Ino, meta.Write{Object: "B", Gen: 2, Blocks: blocks(8, 10)})
	freed := commit(t, db, f.Ino, meta.Write{Holes: []meta.BlockRange{{Block: 2, Count: 1}, {Block: 5, Count: 2}}})
	wantFreed(t, "punch inside A", freed, nil)
	wantExtents(t, db, f.Ino, []meta.Extent{
		{Block: 0, Count: 2, Object: "A", Slot: 0, Gen: 1},
		{Block: 3, Count: 2, Object: "A", Slot: 3, Gen: 1},
		{Block: 7, Count: 1, Object: "A", Slot: 7, Gen: 1},
		{Block: 8, Count: 2, Object: "B", Slot: 0, Gen: 2},
	})
	// A hole over all of B frees it; a hole past the end of the map drops nothing.
	freed = commit(t, db, f.Ino, meta.Write{Holes: []meta.BlockRange{{Block: 8, Count: 2}, {Block: 100, Count: 5}}})
	wantFreed(t, "punch all of B", freed, refs("b", "B"))
	// Blocks written in the same commit as a hole over them are kept (a write after the punch,
	// flushed together).
	freed = commit(t, db, f.Ino, meta.Write{Object: "C", Gen: 3, Blocks: []uint64{1}, Holes: []meta.BlockRange{{Block: 0, Count: 4}}})
	wantFreed(t, "punch and write", freed, nil)
	wantExtents(t, db, f.Ino, []meta.Extent{
		{Block: 1, Count: 1, Object: "C", Slot: 0, Gen: 3},
		{Block: 4, Count: 1, Object: "A", Slot: 4, Gen: 1},
		{Block: 7, Count: 1, Object: "A", Slot: 7, Gen: 1},
	})
	// Truncate and holes together.
	freed = commit(t, db, f.Ino, meta.Write{Truncate: true, KeepBlocks: 5, Holes: []meta.BlockRange{{Block: 4, Count: 1}}})
	wantFreed(t, "truncate and punch", freed, refs("b", "A"))
	wantExtents(t, db, f.Ino, []meta.Extent{{Block: 1, Count: 1, Object: "C", Slot: 0, Gen: 3}})

	for _, w := range []meta.Write{
		{Holes: []meta.BlockRange{{Block: 3, Count: 0}}},
		{Holes: []meta.BlockRange{{Block: 5, Count: 2}, {Block: 6, Count: 1}}},
		{Holes: []meta.BlockRange{{Block: 5, Count: 1}, {Block: 1, Count: 1}}},
		{Holes: []meta.BlockRange{{Block: meta.MaxBlocks - 1, Count: 2}}},
		{Object: "D", Blocks: []uint64{1}, Gens: []uint64{3}, Compact: true, Holes: []meta.BlockRange{{Block: 0, Count: 1}}},
	} {
		_, _, err := db.CommitWrite(ctx, f.Ino, w, nil)
		wantErr(t, "bad holes", err, meta.ErrInvalid)
	}
}

// testCreateTmpLinkOrphan covers O_TMPFILE: a file without a name that is an orphan from the
// start, can be given a name once, and is released like an unlinked file otherwise.
func testCreateTmpLinkOrphan(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	d := mkdir(t, db, b.Ino, "d")
	rec := meta.Inode{Mode: syscall.S_IFREG | 0o600, Ctime: t0, FileID: [16]byte{9}, KeyID: "k", KeyName: "n", WrappedKey: []byte("w")}
	tmp, err := db.CreateTmp(ctx, d.Ino, rec)
	if err != nil {
		t.Fatal(err)
	}
	if tmp.Nlink != 0 || tmp.Bucket != "b" || tmp.KeyID != "k" {
		t.Errorf("tmpfile = %+v", tmp)
	}
	if got := get(t, db, d.Ino); got.Mtime != d.Mtime {
		t.Errorf("CreateTmp changed the directory's mtime")
	}
	if o, _ := db.Orphans(ctx); len(o) != 1 || o[0] != tmp.Ino {
		t.Errorf("orphans = %v", o)
	}
	if names := names(t, db, d.Ino); len(names) != 0 {
		t.Errorf("tmpfile has a name: %v", names)
	}
	_, err = db.Link(ctx, tmp.Ino, d.Ino, "x", t0)
	wantErr(t, "Link of an orphan", err, meta.ErrNotFound)
	_, err = db.LinkOrphan(ctx, tmp.Ino, meta.RootIno, "x", t0)
	wantErr(t, "LinkOrphan into the root", err, meta.ErrCrossBucket)
	in, err := db.LinkOrphan(ctx, tmp.Ino, d.Ino, "named", t0+5)
	if err != nil {
		t.Fatal(err)
	}
	if in.Nlink != 1 || in.Ctime != t0+5 {
		t.Errorf("linked tmpfile = %+v", in)
	}
	if o, _ := db.Orphans(ctx); len(o) != 0 {
		t.Errorf("orphans after LinkOrphan = %v", o)
	}
	if got, err := db.Lookup(ctx, d.Ino, "named"); err != nil || got.Ino != tmp.Ino {
		t.Errorf("Lookup = %+v, %v", got, err)
	}
	_, err = db.LinkOrphan(ctx, tmp.Ino, d.Ino, "again", t0)
	wantErr(t, "LinkOrphan of a linked file", err, meta.ErrInvalid)

	// A tmpfile never linked is released like an unlinked file.
	tmp2, err := db.CreateTmp(ctx, b.Ino, rec)
	if err != nil {
		t.Fatal(err)
	}
	commit(t, db, tmp2.Ino, meta.Write{Object: "T", Gen: 1, Blocks: blocks(0, 2)})
	freed, err := db.Release(ctx, tmp2.Ino)
	if err != nil {
		t.Fatal(err)
	}
	wantFreed(t, "release tmpfile", freed, refs("b", "T"))

	_, err = db.CreateTmp(ctx, meta.RootIno, rec)
	wantErr(t, "CreateTmp at the root", err, meta.ErrCrossBucket)
	_, err = db.CreateTmp(ctx, b.Ino, meta.Inode{Mode: syscall.S_IFDIR | 0o755})
	wantErr(t, "CreateTmp of a directory", err, meta.ErrInvalid)
	_, err = db.CreateTmp(ctx, in.Ino, rec)
	wantErr(t, "CreateTmp in a file", err, meta.ErrNotDir)
}
