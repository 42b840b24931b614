package meta

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	badger "github.com/dgraph-io/badger/v4"
)

// MaxObjectKeyLen bounds an object name (S3's limit), which is part of the
// refcount and GC-queue keys.
const MaxObjectKeyLen = 1024

// batchSize bounds the extents (or GC entries) one transaction of Release or
// DoneGC touches, well inside Badger's transaction size limit.
const batchSize = 2000

// Write is one data commit: block Blocks[i] of the file now lives in slot i
// of Object, sealed at generation Gen.
type Write struct {
	// Object is the new object holding the blocks; "" when the commit
	// carries no data (a pure truncate or attribute change).
	Object string
	// Gen is the write generation the blocks were sealed at.
	Gen uint64
	// Blocks are the file block numbers, strictly increasing, each below
	// MaxBlocks.
	Blocks []uint64
	// Truncate, if set, first drops every extent block >= KeepBlocks.
	Truncate   bool
	KeepBlocks uint64
	// Holes are block ranges, sorted and non-overlapping, whose extents are
	// dropped after the truncate and before Blocks are applied: a punched
	// hole or a zeroed range (fallocate) that reads as zeros again. A block
	// that is both in a hole and in Blocks ends up in the new object.
	Holes []BlockRange

	// Gens, if not nil, gives each block its own generation (Gens[i] for
	// Blocks[i]; Gen is then ignored). A compaction needs it: it copies
	// blocks sealed by several writes into one object without re-encrypting
	// them, and each block's associated data names its own generation.
	Gens []uint64
	// Compact makes the commit conditional per block, for a compaction that
	// ran concurrently with writes: Blocks[i] moves to the new object only
	// if the file still has it sealed at Gens[i]. Generations are never
	// reused, so that means it still holds the bytes that were copied; a
	// block written or truncated since keeps its newer state. Compact needs
	// Gens and excludes Truncate. If no block moves, the new object has no
	// live block and is returned (and queued) as freed.
	Compact bool
}

// BlockRange is the file blocks [Block, Block+Count).
type BlockRange struct {
	Block, Count uint64
}

// slotRef is one block of a write: file block, slot in the object, and the
// generation it was sealed at.
type slotRef struct{ block, slot, gen uint64 }

func (w *Write) validate() error {
	if (w.Object == "") != (len(w.Blocks) == 0) {
		return fmt.Errorf("object %q with %d blocks: %w", w.Object, len(w.Blocks), ErrInvalid)
	}
	if len(w.Object) > MaxObjectKeyLen {
		return fmt.Errorf("object name of %d bytes: %w", len(w.Object), ErrInvalid)
	}
	for i, b := range w.Blocks {
		if b >= MaxBlocks || (i > 0 && b <= w.Blocks[i-1]) {
			return fmt.Errorf("blocks not strictly increasing below %d at index %d: %w", uint64(MaxBlocks), i, ErrInvalid)
		}
	}
	if w.Truncate && w.KeepBlocks > MaxBlocks {
		return fmt.Errorf("keep %d blocks: %w", w.KeepBlocks, ErrInvalid)
	}
	if w.Gens != nil && len(w.Gens) != len(w.Blocks) {
		return fmt.Errorf("%d gens for %d blocks: %w", len(w.Gens), len(w.Blocks), ErrInvalid)
	}
	if w.Compact && (w.Gens == nil || w.Truncate || len(w.Holes) > 0) {
		return fmt.Errorf("compact commit needs gens and no truncate or holes: %w", ErrInvalid)
	}
	for i, h := range w.Holes {
		if h.Count == 0 || h.Block >= MaxBlocks || h.Count > MaxBlocks-h.Block ||
			(i > 0 && h.Block < w.Holes[i-1].Block+w.Holes[i-1].Count) {
			return fmt.Errorf("holes not sorted, non-empty and disjoint below %d at index %d: %w", uint64(MaxBlocks), i, ErrInvalid)
		}
	}
	return nil
}

// slots lists the blocks of the write with their slots and generations.
func (w *Write) slots() []slotRef {
	out := make([]slotRef, len(w.Blocks))
	for i, b := range w.Blocks {
		g := w.Gen
		if w.Gens != nil {
			g = w.Gens[i]
		}
		out[i] = slotRef{block: b, slot: uint64(i), gen: g}
	}
	return out
}

// runs turns the blocks of object obj into maximal extents: a run of
// consecutive blocks with consecutive slots and one generation is one
// extent.
func runs(obj string, slots []slotRef) []Extent {
	var out []Extent
	for _, s := range slots {
		if n := len(out); n > 0 {
			p := &out[n-1]
			if p.Block+p.Count == s.block && p.Slot+p.Count == s.slot && p.Gen == s.gen {
				p.Count++
				continue
			}
		}
		out = append(out, Extent{Block: s.block, Count: 1, Object: obj, Slot: s.slot, Gen: s.gen})
	}
	return out
}

