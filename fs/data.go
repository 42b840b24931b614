package fs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/kmipfs/kmipfs/crypt"
	"github.com/kmipfs/kmipfs/meta"
	"github.com/kmipfs/kmipfs/objstore"
)

const blockSize = crypt.PlainBS

// openFile is the data state of one regular file while it is open (or holds data that could not
// be stored yet): its cipher, its size including unflushed writes, the dirty blocks, and a copy of
// its committed extent map.
type openFile struct {
	fsys   *FS
	ino    meta.Ino
	bucket string
	path   string // a path of the file when it was opened, for log lines
	fileID crypt.FileID
	cipher *crypt.Cipher
	// keyName is the KMIP name the file's data key is wrapped under, re-checked by checkKey.
	keyName string

	// refs counts acquire calls not yet released. Protected by FS.mu.
	refs int

	// mu is the content lock; see the package comment for why it is held across store I/O.
	mu sync.Mutex
	// The fields below are protected by mu.
	size         uint64
	gen          uint64 // last committed write generation
	mtime, ctime int64
	metaDirty    bool              // size or times changed since the last commit
	dirty        map[uint64][]byte // block index -> blockSize bytes of plaintext
	truncated    bool              // a truncate is pending: committed blocks >= keepBlocks are gone
	keepBlocks   uint64
	holes        []meta.BlockRange // punched ranges not yet committed: their committed blocks are gone
	extents      []meta.Extent     // committed extent map, sorted by Block
	keyChecked   time.Time         // when checkKey last asked the key service
	accounted    int               // len(dirty) as last added to FS.dirtyBlocks
}

// account brings FS.dirtyBlocks up to date with this file's dirty buffer. Every method that adds
// or drops dirty blocks calls it before it returns; the caller holds mu.
func (of *openFile) account() {
	if d := len(of.dirty) - of.accounted; d != 0 {
		of.fsys.dirtyBlocks.Add(int64(d))
		switch {
		case of.accounted == 0:
			of.fsys.stats.dirtyFiles.Add(1)
		case len(of.dirty) == 0:
			of.fsys.stats.dirtyFiles.Add(-1)
		}
		of.accounted = len(of.dirty)
	}
}

func (of *openFile) hasDirtyLocked() bool {
	return len(of.dirty) > 0 || of.truncated || of.metaDirty || len(of.holes) > 0
}

// attrOverlay returns the size and times to report for the file. While the data state exists it
// is authoritative for them: it starts from meta at open, every write, truncate, fallocate and
// explicit time change goes through it, and it keeps what it committed. (Reporting meta's values
// when nothing is dirty would race with a flush: a size read from meta just before the flush,
// reported just after it, tells the kernel the file shrank.) ctime is the later of the two, since
// chmod and xattr changes update meta only.
func (of *openFile) attrOverlay(ctime int64) (uint64, int64, int64) {
	of.mu.Lock()
	defer of.mu.Unlock()
	return of.size, of.mtime, max(ctime, of.ctime)
}

// setTimes records explicitly set times so that a later flush commits them, not the write time.
func (of *openFile) setTimes(mtime, ctime int64) {
	of.mu.Lock()
	defer of.mu.Unlock()
	of.mtime, of.ctime = mtime, ctime
}

// extentOf returns the committed extent holding block b, if any, honouring a pending truncate
// and pending holes.
func (of *openFile) extentOf(b uint64) (meta.Extent, bool) {
	if of.truncated && b >= of.keepBlocks {
		return meta.Extent{}, false
	}
	for _, h := range of.holes {
		if b >= h.Block && b-h.Block < h.Count {
			return meta.Extent{}, false
		}
	}
	i := sort.Search(len(of.extents), func(i int) bool { return of.extents[i].Block+of.extents[i].Count > b })
	if i < len(of.extents) && of.extents[i].Block <= b {
		return of.extents[i], true
	}
	return meta.Extent{}, false
}

// committedLimit returns the first block after b where a pending truncate or hole starts, so a
// run of committed blocks read from b stops there.
func (of *openFile) committedLimit(b uint64) uint64 {
	limit := uint64(math.MaxUint64)
	if of.truncated && of.keepBlocks > b {
		limit = of.keepBlocks
	}
	for _, h := range of.holes {
		if h.Block > b {
			limit = min(limit, h.Block)
		}
	}
	return limit
}

// loadBlock returns a fresh copy of the committed plaintext of block b (zeros for a hole).
func (of *openFile) loadBlock(ctx context.Context, b uint64) ([]byte, error) {
	buf := getBlock()
	if err := of.readCommitted(ctx, b, 1, buf); err != nil {
		putBlock(buf)
		return nil, err
	}
	return buf, nil
}

