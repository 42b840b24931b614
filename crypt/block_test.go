package crypt_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kmipfs/kmipfs/crypt"
)

func padded(plain []byte) []byte {
	p := make([]byte, crypt.PlainBS)
	copy(p, plain)
	return p
}

func TestSealOpenRoundTrip(t *testing.T) {
	c := newCipher(t, newDataKey(t), newFileID(t))
	for _, n := range []int{0, 1, 15, 16, 17, 1000, crypt.PlainBS - 1, crypt.PlainBS} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := randBytes(t, n)
			prefix := []byte("prefix")
			sealed := c.SealBlock(bytes.Clone(prefix), plain, 3, 9)
			if len(sealed) != len(prefix)+crypt.CipherBS {
				t.Fatalf("SealBlock appended %d bytes, want CipherBS %d", len(sealed)-len(prefix), crypt.CipherBS)
			}
			if !bytes.Equal(sealed[:len(prefix)], prefix) {
				t.Fatal("SealBlock changed dst's existing bytes")
			}
			sealed = sealed[len(prefix):]
			if n > 16 && bytes.Contains(sealed, plain[:16]) {
				t.Fatal("sealed block contains the plaintext")
			}

			got, err := c.OpenBlock(bytes.Clone(prefix), sealed, 3, 9)
			if err != nil {
				t.Fatalf("OpenBlock: %v", err)
			}
			if !bytes.Equal(got[:len(prefix)], prefix) {
				t.Fatal("OpenBlock changed dst's existing bytes")
			}
			if got := got[len(prefix):]; !bytes.Equal(got, padded(plain)) {
				t.Fatalf("OpenBlock returned %d bytes that differ from the zero-padded plaintext", len(got))
			}
		})
	}
}

func TestSealFreshNonce(t *testing.T) {
	c := newCipher(t, newDataKey(t), newFileID(t))
	plain := []byte("same plaintext, same block, same generation")
	a := c.SealBlock(nil, plain, 1, 1)
	b := c.SealBlock(nil, plain, 1, 1)
	if bytes.Equal(a[:crypt.NonceSize], b[:crypt.NonceSize]) {
		t.Fatal("two seals used the same nonce")
	}
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same block are identical")
	}
}

func TestSealReusesCapacity(t *testing.T) {
	c := newCipher(t, newDataKey(t), newFileID(t))
	buf := make([]byte, 0, 4*crypt.CipherBS)
	plain := randBytes(t, crypt.PlainBS)
	for i := range 4 {
		buf = c.SealBlock(buf, plain[:i*1000], uint64(i), 1)
	}
	if cap(buf) != 4*crypt.CipherBS {
		t.Fatalf("SealBlock reallocated a buffer that had room")
	}
	// The object layout: slot i at i*CipherBS.
	for i := range 4 {
		slot := buf[i*crypt.CipherBS : (i+1)*crypt.CipherBS]
		got, err := c.OpenBlock(nil, slot, uint64(i), 1)
		if err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
		if !bytes.Equal(got, padded(plain[:i*1000])) {
			t.Fatalf("slot %d: wrong plaintext", i)
		}
	}
}

// TestSealPadsOverStaleCapacity seals short blocks into a buffer whose spare capacity holds the
// plaintext of an earlier block, as a reused flush buffer does: the padding must be zeros, never
// leftovers of another block.
func TestSealPadsOverStaleCapacity(t *testing.T) {
	c := newCipher(t, newDataKey(t), newFileID(t))
	buf := bytes.Repeat([]byte{0xa5}, 2*crypt.CipherBS)
	for _, n := range []int{0, 1, 100, crypt.PlainBS - 1} {
		plain := randBytes(t, n)
		sealed := c.SealBlock(buf[:0], plain, 1, 1)
		got, err := c.OpenBlock(nil, sealed, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, padded(plain)) {
			t.Fatalf("%d-byte block: padding is not zeros", n)
		}
	}
}

