package crypt_test

import (
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