// stillSealed keeps the slots whose block the extents (sorted, covering
// every block of slots that exists) still map at the same generation.
func stillSealed(slots []slotRef, exts []Extent) []slotRef {
	var out []slotRef
	j := 0
	for _, s := range slots {
		for j < len(exts) && exts[j].Block+exts[j].Count <= s.block {
			j++
		}
		if j < len(exts) && exts[j].Block <= s.block && exts[j].Gen == s.gen {
			out = append(out, s)
		}
	}
	return out
}

// Extents returns the file's whole extent map, sorted by Block and
// non-overlapping. Blocks that no extent covers are holes.
func (db *DB) Extents(ctx context.Context, ino Ino) ([]Extent, error) {
	return db.ExtentsIn(ctx, ino, 0, MaxBlocks)
}

// ExtentsIn returns the extents that overlap blocks [block, block+count),
// whole (not clipped to the range), sorted by Block. A read of a few blocks
// of a fragmented file need not load its whole map.
func (db *DB) ExtentsIn(ctx context.Context, ino Ino, block, count uint64) ([]Extent, error) {
	if block >= MaxBlocks || count == 0 {
		return nil, nil
	}
	count = min(count, MaxBlocks-block)
	var exts []Extent
	err := db.view(ctx, func(t *badger.Txn) error {
		if _, err := getInode(t, ino); err != nil {
			return err
		}
		var err error
		exts, err = loadWindow(t, ino, block, block+count-1, false)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("meta: extents of %d: %w", ino, err)
	}
	return exts, nil
}

// loadWindow returns the extents of ino that overlap blocks [lo, hi], plus,
// when touching is set, those that end exactly at lo or start at hi+1 (the
// neighbours a new extent may merge with). It checks that they do not
// overlap.
func loadWindow(t *badger.Txn, ino Ino, lo, hi uint64, touching bool) ([]Extent, error) {
	prefix := extentPrefix(ino)
	var out []Extent
	if lo > 0 {
		// The last extent starting before lo may reach into the window.
		it := t.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
		it.Seek(extentKey(ino, lo-1))
		if it.Valid() {
			item := it.Item()
			e, err := itemExtent(ino, item)
			if err != nil {
				it.Close()
				return nil, err
			}
			if end := e.Block + e.Count; end > lo || (touching && end == lo) {
				out = append(out, e)
			}
		}
		it.Close()
	}
	last := hi
	if touching && hi < MaxBlocks {
		last = hi + 1
	}
	it := t.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	for it.Seek(extentKey(ino, lo)); it.Valid(); it.Next() {
		e, err := itemExtent(ino, it.Item())
		if err != nil {
			return nil, err
		}
		if e.Block > last {
			break
		}
		if n := len(out); n > 0 && out[n-1].Block+out[n-1].Count > e.Block {
			return nil, fmt.Errorf("extents of %d overlap at block %d: %w", ino, e.Block, ErrFormat)
		}
		out = append(out, e)
	}
	return out, nil
}

func itemExtent(ino Ino, item *badger.Item) (Extent, error) {
	var e Extent
	err := item.Value(func(v []byte) error {
		var err error
		e, err = decodeExtent(ino, item.Key(), v)
		return err
	})
	return e, err
}

// punch removes from the sorted, non-overlapping extents every block that
// one of the sorted, non-overlapping runs covers, splitting the extents that
// straddle a run boundary (a right-hand piece keeps its slots by moving
// Slot). One sweep: the cost is linear in extents plus runs plus overlaps,
// so a flush of many scattered blocks is not quadratic.
func punch(exts, runs []Extent) []Extent {
	out := make([]Extent, 0, len(exts)+len(runs))
	j := 0
	for _, x := range exts {
		xe := x.Block + x.Count
		for j < len(runs) && runs[j].Block+runs[j].Count <= x.Block {
			j++
		}
		cur := x.Block
		for k := j; k < len(runs) && runs[k].Block < xe; k++ {
			if r := runs[k]; r.Block > cur {
				out = append(out, piece(x, cur, r.Block))
			}
			cur = max(cur, runs[k].Block+runs[k].Count)
		}
		if cur < xe {
			out = append(out, piece(x, cur, xe))
		}
	}
	return out
}

// piece is blocks [s, e) of extent x.
func piece(x Extent, s, e uint64) Extent {
	return Extent{Block: s, Count: e - s, Object: x.Object, Slot: x.Slot + (s - x.Block), Gen: x.Gen}
}

// normalize sorts the extents and merges neighbours that continue each
// other (same object and generation, contiguous blocks and slots), so the
// map has one canonical form.
func normalize(exts []Extent) []Extent {
	sort.Slice(exts, func(i, j int) bool { return exts[i].Block < exts[j].Block })
	out := exts[:0]
	for _, e := range exts {
		if n := len(out); n > 0 {
			p := &out[n-1]
			if p.Block+p.Count == e.Block && p.Object == e.Object && p.Gen == e.Gen && p.Slot+p.Count == e.Slot {
				p.Count += e.Count
				continue
			}
		}
		out = append(out, e)
	}
	return out
}

// ApplyWrite returns the extent map exts (sorted and non-overlapping, as Extents returns it)
// changed by w the way CommitWrite changes the stored map. A caller that holds a file's map in
// memory and is its only writer (fs, while the file is open) keeps it up to date with this
// instead of reading the whole map again after every commit. ApplyWrite may change exts in place
// (a write into a fragmented map then costs no copy of it): use only the result.
func ApplyWrite(exts []Extent, w Write) []Extent {
	cur := exts
	slots := w.slots()
	if w.Compact {
		slots = stillSealed(slots, cur)
	}
	if w.Truncate {
		cur = punch(cur, []Extent{{Block: w.KeepBlocks, Count: MaxBlocks - w.KeepBlocks}})
	}
	if len(w.Holes) > 0 {
		holes := make([]Extent, len(w.Holes))
		for i, h := range w.Holes {
			holes[i] = Extent{Block: h.Block, Count: h.Count}
		}
		cur = punch(cur, holes)
	}
	if len(slots) == 0 {
		return cur
	}
	rs := runs(w.Object, slots)
	// Only the extents from the one before the first run to the one after the last can change
	// (split, trimmed, replaced or merged with a neighbour); the rest of a fragmented map, often
	// thousands of extents, is copied as it is. A flush of one block then costs O(log n) plus one
	// copy, not a sort of the whole map.
	start, end := rs[0].Block, rs[0].Block+rs[0].Count
	for _, r := range rs[1:] {
		start, end = min(start, r.Block), max(end, r.Block+r.Count)
	}
	lo := sort.Search(len(cur), func(i int) bool { return cur[i].Block+cur[i].Count >= start })
	lo = max(lo-1, 0)
	hi := sort.Search(len(cur), func(i int) bool { return cur[i].Block > end })
	hi = min(hi+1, len(cur))
	if lo > hi {
		lo = hi
	}
	window := normalize(append(punch(cur[lo:hi], rs), rs...))
	return slices.Replace(cur, lo, hi, window...)
}

// CommitWrite applies w to the file's extent map in one transaction together
// with fn (which typically sets Size, Mtime and Ctime; it may be nil and
// follows the rules of Update). Older extents that the new blocks overlap
// are split or trimmed, runs that continue each other become one Extent, and
// per-object live-block counts are kept. Every object whose count drops to 0
// is removed from the counts, put on the persistent GC queue and returned,
// so the caller can delete it from the store (and then call DoneGC).
//
// Each commit must name a new object: committing blocks of an object that
// is already queued for deletion is ErrInvalid, because the store may have
// deleted it. A commit that would write more than about 20,000 extents
// (very many scattered blocks, or a truncate of a badly fragmented file)
// fails with ErrTooBig and changes nothing; split it, for example truncate
// from the end in steps.
func (db *DB) CommitWrite(ctx context.Context, ino Ino, w Write, fn func(*Inode) error) (*Inode, []ObjectRef, error) {
	wrap := func(err error) error { return fmt.Errorf("meta: commit write %q to %d: %w", w.Object, ino, err) }
	if err := w.validate(); err != nil {
		return nil, nil, wrap(err)
	}
	var out *Inode
	var freed []ObjectRef
	err := db.update(ctx, func(x *tx) error {
		in, err := x.get(ino)
		if err != nil {
			return err
		}
		switch {
		case in.IsDir():
			return ErrIsDir
		case !in.IsRegular():
			return fmt.Errorf("not a regular file: %w", ErrInvalid)
		}
		freed, err = x.applyWrite(in, &w)
		if err != nil {
			return err
		}
		if fn != nil {
			if err := applyFn(in, fn); err != nil {
				return err
			}
		}
		x.put(in)
		out = in.clone()
		return nil
	})
	if err != nil {
		return nil, nil, unwrapFn(err, wrap)
	}
	return out, freed, nil
}

// applyWrite changes the extent map of the regular file in by w and
// returns the objects it freed.
func (x *tx) applyWrite(in *Inode, w *Write) ([]ObjectRef, error) {
	slots := w.slots()
	if len(slots) == 0 && !w.Truncate && len(w.Holes) == 0 {
		return nil, nil
	}
	if w.Object != "" {
		// An object on the GC queue may be gone from the store already.
		queued, err := exists(x.t, gcKey(ObjectRef{Bucket: in.Bucket, Key: w.Object}))
		if err != nil {
			return nil, err
		}
		if queued {
			return nil, fmt.Errorf("object %q is queued for deletion: %w", w.Object, ErrInvalid)
		}
	}
	if w.Compact {
		cur, err := loadWindow(x.t, in.Ino, slots[0].block, slots[len(slots)-1].block, false)
		if err != nil {
			return nil, err
		}
		if slots = stillSealed(slots, cur); len(slots) == 0 {
			// Nothing moved: the new object holds no live block.
			ref := ObjectRef{Bucket: in.Bucket, Key: w.Object}
			if ok, err := exists(x.t, refcountKey(ref)); err != nil || ok {
				return nil, err // already live elsewhere (a repeated commit): keep it
			}
			return []ObjectRef{ref}, x.t.Set(gcKey(ref), nil)
		}
	}
	runs := runs(w.Object, slots)
	lo, hi := uint64(MaxBlocks), uint64(0)
	if w.Truncate {
		lo, hi = w.KeepBlocks, MaxBlocks
	}
	if n := len(runs); n > 0 {
		lo = min(lo, runs[0].Block)
		hi = max(hi, runs[n-1].Block+runs[n-1].Count-1)
	}
	if n := len(w.Holes); n > 0 {
		lo = min(lo, w.Holes[0].Block)
		hi = max(hi, w.Holes[n-1].Block+w.Holes[n-1].Count-1)
	}
	if lo >= MaxBlocks {
		return nil, nil // truncating to the maximum size drops nothing
	}
	old, err := loadWindow(x.t, in.Ino, lo, hi, true)
	if err != nil {
		return nil, err
	}
	cur := old
	if w.Truncate {
		cur = punch(cur, []Extent{{Block: w.KeepBlocks, Count: MaxBlocks - w.KeepBlocks}})
	}
	if len(w.Holes) > 0 {
		holes := make([]Extent, len(w.Holes))
		for i, h := range w.Holes {
			holes[i] = Extent{Block: h.Block, Count: h.Count}
		}
		cur = punch(cur, holes)
	}
	cur = normalize(append(punch(cur, runs), runs...))

	// Write the difference, and count live blocks per object.
	delta := make(map[string]int64)
	oldAt := make(map[uint64]Extent, len(old))
	for _, e := range old {
		oldAt[e.Block] = e
		delta[e.Object] -= int64(e.Count)
	}
	for _, e := range cur {
		delta[e.Object] += int64(e.Count)
		if o, ok := oldAt[e.Block]; ok {
			delete(oldAt, e.Block)
			if o == e {
				continue
			}
		}
		if err := x.t.Set(extentKey(in.Ino, e.Block), encodeExtent(e)); err != nil {
			return nil, err
		}
	}
	for b := range oldAt {
		if err := x.t.Delete(extentKey(in.Ino, b)); err != nil {
			return nil, err
		}
	}
	return x.applyRefs(in.Bucket, delta)
}

// applyRefs adds the per-object live-block changes to the refcounts and
// queues every object whose count reaches 0 for GC, returning those.
func (x *tx) applyRefs(bucket string, delta map[string]int64) ([]ObjectRef, error) {
	var freed []ObjectRef
	for obj, d := range delta {
		if d == 0 {
			continue
		}
		ref := ObjectRef{Bucket: bucket, Key: obj}
		k := refcountKey(ref)
		var n uint64
		item, err := x.t.Get(k)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return nil, err
		default:
			if err := item.Value(func(v []byte) error {
				var err error
				n, err = decodeRefcount(v)
				return err
			}); err != nil {
				return nil, fmt.Errorf("refcount of %q: %w", obj, err)
			}
		}
		nn := int64(n) + d
		switch {
		case nn < 0:
			return nil, fmt.Errorf("refcount of %q would be %d: %w", obj, nn, ErrFormat)
		case nn == 0:
			if err := x.t.Delete(k); err != nil {
				return nil, err
			}
			if err := x.t.Set(gcKey(ref), nil); err != nil {
				return nil, err
			}
			freed = append(freed, ref)
		default:
			if err := x.t.Set(k, encodeUint(uint64(nn))); err != nil {
				return nil, err
			}
		}
	}
	sortRefs(freed)
	return freed, nil
}

