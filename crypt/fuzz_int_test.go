package crypt

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The fuzz targets open attacker-controlled bytes under fixed keys (the known-answer inputs). They
// must never panic, must fail with ErrAuth or ErrFormat, and may succeed only on a genuine seal:
// when they succeed, re-sealing the result with the nonce found in the input must give back the
// input byte for byte. Seeds: f.Add below, plus the committed corpus in testdata/fuzz/, written by
// TestWriteFuzzSeeds.

func fuzzBlockSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, v := range blockKATs() {
		seeds = append(seeds, refSealBlock(t, katDEK, katFileID, v.nonce, v.plain, v.block, v.gen))
	}
	return seeds
}

func FuzzOpenBlock(f *testing.F) {
	seeds := fuzzBlockSeeds(f)
	for i, v := range blockKATs() {
		sealed := seeds[i]
		f.Add(sealed, v.block, v.gen)
		f.Add(sealed[:CipherBS-1], v.block, v.gen)
		f.Add(sealed, v.block+1, v.gen)
	}
	f.Add([]byte{}, uint64(0), uint64(0))
	f.Add(make([]byte, CipherBS), uint64(0), uint64(1))

	c, err := NewCipher(katDEK, katFileID)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, sealed []byte, block, gen uint64) {
		plain, err := c.OpenBlock(nil, sealed, block, gen)
		if err != nil {
			if !errors.Is(err, ErrAuth) {
				t.Fatalf("OpenBlock error %v is not ErrAuth", err)
			}
			if plain != nil {
				t.Fatal("OpenBlock returned plaintext with an error")
			}
			return
		}
		if len(plain) != PlainBS {
			t.Fatalf("OpenBlock returned %d bytes, want %d", len(plain), PlainBS)
		}
		if resealed := refSealBlock(t, katDEK, katFileID, sealed[:NonceSize], plain, block, gen); !bytes.Equal(resealed, sealed) {
			t.Fatal("OpenBlock accepted bytes that are not a seal of what it returned")
		}
	})
}

func fuzzWrapSeed(t testing.TB) []byte {
	return refWrapKey(t, katKEK, katDEK, katFileID, katKeyName, katWrapNon)
}

func FuzzUnwrapKey(f *testing.F) {
	w := fuzzWrapSeed(f)
	f.Add(w, katFileID[:], katKeyName)
	f.Add(w, katFileID[:], katKeyName+"x")
	f.Add(w[:WrappedKeySize-1], katFileID[:], katKeyName)
	f.Add(append([]byte{2}, w[1:]...), katFileID[:], katKeyName)
	f.Add([]byte{}, []byte{}, "")

	f.Fuzz(func(t *testing.T, wrapped, rawID []byte, keyName string) {
		var id FileID
		copy(id[:], rawID)
		dek, err := UnwrapKey(katKEK, wrapped, id, keyName)
		if err != nil {
			if !errors.Is(err, ErrAuth) && !errors.Is(err, ErrFormat) {
				t.Fatalf("UnwrapKey error %v is neither ErrAuth nor ErrFormat", err)
			}
			if dek != nil {
				t.Fatal("UnwrapKey returned a key with an error")
			}
			return
		}
		if len(dek) != KeySize {
			t.Fatalf("UnwrapKey returned %d bytes, want %d", len(dek), KeySize)
		}
		if rewrapped := refWrapKey(t, katKEK, dek, id, keyName, wrapped[1:1+NonceSize]); !bytes.Equal(rewrapped, wrapped) {
			t.Fatal("UnwrapKey accepted bytes that are not a wrap of what it returned")
		}
	})
}

// TestWriteFuzzSeeds writes the committed seed corpora in testdata/fuzz/ (deterministic: the
// seeds are sealed with fixed nonces). Run it with KMIPFS_WRITE_GOLDEN=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("KMIPFS_WRITE_GOLDEN") == "" {
		t.Skip("set KMIPFS_WRITE_GOLDEN=1 to write testdata/fuzz seed corpora")
	}
	write := func(target, name string, args ...any) {
		t.Helper()
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch a := a.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", a)
			case string:
				fmt.Fprintf(&b, "string(%q)\n", a)
			case uint64:
				fmt.Fprintf(&b, "uint64(%d)\n", a)
			default:
				t.Fatalf("unsupported seed type %T", a)
			}
		}
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	kats := blockKATs()
	seeds := fuzzBlockSeeds(t)
	for i, v := range kats {
		write("FuzzOpenBlock", fmt.Sprintf("kat-%d-valid", i), seeds[i], v.block, v.gen)
		flipped := bytes.Clone(seeds[i])
		flipped[CipherBS-1] ^= 1
		write("FuzzOpenBlock", fmt.Sprintf("kat-%d-flipped-tag", i), flipped, v.block, v.gen)
		write("FuzzOpenBlock", fmt.Sprintf("kat-%d-old-gen", i), seeds[i], v.block, v.gen-1)
		write("FuzzOpenBlock", fmt.Sprintf("kat-%d-truncated", i), seeds[i][:CipherBS-TagSize], v.block, v.gen)
	}
	write("FuzzOpenBlock", "zeros", make([]byte, CipherBS), uint64(0), uint64(0))

	w := fuzzWrapSeed(t)
	write("FuzzUnwrapKey", "kat-valid", w, katFileID[:], katKeyName)
	write("FuzzUnwrapKey", "kat-other-name", w, katFileID[:], "pykmip-otherkey")
	write("FuzzUnwrapKey", "kat-other-id", w, make([]byte, FileIDSize), katKeyName)
	write("FuzzUnwrapKey", "kat-version-2", append([]byte{2}, w[1:]...), katFileID[:], katKeyName)
	write("FuzzUnwrapKey", "kat-extended", append(bytes.Clone(w), 0), katFileID[:], katKeyName)
	write("FuzzUnwrapKey", "empty", []byte{}, []byte{}, "")
}
