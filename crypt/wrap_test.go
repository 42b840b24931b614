package crypt_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/kmipfs/kmipfs/crypt"
)

func TestWrapUnwrapRoundTrip(t *testing.T) {
	kek, dek, id := newDataKey(t), newDataKey(t), newFileID(t)
	for _, name := range []string{"pykmip-mybucketkey", "", "a", "ключ", string(make([]byte, 300))} {
		wrapped, err := crypt.WrapKey(kek, dek, id, name)
		if err != nil {
			t.Fatalf("WrapKey(name %q): %v", name, err)
		}
		if len(wrapped) != crypt.WrappedKeySize {
			t.Fatalf("wrapped key is %d bytes, want %d", len(wrapped), crypt.WrappedKeySize)
		}
		if wrapped[0] != crypt.Version {
			t.Fatalf("first byte %d, want Version %d", wrapped[0], crypt.Version)
		}
		if bytes.Contains(wrapped, dek[:8]) {
			t.Fatal("wrapped key contains the dek")
		}
		got, err := crypt.UnwrapKey(kek, wrapped, id, name)
		if err != nil {
			t.Fatalf("UnwrapKey(name %q): %v", name, err)
		}
		if !bytes.Equal(got, dek) {
			t.Fatal("UnwrapKey returned another key")
		}
		if &got[0] == &dek[0] {
			t.Fatal("UnwrapKey returned the caller's slice")
		}
	}
}

func TestWrapFreshNonce(t *testing.T) {
	kek, dek, id := newDataKey(t), newDataKey(t), newFileID(t)
	a, err := crypt.WrapKey(kek, dek, id, "k")
	if err != nil {
		t.Fatal(err)
	}
	b, err := crypt.WrapKey(kek, dek, id, "k")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Fatal("two wraps of the same key are identical")
	}
}

// TestUnwrappedKeyOpensBlocks walks the whole envelope: a block sealed under a fresh DEK opens
// under the DEK recovered from its wrapped form.
func TestUnwrappedKeyOpensBlocks(t *testing.T) {
	kek, dek, id := newDataKey(t), newDataKey(t), newFileID(t)
	wrapped, err := crypt.WrapKey(kek, dek, id, "bucketkey")
	if err != nil {
		t.Fatal(err)
	}
	sealed := newCipher(t, dek, id).SealBlock(nil, []byte("payload"), 0, 1)
	crypt.Zero(dek)
	dek2, err := crypt.UnwrapKey(kek, wrapped, id, "bucketkey")
	if err != nil {
		t.Fatal(err)
	}
	got, err := newCipher(t, dek2, id).OpenBlock(nil, sealed, 0, 1)
	if err != nil || !bytes.Equal(got, padded([]byte("payload"))) {
		t.Fatalf("block did not open under the unwrapped key: %v", err)
	}
}