// Orphans lists the inodes with Nlink 0, in inode order. After a crash no
// file is open, so fs releases them all at mount.
func (db *DB) Orphans(ctx context.Context) ([]Ino, error) {
	var out []Ino
	err := db.view(ctx, func(t *badger.Txn) error {
		it := t.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixOrphan}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			ino, err := decodeInoKey(prefixOrphan, it.Item().Key())
			if err != nil {
				return err
			}
			out = append(out, ino)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("meta: orphans: %w", err)
	}
	return out, nil
}

// Release deletes the orphan ino (Nlink must be 0, else ErrInvalid) with its
// xattrs and extents, queues every object that no longer has a live block for
// GC and returns them. A file with very many extents is released in several
// transactions; each leaves a consistent orphan with fewer extents, so a
// crash in between is finished by the next Release, and the objects freed by
// the finished transactions are already in PendingGC.
func (db *DB) Release(ctx context.Context, ino Ino) ([]ObjectRef, error) {
	var freed []ObjectRef
	for {
		var batch []ObjectRef
		var done bool
		err := db.update(ctx, func(x *tx) error {
			batch, done = nil, false
			in, err := x.get(ino)
			if err != nil {
				return err
			}
			if in.Nlink != 0 {
				return fmt.Errorf("nlink %d: %w", in.Nlink, ErrInvalid)
			}
			it := x.t.NewIterator(badger.IteratorOptions{Prefix: extentPrefix(ino), PrefetchValues: true, PrefetchSize: 100})
			var keys [][]byte
			delta := make(map[string]int64)
			for it.Rewind(); it.Valid() && len(keys) < batchSize; it.Next() {
				e, err := itemExtent(ino, it.Item())
				if err != nil {
					it.Close()
					return err
				}
				delta[e.Object] -= int64(e.Count)
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			it.Close()
			for _, k := range keys {
				if err := x.t.Delete(k); err != nil {
					return err
				}
			}
			if batch, err = x.applyRefs(in.Bucket, delta); err != nil {
				return err
			}
			if len(keys) == batchSize {
				return nil // more extents: another transaction
			}
			done = true
			return x.remove(in)
		})
		if err != nil {
			return nil, fmt.Errorf("meta: release %d: %w", ino, err)
		}
		freed = append(freed, batch...)
		if done {
			sortRefs(freed)
			return freed, nil
		}
	}
}

// PendingGC returns the persistent GC queue, sorted by bucket and key: objects that no extent uses
// any more and that the store may still hold. fs deletes them and calls
// DoneGC; after a crash it finds the unfinished ones here.
func (db *DB) PendingGC(ctx context.Context) ([]ObjectRef, error) {
	out, err := db.objectRefs(ctx, prefixGC)
	if err != nil {
		return nil, fmt.Errorf("meta: pending gc: %w", err)
	}
	return out, nil
}

// objectRefs returns the objects named by the keys under one of the object-keyed prefixes
// (prefixGC, prefixRefcount), sorted by bucket and key. The keys themselves sort by bucket
// length first, so they are sorted again.
func (db *DB) objectRefs(ctx context.Context, prefix byte) ([]ObjectRef, error) {
	var out []ObjectRef
	err := db.view(ctx, func(t *badger.Txn) error {
		it := t.NewIterator(badger.IteratorOptions{Prefix: []byte{prefix}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			ref, err := decodeObjectKey(prefix, it.Item().Key())
			if err != nil {
				return err
			}
			out = append(out, ref)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortRefs(out)
	return out, nil
}

// Objects returns every object that has at least one live block, sorted by
// bucket and key. Together with PendingGC it is everything the store should
// hold; fsck deletes other objects (left by a crash between upload and
// commit) and reports missing ones.
func (db *DB) Objects(ctx context.Context) ([]ObjectRef, error) {
	out, err := db.objectRefs(ctx, prefixRefcount)
	if err != nil {
		return nil, fmt.Errorf("meta: objects: %w", err)
	}
	return out, nil
}

// DoneGC removes deleted objects from the GC queue. It is idempotent: refs
// that are not queued are ignored.
func (db *DB) DoneGC(ctx context.Context, refs []ObjectRef) error {
	for len(refs) > 0 {
		n := min(len(refs), batchSize)
		chunk := refs[:n]
		refs = refs[n:]
		err := db.update(ctx, func(x *tx) error {
			for _, ref := range chunk {
				if err := x.t.Delete(gcKey(ref)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("meta: done gc: %w", err)
		}
	}
	return nil
}
