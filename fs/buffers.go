package fs

import (
	"sync"

	"github.com/kmipfs/kmipfs/crypt"
)

// Buffer pools for the write path. A sequential write fills 4096 dirty blocks and one 16 MiB
// sealed object per flush; allocating them afresh each time makes the Go heap grow and the
// runtime return memory to the kernel and fault it in again, which measured as the largest cost
// of a streaming write after the FUSE copy itself. Pooled buffers stay warm.

var blockPool = sync.Pool{New: func() any { return new([blockSize]byte) }}

// getBlock returns a zeroed block-sized buffer.
func getBlock() []byte {
	b := blockPool.Get().(*[blockSize]byte)
	clear(b[:])
	return b[:]
}

// putBlock returns a block from getBlock or loadBlock once nothing refers to it.
func putBlock(b []byte) {
	if cap(b) == blockSize {
		blockPool.Put((*[blockSize]byte)(b[:blockSize]))
	}
}

// sealedPoolMin is the smallest sealed object worth pooling (256 blocks, 1 MiB of data): small
// flushes are cheap to allocate and would otherwise pin large buffers for small needs.
const sealedPoolMin = 256 * crypt.CipherBS

var sealedPool sync.Pool // of *[]byte

// getSealed returns a buffer of n bytes for a sealed object; its contents are overwritten.
func getSealed(n int) []byte {
	if n >= sealedPoolMin {
		if p, ok := sealedPool.Get().(*[]byte); ok {
			if cap(*p) >= n {
				return (*p)[:n]
			}
		}
	}
	return make([]byte, n)
}

// putSealed gives a sealed object's buffer back once the store has taken the data.
func putSealed(b []byte) {
	if cap(b) >= sealedPoolMin {
		sealedPool.Put(&b)
	}
}
