package meta_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/kmipfs/kmipfs/meta"
)

func blocks(from, to uint64) []uint64 {
	var out []uint64
	for b := from; b < to; b++ {
		out = append(out, b)
	}
	return out
}

func commit(t *testing.T, db *meta.DB, ino meta.Ino, w meta.Write) []meta.ObjectRef {
	t.Helper()
	_, freed, err := db.CommitWrite(t.Context(), ino, w, nil)
	if err != nil {
		t.Fatalf("CommitWrite %+v: %v", w, err)
	}
	return freed
}

func wantExtents(t *testing.T, db *meta.DB, ino meta.Ino, want []meta.Extent) {
	t.Helper()
	got, err := db.Extents(t.Context(), ino)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("extents\n got %+v\nwant %+v", got, want)
	}
}

func refs(bucket string, keys ...string) []meta.ObjectRef {
	var out []meta.ObjectRef
	for _, k := range keys {
		out = append(out, meta.ObjectRef{Bucket: bucket, Key: k})
	}
	return out
}

func wantFreed(t *testing.T, what string, got, want []meta.ObjectRef) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s: freed %v, want %v", what, got, want)
	}
}

func testCommitWriteSplitting(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	in, freed, err := db.CommitWrite(ctx, f.Ino, meta.Write{Object: "A", Gen: 1, Blocks: blocks(0, 10)},
		func(in *meta.Inode) error { in.Size = 10 * meta.BlockSize; in.Mtime = 9; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if in.Size != 10*meta.BlockSize || in.Mtime != 9 || len(freed) != 0 {
		t.Errorf("CommitWrite = %+v, %v", in, freed)
	}
	if got := get(t, db, f.Ino); got.Size != 10*meta.BlockSize {
		t.Errorf("size not committed: %+v", got)
	}
	wantExtents(t, db, f.Ino, []meta.Extent{{Block: 0, Count: 10, Object: "A", Slot: 0, Gen: 1}})

	// Overwrite the middle: A is split around B.
	wantFreed(t, "middle", commit(t, db, f.Ino, meta.Write{Object: "B", Gen: 2, Blocks: []uint64{3, 4}}), nil)
	wantExtents(t, db, f.Ino, []meta.Extent{
		{Block: 0, Count: 3, Object: "A", Slot: 0, Gen: 1},
		{Block: 3, Count: 2, Object: "B", Slot: 0, Gen: 2},
		{Block: 5, Count: 5, Object: "A", Slot: 5, Gen: 1},
	})

	// Overlap several extents at once: C covers A's tail, all of B, A's head.
	wantFreed(t, "overlap", commit(t, db, f.Ino, meta.Write{Object: "C", Gen: 3, Blocks: blocks(2, 7)}), refs("b", "B"))
	wantExtents(t, db, f.Ino, []meta.Extent{
		{Block: 0, Count: 2, Object: "A", Slot: 0, Gen: 1},
		{Block: 2, Count: 5, Object: "C", Slot: 0, Gen: 3},
		{Block: 7, Count: 3, Object: "A", Slot: 7, Gen: 1},
	})

	// Sparse blocks in one object: one extent per run, slots follow the
	// index in Blocks; a hole stays a hole.
	wantFreed(t, "sparse", commit(t, db, f.Ino, meta.Write{Object: "D", Gen: 4, Blocks: []uint64{12, 14, 15, 20}}), nil)
	wantExtents(t, db, f.Ino, []meta.Extent{
		{Block: 0, Count: 2, Object: "A", Slot: 0, Gen: 1},
		{Block: 2, Count: 5, Object: "C", Slot: 0, Gen: 3},
		{Block: 7, Count: 3, Object: "A", Slot: 7, Gen: 1},
		{Block: 12, Count: 1, Object: "D", Slot: 0, Gen: 4},
		{Block: 14, Count: 2, Object: "D", Slot: 1, Gen: 4},
		{Block: 20, Count: 1, Object: "D", Slot: 3, Gen: 4},
	})

	// ExtentsIn returns whole extents overlapping the range only.
	got, err := db.ExtentsIn(ctx, f.Ino, 8, 5)
	if err != nil {
		t.Fatal(err)
	}
	if want := []meta.Extent{
		{Block: 7, Count: 3, Object: "A", Slot: 7, Gen: 1},
		{Block: 12, Count: 1, Object: "D", Slot: 0, Gen: 4},
	}; !slices.Equal(got, want) {
		t.Errorf("ExtentsIn(8, 5) = %+v, want %+v", got, want)
	}
	if got, err := db.ExtentsIn(ctx, f.Ino, 10, 2); err != nil || len(got) != 0 {
		t.Errorf("ExtentsIn over a hole = %+v, %v", got, err)
	}

	// Overwrite everything with one object: every old one is freed, once.
	wantFreed(t, "all", commit(t, db, f.Ino, meta.Write{Object: "E", Gen: 5, Blocks: blocks(0, 21)}), refs("b", "A", "C", "D"))
	wantExtents(t, db, f.Ino, []meta.Extent{{Block: 0, Count: 21, Object: "E", Slot: 0, Gen: 5}})
	pending, err := db.PendingGC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := refs("b", "A", "B", "C", "D"); !slices.Equal(pending, want) {
		t.Errorf("PendingGC = %v, want %v", pending, want)
	}
	_, err = db.Extents(ctx, 9999)
	wantErr(t, "extents of missing inode", err, meta.ErrNotFound)
}

func testCommitWriteTruncate(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	commit(t, db, f.Ino, meta.Write{Object: "A", Gen: 1, Blocks: blocks(0, 8)})
	commit(t, db, f.Ino, meta.Write{Object: "B", Gen: 2, Blocks: blocks(8, 12)})
	// Truncate into A: B is freed, A trimmed.
	in, freed, err := db.CommitWrite(ctx, f.Ino, meta.Write{Truncate: true, KeepBlocks: 5},
		func(in *meta.Inode) error { in.Size = 5*meta.BlockSize - 10; return nil })
	if err != nil {
		t.Fatal(err)
	}
	wantFreed(t, "truncate", freed, refs("b", "B"))
	if in.Size != 5*meta.BlockSize-10 {
		t.Errorf("size %d", in.Size)
	}
	wantExtents(t, db, f.Ino, []meta.Extent{{Block: 0, Count: 5, Object: "A", Slot: 0, Gen: 1}})
	// Truncate and write in one commit (ftruncate then a write past the
	// old end, flushed together).
	freed = commit(t, db, f.Ino, meta.Write{Truncate: true, KeepBlocks: 2, Object: "C", Gen: 3, Blocks: []uint64{4, 5}})
	wantFreed(t, "truncate+write", freed, nil)
	wantExtents(t, db, f.Ino, []meta.Extent{
		{Block: 0, Count: 2, Object: "A", Slot: 0, Gen: 1},
		{Block: 4, Count: 2, Object: "C", Slot: 0, Gen: 3},
	})
	// Growing truncate drops nothing.
	wantFreed(t, "grow", commit(t, db, f.Ino, meta.Write{Truncate: true, KeepBlocks: 100}), nil)
	wantFreed(t, "to max", commit(t, db, f.Ino, meta.Write{Truncate: true, KeepBlocks: meta.MaxBlocks}), nil)
	// Truncate to zero frees everything.
	wantFreed(t, "zero", commit(t, db, f.Ino, meta.Write{Truncate: true}), refs("b", "A", "C"))
	wantExtents(t, db, f.Ino, nil)
	// A commit with no data and no truncate only runs fn.
	in, freed, err = db.CommitWrite(ctx, f.Ino, meta.Write{}, func(in *meta.Inode) error { in.Mtime = 77; return nil })
	if err != nil || in.Mtime != 77 || len(freed) != 0 {
		t.Errorf("empty commit = %+v, %v, %v", in, freed, err)
	}
}

func testCommitWriteErrors(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	l, err := db.Create(ctx, b.Ino, "l", meta.Inode{Mode: 0o120777, Target: "f"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ino  meta.Ino
		w    meta.Write
		want error
	}{
		{"unsorted", f.Ino, meta.Write{Object: "x", Blocks: []uint64{2, 1}}, meta.ErrInvalid},
		{"duplicate", f.Ino, meta.Write{Object: "x", Blocks: []uint64{1, 1}}, meta.ErrInvalid},
		{"no object", f.Ino, meta.Write{Blocks: []uint64{1}}, meta.ErrInvalid},
		{"no blocks", f.Ino, meta.Write{Object: "x"}, meta.ErrInvalid},
		{"block too large", f.Ino, meta.Write{Object: "x", Blocks: []uint64{meta.MaxBlocks}}, meta.ErrInvalid},
		{"keep too large", f.Ino, meta.Write{Truncate: true, KeepBlocks: meta.MaxBlocks + 1}, meta.ErrInvalid},
		{"directory", b.Ino, meta.Write{Object: "x", Blocks: []uint64{0}}, meta.ErrIsDir},
		{"symlink", l.Ino, meta.Write{Object: "x", Blocks: []uint64{0}}, meta.ErrInvalid},
		{"missing", 9999, meta.Write{Object: "x", Blocks: []uint64{0}}, meta.ErrNotFound},
	} {
		_, _, err := db.CommitWrite(ctx, tc.ino, tc.w, nil)
		wantErr(t, tc.name, err, tc.want)
	}
	// fn's error aborts the whole commit.
	_, _, err = db.CommitWrite(ctx, f.Ino, meta.Write{Object: "x", Blocks: []uint64{0}},
		func(*meta.Inode) error { return errStop })
	if err != errStop {
		t.Errorf("fn error returned as %v", err)
	}
	wantExtents(t, db, f.Ino, nil)
	// An object already queued for deletion cannot come back.
	commit(t, db, f.Ino, meta.Write{Object: "old", Blocks: []uint64{0}})
	commit(t, db, f.Ino, meta.Write{Object: "new", Blocks: []uint64{0}})
	_, _, err = db.CommitWrite(ctx, f.Ino, meta.Write{Object: "old", Blocks: []uint64{5}}, nil)
	wantErr(t, "reuse queued object", err, meta.ErrInvalid)
	// Re-committing the same object over the same blocks (a retried
	// commit) changes nothing and frees nothing.
	wantFreed(t, "recommit", commit(t, db, f.Ino, meta.Write{Object: "new", Blocks: []uint64{0}}), nil)
	wantExtents(t, db, f.Ino, []meta.Extent{{Block: 0, Count: 1, Object: "new"}})
}

func testGCQueuedOnce(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	commit(t, db, f.Ino, meta.Write{Object: "A", Gen: 1, Blocks: blocks(0, 4)})
	// A loses its blocks one commit at a time: only the last frees it.
	var all []meta.ObjectRef
	for i := uint64(0); i < 4; i++ {
		freed := commit(t, db, f.Ino, meta.Write{Object: fmt.Sprintf("B%d", i), Gen: 2 + i, Blocks: []uint64{i}})
		if i < 3 {
			wantFreed(t, fmt.Sprintf("step %d", i), freed, nil)
		} else {
			wantFreed(t, "last block", freed, refs("b", "A"))
		}
		all = append(all, freed...)
	}
	if err := db.DoneGC(ctx, all); err != nil {
		t.Fatal(err)
	}
	// Further commits never queue A again.
	wantFreed(t, "after", commit(t, db, f.Ino, meta.Write{Object: "C", Gen: 9, Blocks: blocks(0, 4)}), refs("b", "B0", "B1", "B2", "B3"))
	pending, err := db.PendingGC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := refs("b", "B0", "B1", "B2", "B3"); !slices.Equal(pending, want) {
		t.Errorf("PendingGC = %v, want %v", pending, want)
	}
	if err := db.DoneGC(ctx, append(pending, meta.ObjectRef{Bucket: "b", Key: "never-queued"})); err != nil {
		t.Fatal(err)
	}
	if pending, _ := db.PendingGC(ctx); len(pending) != 0 {
		t.Errorf("PendingGC after DoneGC = %v", pending)
	}
}

func testReleaseFreesObjects(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	g := mkfile(t, db, b.Ino, "g")
	commit(t, db, f.Ino, meta.Write{Object: "f/1", Gen: 1, Blocks: blocks(0, 3)})
	commit(t, db, f.Ino, meta.Write{Object: "f/2", Gen: 2, Blocks: []uint64{1}})
	commit(t, db, g.Ino, meta.Write{Object: "g/1", Gen: 1, Blocks: blocks(0, 3)})
	// Many extents, more than one release transaction holds.
	var bl []uint64
	for i := uint64(0); i < 2500; i++ {
		bl = append(bl, 10+2*i)
	}
	commit(t, db, f.Ino, meta.Write{Object: "f/3", Gen: 3, Blocks: bl})
	if exts, _ := db.Extents(ctx, f.Ino); len(exts) != 2503 {
		t.Fatalf("%d extents", len(exts))
	}
	if err := db.SetXattr(ctx, f.Ino, "user.x", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Unlink(ctx, b.Ino, "f", t0); err != nil {
		t.Fatal(err)
	}
	// The orphan's data stays readable until Release.
	if exts, _ := db.Extents(ctx, f.Ino); len(exts) != 2503 {
		t.Errorf("orphan has %d extents", len(exts))
	}
	freed, err := db.Release(ctx, f.Ino)
	if err != nil {
		t.Fatal(err)
	}
	wantFreed(t, "release", freed, refs("b", "f/1", "f/2", "f/3"))
	_, err = db.Extents(ctx, f.Ino)
	wantErr(t, "extents after release", err, meta.ErrNotFound)
	wantExtents(t, db, g.Ino, []meta.Extent{{Block: 0, Count: 3, Object: "g/1", Gen: 1}})
	pending, _ := db.PendingGC(ctx)
	if want := refs("b", "f/1", "f/2", "f/3"); !slices.Equal(pending, want) {
		t.Errorf("PendingGC = %v, want %v", pending, want)
	}
	if objs, err := db.Objects(ctx); err != nil || !slices.Equal(objs, refs("b", "g/1")) {
		t.Errorf("Objects = %v, %v", objs, err)
	}
}

// loc is where the model says a block lives.
type loc struct {
	obj       string
	slot, gen uint64
}

// testExtentModel runs random writes and truncates on two files against a
// map from block to location, checking after every commit that Extents
// equals the model in canonical form and that exactly the objects whose last
// live block went away were freed.
func testExtentModel(t *testing.T, db *meta.DB) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { extentModel(t, db, seed) })
	}
}

func extentModel(t *testing.T, db *meta.DB, seed uint64) {
	ctx := t.Context()
	bucket := fmt.Sprint("b", seed)
	b := mkdir(t, db, meta.RootIno, bucket)
	files := []*meta.Inode{mkfile(t, db, b.Ino, "f"), mkfile(t, db, b.Ino, "g")}
	models := []map[uint64]loc{{}, {}}
	rng := rand.New(rand.NewPCG(seed, 2))
	var everFreed []meta.ObjectRef
	live := func() map[string]int {
		m := make(map[string]int)
		for _, model := range models {
			for _, l := range model {
				m[l.obj]++
			}
		}
		return m
	}
	const space = 48
	const ops = 300
	for op := range ops {
		i := rng.IntN(2)
		model := models[i]
		before := live()
		w := meta.Write{}
		if rng.IntN(6) == 0 {
			// A compaction of the live blocks in a range, some of whose
			// copies are stale (as if rewritten while it ran).
			start := uint64(rng.IntN(space))
			for blk := start; blk < start+16; blk++ {
				if l, ok := model[blk]; ok {
					g := l.gen
					if rng.IntN(4) == 0 {
						g += 1000
					}
					w.Blocks = append(w.Blocks, blk)
					w.Gens = append(w.Gens, g)
				}
			}
			if len(w.Blocks) > 0 {
				w.Object = fmt.Sprintf("c%03d", op)
				w.Compact = true
			}
		} else if rng.IntN(5) == 0 {
			w.Truncate = true
			w.KeepBlocks = uint64(rng.IntN(space + 4))
		}
		if !w.Compact && rng.IntN(4) == 0 {
			// Punched holes (fallocate), sorted and disjoint.
			for blk := uint64(rng.IntN(8)); blk < space; blk += uint64(1 + rng.IntN(16)) {
				n := uint64(1 + rng.IntN(6))
				w.Holes = append(w.Holes, meta.BlockRange{Block: blk, Count: n})
				blk += n
			}
		}
		if !w.Compact && (!w.Truncate || rng.IntN(2) == 0) {
			w.Object = fmt.Sprintf("o%03d", op)
			w.Gen = uint64(op + 1)
			start := uint64(rng.IntN(space))
			n := 1 + rng.IntN(12)
			for b := start; b < start+uint64(n) && b < space; b++ {
				if rng.IntN(6) != 0 { // mostly runs, some holes
					w.Blocks = append(w.Blocks, b)
				}
			}
			if len(w.Blocks) == 0 {
				w.Blocks = []uint64{start}
			}
		}
		// Apply to the model.
		if w.Truncate {
			for blk := range model {
				if blk >= w.KeepBlocks {
					delete(model, blk)
				}
			}
		}
		for _, h := range w.Holes {
			for blk := h.Block; blk < h.Block+h.Count; blk++ {
				delete(model, blk)
			}
		}
		moved := 0
		for s, blk := range w.Blocks {
			switch {
			case !w.Compact:
				model[blk] = loc{w.Object, uint64(s), w.Gen}
			case model[blk].gen == w.Gens[s]:
				model[blk] = loc{w.Object, uint64(s), w.Gens[s]}
				moved++
			}
		}
		after := live()
		if w.Compact && moved == 0 {
			before[w.Object] = 1 // the unused compaction object is freed
		}
		var wantFreedObjs []meta.ObjectRef
		for obj := range before {
			if after[obj] == 0 {
				wantFreedObjs = append(wantFreedObjs, meta.ObjectRef{Bucket: bucket, Key: obj})
			}
		}
		sort.Slice(wantFreedObjs, func(a, c int) bool { return wantFreedObjs[a].Key < wantFreedObjs[c].Key })

		mapBefore, err := db.Extents(ctx, files[i].Ino)
		if err != nil {
			t.Fatal(err)
		}
		freed := commit(t, db, files[i].Ino, w)
		wantFreed(t, fmt.Sprintf("op %d %+v", op, w), freed, wantFreedObjs)
		// The in-memory version of the commit gives the same map.
		if mapAfter, err := db.Extents(ctx, files[i].Ino); err != nil || !slices.Equal(meta.ApplyWrite(slices.Clone(mapBefore), w), mapAfter) {
			t.Fatalf("op %d: ApplyWrite gives %+v, the stored map is %+v (%v)", op, meta.ApplyWrite(slices.Clone(mapBefore), w), mapAfter, err)
		}
		everFreed = append(everFreed, freed...)
		checkModel(t, db, files[i].Ino, model)
		if t.Failed() {
			t.Fatalf("stopped at op %d", op)
		}
	}
	// Random range queries agree with the model too.
	for range 50 {
		i := rng.IntN(2)
		start, n := uint64(rng.IntN(space)), uint64(1+rng.IntN(10))
		exts, err := db.ExtentsIn(ctx, files[i].Ino, start, n)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range exts {
			if e.Block+e.Count <= start || e.Block >= start+n {
				t.Errorf("ExtentsIn(%d, %d) returned %+v outside the range", start, n, e)
			}
		}
		for blk := start; blk < start+n; blk++ {
			_, inModel := models[i][blk]
			covered := false
			for _, e := range exts {
				covered = covered || (blk >= e.Block && blk < e.Block+e.Count)
			}
			if covered != inModel {
				t.Errorf("ExtentsIn(%d, %d): block %d covered %v, model %v", start, n, blk, covered, inModel)
			}
		}
	}
	// Releasing both files frees everything still live; the GC queue then
	// holds every object exactly once.
	left := live()
	for i, f := range files {
		if _, err := db.Unlink(ctx, b.Ino, []string{"f", "g"}[i], t0); err != nil {
			t.Fatal(err)
		}
		freed, err := db.Release(ctx, f.Ino)
		if err != nil {
			t.Fatal(err)
		}
		everFreed = append(everFreed, freed...)
	}
	all, err := db.PendingGC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pending []meta.ObjectRef
	for _, r := range all {
		if r.Bucket == bucket {
			pending = append(pending, r)
		}
	}
	sort.Slice(everFreed, func(a, c int) bool { return everFreed[a].Key < everFreed[c].Key })
	if !slices.Equal(pending, everFreed) {
		t.Errorf("PendingGC has %d objects, %d were freed", len(pending), len(everFreed))
	}
	for obj := range left {
		if !slices.Contains(pending, meta.ObjectRef{Bucket: bucket, Key: obj}) {
			t.Errorf("live object %s not freed by Release", obj)
		}
	}
}

// checkModel compares the file's extents with the model and checks they are
// sorted, non-overlapping and maximal.
func checkModel(t *testing.T, db *meta.DB, ino meta.Ino, model map[uint64]loc) {
	t.Helper()
	exts, err := db.Extents(t.Context(), ino)
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[uint64]loc)
	for i, e := range exts {
		if e.Count == 0 {
			t.Errorf("empty extent %+v", e)
		}
		if i > 0 {
			p := exts[i-1]
			if p.Block+p.Count > e.Block {
				t.Errorf("extents %+v and %+v overlap or are unsorted", p, e)
			}
			if p.Block+p.Count == e.Block && p.Object == e.Object && p.Gen == e.Gen && p.Slot+p.Count == e.Slot {
				t.Errorf("extents %+v and %+v should be one", p, e)
			}
		}
		for k := uint64(0); k < e.Count; k++ {
			got[e.Block+k] = loc{e.Object, e.Slot + k, e.Gen}
		}
	}
	for blk, want := range model {
		if got[blk] != want {
			t.Errorf("block %d: extents say %+v, model %+v", blk, got[blk], want)
		}
	}
	for blk, g := range got {
		if _, ok := model[blk]; !ok {
			t.Errorf("block %d: extents say %+v, model has a hole", blk, g)
		}
	}
}

