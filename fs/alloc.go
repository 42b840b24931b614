package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/kmipfs/kmipfs/meta"
)

// fallocate(2) and lseek(2) SEEK_DATA/SEEK_HOLE: the sparse-file operations.

var (
	_ gofs.NodeAllocater = (*node)(nil)
	_ gofs.NodeLseeker   = (*node)(nil)
)

// Linux constants that package syscall lacks (golang.org/x/sys/unix has them, but kmipfs does
// not depend on it directly).
const (
	fallocKeepSize  = 0x01 // FALLOC_FL_KEEP_SIZE
	fallocPunchHole = 0x02 // FALLOC_FL_PUNCH_HOLE
	fallocZeroRange = 0x10 // FALLOC_FL_ZERO_RANGE
	seekData        = 3    // SEEK_DATA
	seekHole        = 4    // SEEK_HOLE
)

// maxFileSize is the largest file size kmipfs accepts: the kernel's limit for a FUSE file
// (MAX_LFS_FILESIZE on 64-bit Linux).
const maxFileSize = 1<<63 - 1

// Allocate implements fallocate(2). The object store has no fixed capacity to reserve, so the
// default mode and FALLOC_FL_KEEP_SIZE only set the size (a later write can still fail with
// ENOSPC if the store fills up). FALLOC_FL_PUNCH_HOLE and FALLOC_FL_ZERO_RANGE drop the whole
// blocks of the range from the extent map (they cost nothing and read as zeros) and re-encrypt the
// partial blocks at its edges with zeros in the range. The other modes (COLLAPSE_RANGE,
// INSERT_RANGE, UNSHARE_RANGE) are EOPNOTSUPP.
func (n *node) Allocate(ctx context.Context, fh gofs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	ctx = detach(ctx)
	const known = fallocKeepSize | fallocPunchHole | fallocZeroRange
	switch {
	case mode&^known != 0:
		return syscall.EOPNOTSUPP
	case mode&fallocPunchHole != 0 && mode&fallocKeepSize == 0,
		mode&fallocPunchHole != 0 && mode&fallocZeroRange != 0:
		return syscall.EOPNOTSUPP
	case size == 0:
		return syscall.EINVAL
	case off > maxFileSize || size > maxFileSize-off:
		return syscall.EFBIG
	}
	of := n.fsys.lookupOpen(n.ino)
	if of == nil {
		return syscall.EBADF
	}
	of.mu.Lock()
	defer of.mu.Unlock()
	if err := of.checkKeyLocked(ctx); err != nil {
		return n.fsys.toErrno(err, "fallocate", "bucket", of.bucket, "path", n.path(), "key_name", of.keyName)
	}
	if err := of.allocateLocked(ctx, off, off+size, mode); err != nil {
		return n.fsys.toErrno(err, "fallocate", "bucket", of.bucket, "path", n.path(), "offset", off, "length", size)
	}
	return 0
}

// allocateLocked applies fallocate mode to the bytes [off, end) and commits the result.
func (of *openFile) allocateLocked(ctx context.Context, off, end uint64, mode uint32) error {
	keepSize := mode&fallocKeepSize != 0
	changed := false
	if mode&(fallocPunchHole|fallocZeroRange) != 0 {
		// Bytes at or past the end of the file are zeros already (blocks are zero-filled past
		// the end, and truncate re-encrypts the cut block).
		if zeroEnd := min(end, of.size); off < zeroEnd {
			if err := of.zeroLocked(ctx, off, zeroEnd); err != nil {
				return err
			}
		}
		changed = true
	}
	if !keepSize && end > of.size {
		of.size = end
		changed = true
	}
	if !changed {
		return nil
	}
	t := now()
	of.mtime, of.ctime = t, t
	of.metaDirty = true
	return of.flushLocked(ctx)
}

// zeroLocked makes the bytes [off, end) read as zeros: whole blocks become holes, partial blocks
// are rewritten.
func (of *openFile) zeroLocked(ctx context.Context, off, end uint64) error {
	first, last := off/blockSize, (end-1)/blockSize
	// Whole blocks strictly inside the range.
	holeStart, holeEnd := first, last+1
	if off%blockSize != 0 {
		holeStart++
	}
	if end%blockSize != 0 && last >= holeStart {
		holeEnd--
	}
	for _, b := range []uint64{first, last} {
		if b >= holeStart && b < holeEnd {
			continue
		}
		blk, ok := of.dirty[b]
		if !ok {
			var err error
			if blk, err = of.loadBlock(ctx, b); err != nil {
				return err
			}
			of.dirty[b] = blk
		}
		lo := max(off, b*blockSize) - b*blockSize
		hi := min(end, (b+1)*blockSize) - b*blockSize
		clear(blk[lo:hi])
	}
	if holeStart < holeEnd {
		for b := range of.dirty {
			if b >= holeStart && b < holeEnd {
				delete(of.dirty, b)
			}
		}
		of.holes = mergeRanges(append(of.holes, meta.BlockRange{Block: holeStart, Count: holeEnd - holeStart}))
	}
	of.account()
	return nil
}

// Lseek implements SEEK_DATA and SEEK_HOLE (the kernel handles the other whence values itself).
// Data is found at block granularity: a block that was ever written (and not punched or cut off
// since) is data, even where it holds zeros, as on ext4. There is an implicit hole at the end of
// the file.
func (n *node) Lseek(ctx context.Context, fh gofs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	ctx = detach(ctx)
	if whence != seekData && whence != seekHole {
		return 0, syscall.EINVAL
	}
	of := n.fsys.lookupOpen(n.ino)
	if of == nil {
		return 0, syscall.EBADF
	}
	of.mu.Lock()
	defer of.mu.Unlock()
	size := of.size
	if off >= size {
		return 0, syscall.ENXIO
	}
	b0 := off / blockSize
	runs := of.dataRunsLocked()
	if whence == seekData {
		for _, r := range runs {
			if r.Block+r.Count > b0 {
				if pos := max(off, r.Block*blockSize); pos < size {
					return pos, 0
				}
				break
			}
		}
		return 0, syscall.ENXIO
	}
	cur := b0
	for _, r := range runs {
		if r.Block+r.Count <= cur {
			continue
		}
		if r.Block > cur {
			break
		}
		cur = r.Block + r.Count
	}
	return min(max(off, cur*blockSize), size), 0
}

// dataRunsLocked returns the blocks that hold data, committed or dirty, as sorted, merged ranges.
func (of *openFile) dataRunsLocked() []meta.BlockRange {
	runs := make([]meta.BlockRange, 0, len(of.extents)+len(of.dirty))
	// of.holes is sorted (zeroLocked keeps it merged), which the sweep below relies on.
	for _, e := range of.extents {
		start, end := e.Block, e.Block+e.Count
		if of.truncated {
			end = min(end, of.keepBlocks)
		}
		// Cut out pending holes.
		for _, h := range of.holes {
			if start >= end {
				break
			}
			if h.Block+h.Count <= start || h.Block >= end {
				continue
			}
			if h.Block > start {
				runs = append(runs, meta.BlockRange{Block: start, Count: h.Block - start})
			}
			start = h.Block + h.Count
		}
		if start < end {
			runs = append(runs, meta.BlockRange{Block: start, Count: end - start})
		}
	}
	for b := range of.dirty {
		runs = append(runs, meta.BlockRange{Block: b, Count: 1})
	}
	return mergeRanges(runs)
}