func TestUnwrapKeyTamper(t *testing.T) {
	kek, dek, id := newDataKey(t), newDataKey(t), newFileID(t)
	const name = "pykmip-mybucketkey"
	wrapped, err := crypt.WrapKey(kek, dek, id, name)
	if err != nil {
		t.Fatal(err)
	}
	otherID := id
	otherID[crypt.FileIDSize-1] ^= 1
	flip := func(i int) []byte {
		b := bytes.Clone(wrapped)
		b[i] ^= 0x10
		return b
	}
	withVersion := func(v byte) []byte {
		b := bytes.Clone(wrapped)
		b[0] = v
		return b
	}
	tests := []struct {
		name    string
		kek     []byte
		wrapped []byte
		id      crypt.FileID
		keyName string
		want    error
	}{
		{"wrong kek", newDataKey(t), wrapped, id, name, crypt.ErrAuth},
		{"wrong file id", kek, wrapped, otherID, name, crypt.ErrAuth},
		{"zero file id", kek, wrapped, crypt.FileID{}, name, crypt.ErrAuth},
		{"wrong key name", kek, wrapped, id, "pykmip-otherkey", crypt.ErrAuth},
		{"key name prefix", kek, wrapped, id, name[:len(name)-1], crypt.ErrAuth},
		{"key name extended", kek, wrapped, id, name + "x", crypt.ErrAuth},
		{"empty key name", kek, wrapped, id, "", crypt.ErrAuth},
		{"flip nonce", kek, flip(1), id, name, crypt.ErrAuth},
		{"flip ciphertext", kek, flip(1 + crypt.NonceSize + 5), id, name, crypt.ErrAuth},
		{"flip tag", kek, flip(crypt.WrappedKeySize - 1), id, name, crypt.ErrAuth},
		{"version 0", kek, withVersion(0), id, name, crypt.ErrFormat},
		{"version 2", kek, withVersion(2), id, name, crypt.ErrFormat},
		{"version 255", kek, withVersion(255), id, name, crypt.ErrFormat},
		{"empty", kek, nil, id, name, crypt.ErrFormat},
		{"version byte only", kek, wrapped[:1], id, name, crypt.ErrFormat},
		{"truncated by one", kek, wrapped[:crypt.WrappedKeySize-1], id, name, crypt.ErrFormat},
		{"tag missing", kek, wrapped[:crypt.WrappedKeySize-crypt.TagSize], id, name, crypt.ErrFormat},
		{"extended by one", kek, append(bytes.Clone(wrapped), 0), id, name, crypt.ErrFormat},
		{"short kek", kek[:16], wrapped, id, name, crypt.ErrFormat},
		{"long kek", append(bytes.Clone(kek), 0), wrapped, id, name, crypt.ErrFormat},
		{"nil kek", nil, wrapped, id, name, crypt.ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := crypt.UnwrapKey(tt.kek, tt.wrapped, tt.id, tt.keyName)
			if !errors.Is(err, tt.want) {
				t.Fatalf("UnwrapKey = %x, %v; want %v", got, err, tt.want)
			}
			if got != nil {
				t.Fatal("UnwrapKey returned a key with an error")
			}
		})
	}
	for i := 1; i < len(wrapped); i++ {
		if _, err := crypt.UnwrapKey(kek, flip(i), id, name); !errors.Is(err, crypt.ErrAuth) {
			t.Fatalf("byte %d flipped: %v, want ErrAuth", i, err)
		}
	}
	if _, err := crypt.UnwrapKey(kek, wrapped, id, name); err != nil {
		t.Fatalf("untampered wrapped key: %v", err)
	}
}

func TestWrapKeyRejects(t *testing.T) {
	kek, dek, id := newDataKey(t), newDataKey(t), newFileID(t)
	tests := []struct {
		name     string
		kek, dek []byte
	}{
		{"short kek", kek[:31], dek},
		{"long kek", append(bytes.Clone(kek), 1), dek},
		{"nil kek", nil, dek},
		{"short dek", kek, dek[:16]},
		{"long dek", kek, append(bytes.Clone(dek), 1)},
		{"nil dek", kek, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if w, err := crypt.WrapKey(tt.kek, tt.dek, id, "k"); !errors.Is(err, crypt.ErrFormat) || w != nil {
				t.Fatalf("WrapKey = %x, %v; want nil, ErrFormat", w, err)
			}
		})
	}
}

func TestErrorsDoNotLeakKeys(t *testing.T) {
	kek, dek, id := newDataKey(t), newDataKey(t), newFileID(t)
	wrapped, err := crypt.WrapKey(kek, dek, id, "k")
	if err != nil {
		t.Fatal(err)
	}
	wrapped[len(wrapped)-1] ^= 1
	_, err = crypt.UnwrapKey(kek, wrapped, id, "k")
	if err == nil {
		t.Fatal("tampered key unwrapped")
	}
	msg := []byte(err.Error())
	for _, secret := range [][]byte{kek, dek} {
		for _, enc := range []string{string(secret[:6]), hex.EncodeToString(secret[:6])} {
			if bytes.Contains(msg, []byte(enc)) {
				t.Fatalf("error %q contains key material", msg)
			}
		}
	}
	if !bytes.Contains(msg, []byte(id.String())) {
		t.Errorf("error %q does not name the file id", msg)
	}
}
