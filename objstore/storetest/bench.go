package storetest

import (
	"fmt"
	"testing"

	"github.com/kmipfs/kmipfs/objstore"
)

// benchSizes are the object sizes the benchmarks use: one crypt block, a typical flush, a large flush.
var benchSizes = []struct {
	name string
	size int
}{
	{"4KiB", 4 << 10},
	{"64KiB", 64 << 10},
	{"1MiB", 1 << 20},
}

// benchKeys is how many distinct keys Put cycles through, so that a long run overwrites objects instead of
// filling the disk, and the ranged Gets do not always hit one file.
const benchKeys = 16

// Bench runs the storage benchmarks against the Store that newStore returns (called once per sub-benchmark; it
// must return a new, empty Store): Put of whole objects, ranged Get of a whole object, and ranged Get of one 4 KiB
// block from the middle of an object, for 4 KiB, 64 KiB and 1 MiB objects. Throughput is reported with b.SetBytes.
func Bench(b *testing.B, newStore func(b *testing.B) objstore.Store) {
	for _, bs := range benchSizes {
		b.Run("Put/"+bs.name, func(b *testing.B) {
			s := newStore(b)
			mustCreateBucket(b, s, "bench")
			data := payload(1, bs.size)
			b.SetBytes(int64(bs.size))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := s.Put(b.Context(), "bench", benchKey(i), data); err != nil {
					b.Fatalf("Put: %v", err)
				}
			}
		})
		b.Run("Get/"+bs.name, func(b *testing.B) {
			s := benchFill(b, newStore, bs.size)
			b.SetBytes(int64(bs.size))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				got, err := s.Get(b.Context(), "bench", benchKey(i), 0, int64(bs.size))
				if err != nil || len(got) != bs.size {
					b.Fatalf("Get: %d bytes, %v", len(got), err)
				}
			}
		})
		b.Run("GetBlock/"+bs.name, func(b *testing.B) {
			const block = 4 << 10
			s := benchFill(b, newStore, bs.size)
			blocks := bs.size / block
			b.SetBytes(block)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				off := int64((i*7)%blocks) * block
				got, err := s.Get(b.Context(), "bench", benchKey(i), off, block)
				if err != nil || len(got) != block {
					b.Fatalf("Get(off=%d): %d bytes, %v", off, len(got), err)
				}
			}
		})
	}
}

func benchKey(i int) string {
	return fmt.Sprintf("0123456789abcdef0123456789abcdef/%016x", i%benchKeys)
}

// benchFill returns a new store with benchKeys objects of size bytes in the bucket "bench".
func benchFill(b *testing.B, newStore func(b *testing.B) objstore.Store, size int) objstore.Store {
	b.Helper()
	s := newStore(b)
	mustCreateBucket(b, s, "bench")
	for i := range benchKeys {
		mustPut(b, s, "bench", benchKey(i), payload(uint64(i), size))
	}
	return s
}
