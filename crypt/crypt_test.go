package crypt_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/kmipfs/kmipfs/crypt"
)

func newFileID(t testing.TB) crypt.FileID {
	t.Helper()
	id, err := crypt.NewFileID()
	if err != nil {
		t.Fatalf("NewFileID: %v", err)
	}
	return id
}

func newDataKey(t testing.TB) []byte {
	t.Helper()
	dek, err := crypt.NewDataKey()
	if err != nil {
		t.Fatalf("NewDataKey: %v", err)
	}
	return dek
}

func newCipher(t testing.TB, dek []byte, id crypt.FileID) *crypt.Cipher {
	t.Helper()
	c, err := crypt.NewCipher(dek, id)
	if err != nil {
		t.Fatalf("NewCipher: %v", err)
	}
	t.Cleanup(c.Destroy)
	return c
}

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestConstants(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"Version", crypt.Version, 1},
		{"PlainBS", crypt.PlainBS, 4096},
		{"CipherBS", crypt.CipherBS, 4124},
		{"WrappedKeySize", crypt.WrappedKeySize, 61},
		{"KeySize", crypt.KeySize, 32},
		{"FileIDSize", crypt.FileIDSize, 16},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d (changing it changes the on-store format)", c.name, c.got, c.want)
		}
	}
}

func TestFileID(t *testing.T) {
	seen := make(map[crypt.FileID]bool)
	for range 100 {
		id := newFileID(t)
		if seen[id] {
			t.Fatalf("NewFileID returned %s twice", id)
		}
		seen[id] = true
		s := id.String()
		if len(s) != 32 || strings.ToLower(s) != s {
			t.Fatalf("String() = %q, want 32 lowercase hex digits", s)
		}
		back, err := crypt.ParseFileID(s)
		if err != nil || back != id {
			t.Fatalf("ParseFileID(%q) = %s, %v; want %s", s, back, err, id)
		}
	}
	if got := (crypt.FileID{0x00, 0x11, 0xfe}).String(); got != "0011fe00000000000000000000000000" {
		t.Errorf("String() = %q", got)
	}
}

func TestParseFileIDRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"0011",
		"00112233445566778899aabbccddeef",   // 31
		"00112233445566778899aabbccddeeff0", // 33
		"00112233445566778899AABBCCDDEEFF",  // not canonical
		"00112233445566778899aabbccddeefg",
		"00112233445566778899aabbccddee f",
		"0x112233445566778899aabbccddeeff",
	} {
		if id, err := crypt.ParseFileID(s); !errors.Is(err, crypt.ErrFormat) {
			t.Errorf("ParseFileID(%q) = %s, %v; want ErrFormat", s, id, err)
		}
	}
}

func TestNewDataKey(t *testing.T) {
	a, b := newDataKey(t), newDataKey(t)
	if len(a) != crypt.KeySize || len(b) != crypt.KeySize {
		t.Fatalf("NewDataKey lengths %d, %d; want %d", len(a), len(b), crypt.KeySize)
	}
	if bytes.Equal(a, b) {
		t.Fatal("two data keys are equal")
	}
}

func TestZero(t *testing.T) {
	b := randBytes(t, 100)
	crypt.Zero(b)
	if !bytes.Equal(b, make([]byte, 100)) {
		t.Fatalf("Zero left %x", b)
	}
	crypt.Zero(nil) // must not panic
}

func TestNewCipherKeySize(t *testing.T) {
	id := newFileID(t)
	for _, n := range []int{0, 1, 16, 24, 31, 33, 64} {
		if _, err := crypt.NewCipher(make([]byte, n), id); !errors.Is(err, crypt.ErrFormat) {
			t.Errorf("NewCipher with a %d-byte key: %v, want ErrFormat", n, err)
		}
	}
}

func TestNewCipherCopiesKey(t *testing.T) {
	dek, id := newDataKey(t), newFileID(t)
	keep := bytes.Clone(dek)
	c := newCipher(t, dek, id)
	crypt.Zero(dek) // callers wipe their copy right after NewCipher
	sealed := c.SealBlock(nil, []byte("data"), 0, 1)
	other := newCipher(t, keep, id)
	if _, err := other.OpenBlock(nil, sealed, 0, 1); err != nil {
		t.Fatalf("block sealed after zeroing the caller's dek does not open under the original dek: %v", err)
	}
}