// readCommitted decrypts count committed blocks starting at first into dst (count*blockSize
// bytes). Runs of blocks stored in consecutive slots of one object are fetched with one ranged GET.
func (of *openFile) readCommitted(ctx context.Context, first, count uint64, dst []byte) error {
	for b := first; b < first+count; {
		ext, ok := of.extentOf(b)
		if !ok {
			clear(dst[(b-first)*blockSize : (b-first+1)*blockSize])
			b++
			continue
		}
		n := min(ext.Block+ext.Count, first+count, of.committedLimit(b)) - b
		slot := ext.Slot + (b - ext.Block)
		sealed, err := of.fsys.store.Get(ctx, of.bucket, ext.Object, int64(slot*crypt.CipherBS), int64(n*crypt.CipherBS))
		if err != nil {
			if errors.Is(err, objstore.ErrNotFound) {
				return fmt.Errorf("object %s of block %d is missing from the store: %w", ext.Object, b, crypt.ErrAuth)
			}
			return fmt.Errorf("get object %s: %w", ext.Object, err)
		}
		if uint64(len(sealed)) != n*crypt.CipherBS {
			return fmt.Errorf("object %s is shorter than the metadata says (block %d): %w", ext.Object, b+uint64(len(sealed))/crypt.CipherBS, crypt.ErrAuth)
		}
		for i := uint64(0); i < n; i++ {
			out := dst[(b+i-first)*blockSize : (b+i-first)*blockSize]
			if _, err := of.cipher.OpenBlock(out, sealed[i*crypt.CipherBS:(i+1)*crypt.CipherBS], b+i, ext.Gen); err != nil {
				return fmt.Errorf("block %d (object %s slot %d): %w", b+i, ext.Object, slot+i, err)
			}
		}
		b += n
	}
	return nil
}

// readLocked copies file bytes at off into dest and returns how many; fewer only at end of file.
func (of *openFile) readLocked(ctx context.Context, dest []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errnoErr(syscall.EINVAL, "negative offset")
	}
	if uint64(off) >= of.size {
		return 0, nil
	}
	end := min(uint64(off)+uint64(len(dest)), of.size)
	first, last := uint64(off)/blockSize, (end-1)/blockSize
	buf := make([]byte, (last-first+1)*blockSize)
	// Committed blocks are read in runs between dirty ones.
	for b := first; b <= last; {
		if blk, ok := of.dirty[b]; ok {
			copy(buf[(b-first)*blockSize:], blk)
			b++
			continue
		}
		runEnd := b
		for runEnd <= last {
			if _, ok := of.dirty[runEnd]; ok {
				break
			}
			runEnd++
		}
		if err := of.readCommitted(ctx, b, runEnd-b, buf[(b-first)*blockSize:(runEnd-first)*blockSize]); err != nil {
			return 0, err
		}
		b = runEnd
	}
	start := uint64(off) - first*blockSize
	return copy(dest, buf[start:start+end-uint64(off)]), nil
}

// writeLocked puts data at off into the dirty buffer, reading partially overwritten blocks first,
// and flushes when the buffer passes FlushBytes.
func (of *openFile) writeLocked(ctx context.Context, data []byte, off int64) error {
	pos, end := uint64(off), uint64(off)+uint64(len(data))
	for pos < end {
		b, boff := pos/blockSize, pos%blockSize
		n := min(blockSize-boff, end-pos)
		blk, ok := of.dirty[b]
		if !ok {
			if boff == 0 && n == blockSize {
				blk = getBlock()
			} else {
				var err error
				if blk, err = of.loadBlock(ctx, b); err != nil {
					return err
				}
			}
			of.dirty[b] = blk
		}
		copy(blk[boff:], data[pos-uint64(off):pos-uint64(off)+n])
		pos += n
	}
	if end > of.size {
		of.size = end
	}
	t := now()
	of.mtime, of.ctime = t, t
	of.metaDirty = true
	of.account()
	// Back-pressure: a file flushes when its own buffer is full, and also when the buffers of all
	// files together pass the mount's bound, so many files written at once cannot exhaust memory.
	if len(of.dirty)*blockSize >= of.fsys.flushBytes || of.fsys.dirtyBlocks.Load()*blockSize > of.fsys.maxDirty {
		return of.flushLocked(ctx)
	}
	return nil
}

// truncate sets the file size. Shrinking re-encrypts the block that is cut, with zeros after the
// new end, so that bytes past the end read as zeros if the file grows again.
func (of *openFile) truncate(ctx context.Context, size uint64) error {
	of.mu.Lock()
	defer of.mu.Unlock()
	if size < of.size {
		keep := (size + blockSize - 1) / blockSize
		for b := range of.dirty {
			if b >= keep {
				delete(of.dirty, b)
			}
		}
		if tail := size % blockSize; tail != 0 {
			b := size / blockSize
			blk, ok := of.dirty[b]
			if !ok {
				var err error
				if blk, err = of.loadBlock(ctx, b); err != nil {
					return err
				}
				of.dirty[b] = blk
			}
			clear(blk[tail:])
		}
		if !of.truncated || keep < of.keepBlocks {
			of.keepBlocks = keep
		}
		of.truncated = true
	}
	of.size = size
	t := now()
	of.mtime, of.ctime = t, t
	of.metaDirty = true
	return of.flushLocked(ctx)
}