func testCompaction(t *testing.T, db *meta.DB) {
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	commit(t, db, f.Ino, meta.Write{Object: "A", Gen: 1, Blocks: blocks(0, 4)})
	commit(t, db, f.Ino, meta.Write{Object: "B", Gen: 2, Blocks: blocks(2, 6)})
	// A compaction copies blocks 0-5 into C; meanwhile block 4 is rewritten.
	commit(t, db, f.Ino, meta.Write{Object: "D", Gen: 3, Blocks: []uint64{4}})
	freed := commit(t, db, f.Ino, meta.Write{Object: "C", Blocks: blocks(0, 6), Gens: []uint64{1, 1, 2, 2, 2, 2}, Compact: true})
	wantFreed(t, "compaction", freed, refs("b", "A", "B"))
	wantExtents(t, db, f.Ino, []meta.Extent{
		{Block: 0, Count: 2, Object: "C", Slot: 0, Gen: 1},
		{Block: 2, Count: 2, Object: "C", Slot: 2, Gen: 2},
		{Block: 4, Count: 1, Object: "D", Slot: 0, Gen: 3},
		{Block: 5, Count: 1, Object: "C", Slot: 5, Gen: 2},
	})
	// Repeating the commit changes nothing.
	wantFreed(t, "repeat", commit(t, db, f.Ino, meta.Write{Object: "C", Blocks: blocks(0, 6), Gens: []uint64{1, 1, 2, 2, 2, 2}, Compact: true}), nil)
	// A compaction overtaken by a truncate moves nothing and frees its
	// own object.
	commit(t, db, f.Ino, meta.Write{Truncate: true, KeepBlocks: 0})
	freed = commit(t, db, f.Ino, meta.Write{Object: "E", Blocks: []uint64{0, 1}, Gens: []uint64{1, 1}, Compact: true})
	wantFreed(t, "overtaken", freed, refs("b", "E"))
	wantExtents(t, db, f.Ino, nil)
	if pending, _ := db.PendingGC(ctx); !slices.Contains(pending, meta.ObjectRef{Bucket: "b", Key: "E"}) {
		t.Errorf("unused compaction object not queued: %v", pending)
	}
	// Per-block generations without Compact apply unconditionally.
	commit(t, db, f.Ino, meta.Write{Object: "F", Blocks: []uint64{0, 1, 2}, Gens: []uint64{5, 5, 6}})
	wantExtents(t, db, f.Ino, []meta.Extent{
		{Block: 0, Count: 2, Object: "F", Slot: 0, Gen: 5},
		{Block: 2, Count: 1, Object: "F", Slot: 2, Gen: 6},
	})
	for name, w := range map[string]meta.Write{
		"gens length":      {Object: "x", Blocks: []uint64{0, 1}, Gens: []uint64{1}},
		"compact no gens":  {Object: "x", Blocks: []uint64{0}, Compact: true},
		"compact truncate": {Object: "x", Blocks: []uint64{0}, Gens: []uint64{1}, Compact: true, Truncate: true},
	} {
		_, _, err := db.CommitWrite(ctx, f.Ino, w, nil)
		wantErr(t, name, err, meta.ErrInvalid)
	}
}