func TestSealPlainAliasesDst(t *testing.T) {
	c := newCipher(t, newDataKey(t), newFileID(t))
	want := randBytes(t, 3000)
	// plain lives in dst's spare capacity, where the sealed block will be written.
	buf := make([]byte, 0, crypt.CipherBS)
	plain := append(buf[:0], want...)
	sealed := c.SealBlock(buf, plain, 0, 1)
	got, err := c.OpenBlock(nil, sealed, 0, 1)
	if err != nil || !bytes.Equal(got, padded(want)) {
		t.Fatalf("plaintext aliasing dst did not round-trip: %v", err)
	}
}

func TestOpenInPlace(t *testing.T) {
	c := newCipher(t, newDataKey(t), newFileID(t))
	want := randBytes(t, crypt.PlainBS)
	sealed := c.SealBlock(nil, want, 7, 2)
	got, err := c.OpenBlock(sealed[:0], sealed, 7, 2)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("in-place OpenBlock: %v", err)
	}
}

func TestSealBlockTooLongPanics(t *testing.T) {
	c := newCipher(t, newDataKey(t), newFileID(t))
	defer func() {
		if recover() == nil {
			t.Fatal("SealBlock with PlainBS+1 bytes did not panic")
		}
	}()
	c.SealBlock(nil, make([]byte, crypt.PlainBS+1), 0, 1)
}

func TestOpenBlockTamper(t *testing.T) {
	dek, id := newDataKey(t), newFileID(t)
	c := newCipher(t, dek, id)
	const block, gen = 10, 5
	sealed := c.SealBlock(nil, randBytes(t, crypt.PlainBS), block, gen)
	neighbour := c.SealBlock(nil, randBytes(t, crypt.PlainBS), block+1, gen)

	otherID := newCipher(t, dek, newFileID(t))             // another file, same DEK
	otherDEK := newCipher(t, newDataKey(t), id)            // same file id, another DEK
	otherBoth := newCipher(t, newDataKey(t), newFileID(t)) // another file altogether

	flip := func(i int, bit uint) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 1 << bit
		return b
	}
	tests := []struct {
		name       string
		c          *crypt.Cipher
		sealed     []byte
		block, gen uint64
	}{
		{"flip nonce first bit", c, flip(0, 0), block, gen},
		{"flip nonce last bit", c, flip(crypt.NonceSize-1, 7), block, gen},
		{"flip ciphertext first byte", c, flip(crypt.NonceSize, 3), block, gen},
		{"flip ciphertext middle", c, flip(crypt.NonceSize+crypt.PlainBS/2, 5), block, gen},
		{"flip ciphertext last byte", c, flip(crypt.NonceSize+crypt.PlainBS-1, 1), block, gen},
		{"flip tag first byte", c, flip(crypt.CipherBS-crypt.TagSize, 0), block, gen},
		{"flip tag last bit", c, flip(crypt.CipherBS-1, 7), block, gen},
		{"other block index", c, sealed, block + 1, gen},
		{"block index 0", c, sealed, 0, gen},
		{"swapped with neighbour", c, neighbour, block, gen},
		{"other file, same dek", otherID, sealed, block, gen},
		{"same file id, other dek", otherDEK, sealed, block, gen},
		{"other file, other dek", otherBoth, sealed, block, gen},
		{"replay: read as newer gen", c, sealed, block, gen + 1},
		{"older gen", c, sealed, block, gen - 1},
		{"gen with high bit", c, sealed, block, gen | 1<<63},
		{"truncated by one", c, sealed[:crypt.CipherBS-1], block, gen},
		{"truncated tag", c, sealed[:crypt.CipherBS-crypt.TagSize], block, gen},
		{"nonce and tag only", c, append(bytes.Clone(sealed[:crypt.NonceSize]), sealed[crypt.CipherBS-crypt.TagSize:]...), block, gen},
		{"empty", c, nil, block, gen},
		{"extended by one", c, append(bytes.Clone(sealed), 0), block, gen},
		{"two blocks", c, append(bytes.Clone(sealed), neighbour...), block, gen},
		{"all zeros (a hole read back from a sparse object)", c, make([]byte, crypt.CipherBS), block, gen},
		{"nonce swapped with neighbour", c, append(bytes.Clone(neighbour[:crypt.NonceSize]), sealed[crypt.NonceSize:]...), block, gen},
		{"tag swapped with neighbour", c, append(bytes.Clone(sealed[:crypt.CipherBS-crypt.TagSize]), neighbour[crypt.CipherBS-crypt.TagSize:]...), block, gen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.c.OpenBlock(nil, tt.sealed, tt.block, tt.gen)
			if !errors.Is(err, crypt.ErrAuth) {
				t.Fatalf("OpenBlock = %d bytes, %v; want ErrAuth", len(got), err)
			}
			if got != nil {
				t.Fatalf("OpenBlock returned %d bytes with an error", len(got))
			}
		})
	}
	// The untouched block still opens: the failures above are not a broken cipher.
	if _, err := c.OpenBlock(nil, sealed, block, gen); err != nil {
		t.Fatalf("untampered block: %v", err)
	}
}