// flushLocked seals the dirty blocks (in parallel), stores them as one new object, then commits
// the new extents and the size in one meta transaction. On any error the dirty state is kept.
func (of *openFile) flushLocked(ctx context.Context) error {
	if !of.hasDirtyLocked() {
		return nil
	}
	blocks := make([]uint64, 0, len(of.dirty))
	for b := range of.dirty {
		blocks = append(blocks, b)
	}
	slices.Sort(blocks)
	gen := of.gen + 1
	var object string
	if len(blocks) > 0 {
		object = objectKey(of.fileID, gen)
		sealed := of.seal(blocks, gen)
		err := of.fsys.store.Put(ctx, of.bucket, object, sealed)
		n := len(sealed)
		putSealed(sealed) // a Store does not retain data
		if err != nil {
			of.fsys.stats.flushErrors.Add(1)
			return fmt.Errorf("put object %s: %w", object, err)
		}
		of.fsys.stats.flushedBytes.Add(uint64(n))
	}
	w := meta.Write{Object: object, Gen: gen, Blocks: blocks, Truncate: of.truncated, KeepBlocks: of.keepBlocks,
		Holes: mergeRanges(of.holes)}
	size, mtime, ctime := of.size, of.mtime, of.ctime
	_, freed, err := of.fsys.meta.CommitWrite(ctx, of.ino, w, func(in *meta.Inode) error {
		// A chmod or xattr change committed since the write keeps its later ctime.
		in.Size, in.Mtime, in.Ctime = size, mtime, max(in.Ctime, ctime)
		if gen > in.Gen {
			in.Gen = gen
		}
		return nil
	})
	if err != nil {
		if object != "" {
			// Nothing points at the object; remove it now rather than leave it to fsck.
			_ = of.fsys.store.Delete(context.WithoutCancel(ctx), of.bucket, object)
		}
		of.fsys.stats.flushErrors.Add(1)
		return fmt.Errorf("commit write: %w", err)
	}
	of.fsys.stats.flushes.Add(1)
	of.gen = gen
	for _, blk := range of.dirty {
		putBlock(blk)
	}
	clear(of.dirty)
	of.account()
	of.truncated, of.keepBlocks, of.metaDirty, of.holes = false, 0, false, nil
	// This data state is the only writer of the file's extent map while it exists, so the map
	// changes in memory exactly as in meta, without reading it all again.
	of.extents = meta.ApplyWrite(of.extents, w)
	of.fsys.gc.enqueue(freed...)
	return nil
}

// seal encrypts the given dirty blocks into one object body, slot i holding blocks[i], spreading
// the work over the available cores.
func (of *openFile) seal(blocks []uint64, gen uint64) []byte {
	out := getSealed(len(blocks) * crypt.CipherBS)
	workers := min(runtime.GOMAXPROCS(0), (len(blocks)+63)/64)
	if workers <= 1 {
		for i, b := range blocks {
			of.cipher.SealBlock(out[i*crypt.CipherBS:i*crypt.CipherBS:(i+1)*crypt.CipherBS], of.dirty[b], b, gen)
		}
		return out
	}
	var wg sync.WaitGroup
	per := (len(blocks) + workers - 1) / workers
	for w := 0; w < workers; w++ {
		lo, hi := w*per, min((w+1)*per, len(blocks))
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				b := blocks[i]
				of.cipher.SealBlock(out[i*crypt.CipherBS:i*crypt.CipherBS:(i+1)*crypt.CipherBS], of.dirty[b], b, gen)
			}
		}()
	}
	wg.Wait()
	return out
}

// objectKey names the object written by generation gen of a file: "<file id>/<gen, 16 hex>".
func objectKey(id crypt.FileID, gen uint64) string {
	return fmt.Sprintf("%s/%016x", id, gen)
}

// mergeRanges returns the ranges sorted, with overlapping and touching ones merged.
func mergeRanges(rs []meta.BlockRange) []meta.BlockRange {
	if len(rs) == 0 {
		return nil
	}
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b meta.BlockRange) int { return cmp.Compare(a.Block, b.Block) })
	out := s[:1]
	for _, r := range s[1:] {
		p := &out[len(out)-1]
		if r.Block <= p.Block+p.Count {
			p.Count = max(p.Count, r.Block+r.Count-p.Block)
			continue
		}
		out = append(out, r)
	}
	return out
}
