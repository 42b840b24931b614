package repair_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/kmipfs/kmipfs/crypt"
	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/kms/kmstest"
	"github.com/kmipfs/kmipfs/meta"
	"github.com/kmipfs/kmipfs/objstore"
	"github.com/kmipfs/kmipfs/objstore/mem"
	"github.com/kmipfs/kmipfs/repair"
)

const tmpl = "kmipfs-$keyid"

// fixture is a filesystem built directly in meta and a mem store, with keys in a real embedded
// KMIP server, the way fs lays files out.
type fixture struct {
	t     *testing.T
	ctx   context.Context
	db    *meta.DB
	store *mem.Store
	keys  *kms.Client
	kms   *kmstest.Env
}

func newFixture(t *testing.T) *fixture {
	k := kmstest.Start(t, nil)
	for _, id := range []string{"a", "b"} {
		k.CreateKey(t, kms.KeyName(tmpl, id))
	}
	db, err := meta.Open("", meta.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &fixture{t: t, ctx: t.Context(), db: db, store: mem.New(), keys: k.Client(t, nil), kms: k}
}

func (f *fixture) mkdir(parent meta.Ino, name, keyID string) *meta.Inode {
	f.t.Helper()
	in, err := f.db.Create(f.ctx, parent, name, meta.Inode{Mode: syscall.S_IFDIR | 0o755})
	if err != nil {
		f.t.Fatal(err)
	}
	if parent == meta.RootIno {
		if err := f.store.CreateBucket(f.ctx, name); err != nil {
			f.t.Fatal(err)
		}
	}
	if keyID != "" {
		if err := f.db.SetXattr(f.ctx, in.Ino, "user.kmipfs.key-id", []byte(keyID), 0); err != nil {
			f.t.Fatal(err)
		}
	}
	return in
}

// file creates a regular file under key id keyID with blocks nblocks, written in one object at
// generation 1, and returns the inode and the object key.
func (f *fixture) file(dir *meta.Inode, name, keyID string, nblocks int) (*meta.Inode, string) {
	f.t.Helper()
	keyName := kms.KeyName(tmpl, keyID)
	kek, err := f.keys.Secret(f.ctx, keyName)
	if err != nil {
		f.t.Fatal(err)
	}
	id, _ := crypt.NewFileID()
	dek, _ := crypt.NewDataKey()
	wrapped, err := crypt.WrapKey(kek, dek, id, keyName)
	if err != nil {
		f.t.Fatal(err)
	}
	in, err := f.db.Create(f.ctx, dir.Ino, name, meta.Inode{Mode: syscall.S_IFREG | 0o644, FileID: id, KeyID: keyID,
		KeyName: keyName, WrappedKey: wrapped})
	if err != nil {
		f.t.Fatal(err)
	}
	c, err := crypt.NewCipher(dek, id)
	if err != nil {
		f.t.Fatal(err)
	}
	var body []byte
	var blocks []uint64
	for b := 0; b < nblocks; b++ {
		body = c.SealBlock(body, []byte(fmt.Sprintf("block %d of %s", b, name)), uint64(b), 1)
		blocks = append(blocks, uint64(b))
	}
	obj := fmt.Sprintf("%s/%016x", id, 1)
	if err := f.store.Put(f.ctx, dir.Bucket, obj, body); err != nil {
		f.t.Fatal(err)
	}
	size := uint64(nblocks) * crypt.PlainBS
	in, _, err = f.db.CommitWrite(f.ctx, in.Ino, meta.Write{Object: obj, Gen: 1, Blocks: blocks},
		func(in *meta.Inode) error { in.Size, in.Gen = size, 1; return nil })
	if err != nil {
		f.t.Fatal(err)
	}
	return in, obj
}

func (f *fixture) check(repairOrphans bool) *repair.CheckReport {
	f.t.Helper()
	rep, err := repair.Check(f.ctx, repair.CheckOptions{Meta: f.db, Store: f.store, Keys: f.keys, Repair: repairOrphans})
	if err != nil {
		f.t.Fatal(err)
	}
	return rep
}

func lines(rep *repair.CheckReport) string {
	var out []string
	for _, p := range rep.Problems {
		out = append(out, p.String())
	}
	return strings.Join(out, "\n")
}

// TestCheckTamper covers what the untrusted store can do to a file: flip a bit, swap two blocks
// of an object, put back an older copy, cut an object, delete one; and the orphans it may hold.
func TestCheckTamper(t *testing.T) {
	f := newFixture(t)
	b := f.mkdir(meta.RootIno, "b", "a")
	_, flipObj := f.file(b, "flip", "a", 3)
	_, swapObj := f.file(b, "swap", "a", 3)
	_, cutObj := f.file(b, "cut", "a", 3)
	_, goneObj := f.file(b, "gone", "a", 2)
	f.file(b, "fine", "b", 4)
	if rep := f.check(false); !rep.Clean() || rep.Files != 5 || rep.Blocks != 15 {
		t.Fatalf("clean tree: %+v\n%s", rep, lines(rep))
	}

	get := func(obj string) []byte {
		v, err := f.store.Get(f.ctx, "b", obj, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	put := func(obj string, v []byte) {
		if err := f.store.Put(f.ctx, "b", obj, v); err != nil {
			t.Fatal(err)
		}
	}
	v := get(flipObj)
	v[2*crypt.CipherBS+7] ^= 0x80
	put(flipObj, v)
	v = get(swapObj)
	s0 := slices.Clone(v[:crypt.CipherBS])
	copy(v[:crypt.CipherBS], v[crypt.CipherBS:2*crypt.CipherBS])
	copy(v[crypt.CipherBS:2*crypt.CipherBS], s0)
	put(swapObj, v)
	put(cutObj, get(cutObj)[:crypt.CipherBS+1])
	if err := f.store.Delete(f.ctx, "b", goneObj); err != nil {
		t.Fatal(err)
	}
	orphan := "00000000000000000000000000000001/0000000000000001"
	put(orphan, make([]byte, crypt.CipherBS))
	put("not-ours", []byte("x"))

	rep := f.check(false)
	want := []string{
		"short: /b/cut: object b/" + cutObj + " is 4125 bytes; blocks 1-2 are not whole in it",
		"damaged: /b/flip: blocks 2 fail authentication (object b/" + flipObj + ")",
		"missing: /b/gone: object b/" + goneObj + " of blocks 0-1 is not in the store",
		"damaged: /b/swap: blocks 0-1 fail authentication (object b/" + swapObj + ")",
		"orphan: object b/" + orphan + " (4124 bytes) belongs to no file",
	}
	if got := lines(rep); got != strings.Join(want, "\n") {
		t.Fatalf("problems:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if rep.Damaged != 4 || rep.Orphans != 1 || rep.Removed != 0 {
		t.Fatalf("counts: %+v", rep)
	}

	rep = f.check(true)
	if rep.Removed != 1 {
		t.Fatalf("repair removed %d", rep.Removed)
	}
	if _, err := f.store.Stat(f.ctx, "b", orphan); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("orphan after repair: %v", err)
	}
	if _, err := f.store.Stat(f.ctx, "b", "not-ours"); err != nil {
		t.Fatalf("repair touched a key that is not kmipfs's: %v", err)
	}
	if rep := f.check(false); rep.Orphans != 0 || rep.Damaged != 4 {
		t.Fatalf("after repair: %+v", rep)
	}
}

// TestCheckKeyAndGC: a file whose KMIP key is gone is a key problem; an object queued for GC is
// not an orphan; a KMIP outage is an error, not a problem.
func TestCheckKeyAndGC(t *testing.T) {
	f := newFixture(t)
	b := f.mkdir(meta.RootIno, "b", "a")
	in, _ := f.file(b, "f", "a", 1)
	// Overwrite block 0: the first object is now on the GC queue, still in the store.
	if _, freed, err := f.db.CommitWrite(f.ctx, in.Ino, meta.Write{Truncate: true}, nil); err != nil || len(freed) != 1 {
		t.Fatalf("truncate: %v %v", freed, err)
	}
	if rep := f.check(false); !rep.Clean() {
		t.Fatalf("GC-queued object reported:\n%s", lines(rep))
	}
	if _, err := f.db.Update(f.ctx, in.Ino, func(in *meta.Inode) error { in.KeyName = "kmipfs-gone"; return nil }); err != nil {
		t.Fatal(err)
	}
	f.file(b, "g", "a", 1)
	if _, err := f.db.Update(f.ctx, in.Ino+1, func(in *meta.Inode) error { in.KeyName = "kmipfs-gone"; return nil }); err != nil {
		t.Fatal(err)
	}
	// Both are key problems, also f, which has no block stored: it cannot be opened either.
	rep := f.check(false)
	if len(rep.Problems) != 2 || rep.Damaged != 2 || !strings.HasPrefix(rep.Problems[0].String(), `key: /b/f: the data key cannot be unwrapped, no block is readable: KMIP key "kmipfs-gone"`) ||
		!strings.HasPrefix(rep.Problems[1].String(), "key: /b/g: ") {
		t.Fatalf("want key problems for /b/f and /b/g:\n%s", lines(rep))
	}
	// A KMIP outage is not a problem of the files: Check fails.
	f.kms.Stop(t)
	if _, err := repair.Check(f.ctx, repair.CheckOptions{Meta: f.db, Store: f.store, Keys: f.keys}); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("check with KMIP down: %v", err)
	}
}

// TestRekey re-keys a tree twice (the second run skips everything), keeps files outside the path
// and on other keys, and refuses an unknown new key before changing anything.
func TestRekey(t *testing.T) {
	f := newFixture(t)
	b := f.mkdir(meta.RootIno, "b", "a")
	sub := f.mkdir(b.Ino, "sub", "a")
	other := f.mkdir(meta.RootIno, "o", "a")
	var files []*meta.Inode
	for i := 0; i < 5; i++ {
		in, _ := f.file(sub, fmt.Sprintf("f%d", i), "a", 1)
		files = append(files, in)
	}
	onB, _ := f.file(b, "on-b", "b", 1)
	outside, _ := f.file(other, "x", "a", 1)
	opts := repair.RekeyOptions{Meta: f.db, Keys: f.keys, Template: tmpl, From: "a", To: "b", Path: "/b"}

	bad := opts
	bad.To = "nope"
	if _, err := repair.Rekey(f.ctx, bad); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("unknown new key: %v", err)
	}
	if in, _ := f.db.Get(f.ctx, files[0].Ino); in.KeyName != "kmipfs-a" {
		t.Fatal("changed by a refused rekey")
	}

	var progress []int
	opts.Progress = func(done, total int) { progress = append(progress, done*100+total) }
	rep, err := repair.Rekey(f.ctx, opts)
	if err != nil || rep.Files != 5 || rep.Skipped != 1 || rep.Dirs != 2 || rep.Failed != 0 {
		t.Fatalf("rekey: %+v %v", rep, err)
	}
	if len(progress) != 6 || progress[5] != 606 {
		t.Fatalf("progress %v", progress)
	}
	rep, err = repair.Rekey(f.ctx, opts)
	if err != nil || rep.Files != 0 || rep.Skipped != 6 || rep.Dirs != 0 {
		t.Fatalf("second rekey: %+v %v", rep, err)
	}
	for _, in := range append(files, onB) {
		got, _ := f.db.Get(f.ctx, in.Ino)
		if got.KeyID != "b" || got.KeyName != "kmipfs-b" {
			t.Fatalf("%d: %q %q", in.Ino, got.KeyID, got.KeyName)
		}
	}
	if got, _ := f.db.Get(f.ctx, outside.Ino); got.KeyName != "kmipfs-a" {
		t.Fatal("file outside PATH re-keyed")
	}
	if v, _ := f.db.GetXattr(f.ctx, other.Ino, "user.kmipfs.key-id"); string(v) != "a" {
		t.Fatal("directory outside PATH changed")
	}
	if v, _ := f.db.GetXattr(f.ctx, sub.Ino, "user.kmipfs.key-id"); string(v) != "b" {
		t.Fatalf("sub key id %q", v)
	}
	// The data still authenticates under the new key: fsck of the whole tree is clean.
	if rep := f.check(false); !rep.Clean() {
		t.Fatalf("after rekey:\n%s", lines(rep))
	}
}
