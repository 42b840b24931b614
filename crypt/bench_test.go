package crypt_test

import (
	"bytes"
	"runtime"
	"sync"
	"testing"

	"github.com/kmipfs/kmipfs/crypt"
)

func BenchmarkSealBlock(b *testing.B) {
	c := newCipher(b, newDataKey(b), newFileID(b))
	plain := randBytes(b, crypt.PlainBS)
	dst := make([]byte, 0, crypt.CipherBS)
	b.SetBytes(crypt.PlainBS)
	b.ReportAllocs()
	var block uint64
	for b.Loop() {
		dst = c.SealBlock(dst[:0], plain, block, 1)
		block++
	}
}

func BenchmarkOpenBlock(b *testing.B) {
	c := newCipher(b, newDataKey(b), newFileID(b))
	sealed := c.SealBlock(nil, randBytes(b, crypt.PlainBS), 0, 1)
	dst := make([]byte, 0, crypt.PlainBS)
	b.SetBytes(crypt.PlainBS)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = c.OpenBlock(dst[:0], sealed, 0, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSealBlockParallel shows how sealing scales across cores with one shared Cipher, as fs
// does when it encrypts the blocks of a flush in parallel.
func BenchmarkSealBlockParallel(b *testing.B) {
	c := newCipher(b, newDataKey(b), newFileID(b))
	plain := randBytes(b, crypt.PlainBS)
	b.SetBytes(crypt.PlainBS)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]byte, 0, crypt.CipherBS)
		for pb.Next() {
			dst = c.SealBlock(dst[:0], plain, 0, 1)
		}
	})
}

func BenchmarkWrapKey(b *testing.B) {
	kek, dek, id := newDataKey(b), newDataKey(b), newFileID(b)
	b.SetBytes(crypt.KeySize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := crypt.WrapKey(kek, dek, id, "pykmip-mybucketkey"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnwrapKey(b *testing.B) {
	kek, dek, id := newDataKey(b), newDataKey(b), newFileID(b)
	wrapped, err := crypt.WrapKey(kek, dek, id, "pykmip-mybucketkey")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(crypt.KeySize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := crypt.UnwrapKey(kek, wrapped, id, "pykmip-mybucketkey"); err != nil {
			b.Fatal(err)
		}
	}
}

// benchSizes are the write sizes the data path sees: one block (a small file or a random 4 KiB
// write), a 128 KiB FUSE write (what dd bs=128k and the kernel's default max_write send), and a
// 1 MiB flush chunk (max_write of 1 MiB, sequential writes).
var benchSizes = []struct {
	name string
	size int
}{
	{"4KiB", 4 << 10},
	{"128KiB", 128 << 10},
	{"1MiB", 1 << 20},
}

// BenchmarkSeal seals a buffer of each size block by block into one object-sized slice, the way
// a flush builds the body of an object. Throughput is plaintext bytes per second.
func BenchmarkSeal(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			c := newCipher(b, newDataKey(b), newFileID(b))
			plain := randBytes(b, s.size)
			n := s.size / crypt.PlainBS
			obj := make([]byte, 0, n*crypt.CipherBS)
			b.SetBytes(int64(s.size))
			b.ReportAllocs()
			for b.Loop() {
				obj = obj[:0]
				for i := range n {
					obj = c.SealBlock(obj, plain[i*crypt.PlainBS:(i+1)*crypt.PlainBS], uint64(i), 1)
				}
			}
		})
	}
}

// BenchmarkOpen opens an object body of each size block by block into one plaintext buffer, as a
// ranged read of a run of blocks does.
func BenchmarkOpen(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			c := newCipher(b, newDataKey(b), newFileID(b))
			plain := randBytes(b, s.size)
			n := s.size / crypt.PlainBS
			var obj []byte
			for i := range n {
				obj = c.SealBlock(obj, plain[i*crypt.PlainBS:(i+1)*crypt.PlainBS], uint64(i), 1)
			}
			out := make([]byte, 0, s.size)
			b.SetBytes(int64(s.size))
			b.ReportAllocs()
			for b.Loop() {
				out = out[:0]
				for i := range n {
					var err error
					if out, err = c.OpenBlock(out, obj[i*crypt.CipherBS:(i+1)*crypt.CipherBS], uint64(i), 1); err != nil {
						b.Fatal(err)
					}
				}
			}
			if !bytes.Equal(out, plain) {
				b.Fatal("OpenBlock did not return the sealed plaintext")
			}
		})
	}
}

// BenchmarkSealParallelFlush seals a 1 MiB flush with its blocks split across GOMAXPROCS
// goroutines that share one Cipher and write into disjoint slots of one object buffer, the shape
// of fs's parallel encryption. Compared with BenchmarkSeal/1MiB it shows what the fan-out buys
// (and costs) on this machine's cores.
func BenchmarkSealParallelFlush(b *testing.B) {
	const size = 1 << 20
	c := newCipher(b, newDataKey(b), newFileID(b))
	plain := randBytes(b, size)
	n := size / crypt.PlainBS
	obj := make([]byte, n*crypt.CipherBS)
	workers := runtime.GOMAXPROCS(0)
	per := (n + workers - 1) / workers
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		var wg sync.WaitGroup
		for w := 0; w < n; w += per {
			wg.Go(func() {
				for i := w; i < min(w+per, n); i++ {
					slot := obj[i*crypt.CipherBS : i*crypt.CipherBS]
					c.SealBlock(slot, plain[i*crypt.PlainBS:(i+1)*crypt.PlainBS], uint64(i), 1)
				}
			})
		}
		wg.Wait()
	}
}