// TestOpenBlockEveryByte flips one bit in every byte of a sealed block, cycling through the bit
// positions, so every part of the layout is shown to be authenticated.
func TestOpenBlockEveryByte(t *testing.T) {
	c := newCipher(t, newDataKey(t), newFileID(t))
	sealed := c.SealBlock(nil, randBytes(t, 100), 0, 1)
	buf := make([]byte, 0, crypt.PlainBS)
	for i := range sealed {
		b := bytes.Clone(sealed)
		b[i] ^= 1 << (i % 8)
		if _, err := c.OpenBlock(buf, b, 0, 1); !errors.Is(err, crypt.ErrAuth) {
			t.Fatalf("bit %d of byte %d flipped: %v, want ErrAuth", i%8, i, err)
		}
	}
}

func TestOpenBlockErrorMessages(t *testing.T) {
	c := newCipher(t, newDataKey(t), newFileID(t))
	for _, tt := range []struct {
		sealed []byte
		want   string
	}{
		{make([]byte, crypt.CipherBS), "crypt: open block 42 gen 7: "},
		// A wrong length is refused before any decryption is attempted, and says so.
		{make([]byte, crypt.CipherBS-1), "sealed block is 4123 bytes, want 4124"},
		{make([]byte, crypt.CipherBS+1), "sealed block is 4125 bytes, want 4124"},
	} {
		_, err := c.OpenBlock(nil, tt.sealed, 42, 7)
		if !errors.Is(err, crypt.ErrAuth) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("OpenBlock(%d bytes) = %v, want ErrAuth mentioning %q", len(tt.sealed), err, tt.want)
		}
	}
}

func TestCipherConcurrent(t *testing.T) {
	c := newCipher(t, newDataKey(t), newFileID(t))
	const workers, rounds = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			plain := make([]byte, crypt.PlainBS)
			sealed := make([]byte, 0, crypt.CipherBS)
			opened := make([]byte, 0, crypt.PlainBS)
			for r := range rounds {
				plain[0], plain[1] = byte(w), byte(r)
				block := uint64(w*rounds + r)
				sealed = c.SealBlock(sealed[:0], plain, block, uint64(r))
				var err error
				if opened, err = c.OpenBlock(opened[:0], sealed, block, uint64(r)); err != nil {
					errs <- fmt.Errorf("worker %d round %d: %w", w, r, err)
					return
				}
				if !bytes.Equal(opened, plain) {
					errs <- fmt.Errorf("worker %d round %d: wrong plaintext", w, r)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestDestroy(t *testing.T) {
	c, err := crypt.NewCipher(newDataKey(t), newFileID(t))
	if err != nil {
		t.Fatal(err)
	}
	sealed := c.SealBlock(nil, nil, 0, 1)
	c.Destroy()
	c.Destroy() // idempotent
	for name, use := range map[string]func(){
		"SealBlock": func() { c.SealBlock(nil, nil, 0, 1) },
		"OpenBlock": func() { _, _ = c.OpenBlock(nil, sealed, 0, 1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s after Destroy did not panic", name)
				}
			}()
			use()
		}()
	}
}
