package crypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
)

// The reference construction below is written from docs/FORMAT.md, byte by byte, independently of
// appendBlockAAD and appendWrapAAD, and with caller-chosen nonces so that outputs are fixed. The
// vectors it must reproduce were computed once with a different AES-GCM implementation (Python's
// pyca/cryptography) and are listed in docs/FORMAT.md.

// refGCM returns plain AES-256-GCM with caller-chosen 12-byte nonces. FIPS 140-only mode refuses
// those; the reference is test-only, so it opts out of enforcement.
func refGCM(t testing.TB, key []byte) cipher.AEAD {
	t.Helper()
	var gcm cipher.AEAD
	var err error
	fips140.WithoutEnforcement(func() {
		var block cipher.Block
		if block, err = aes.NewCipher(key); err == nil {
			gcm, err = cipher.NewGCM(block)
		}
	})
	if err != nil {
		t.Fatalf("reference gcm: %v", err)
	}
	return gcm
}

func refBlockAAD(id FileID, block, gen uint64) []byte {
	aad := []byte("kmipfs-blk")
	aad = append(aad, 0x01) // Version
	aad = append(aad, id[:]...)
	for shift := 56; shift >= 0; shift -= 8 {
		aad = append(aad, byte(block>>shift))
	}
	for shift := 56; shift >= 0; shift -= 8 {
		aad = append(aad, byte(gen>>shift))
	}
	return aad
}

func refWrapAAD(id FileID, keyName string) []byte {
	aad := []byte("kmipfs-dek")
	aad = append(aad, 0x01) // Version
	aad = append(aad, id[:]...)
	aad = append(aad, byte(len(keyName)>>8), byte(len(keyName)))
	return append(aad, keyName...)
}

// refSealBlock seals one block with the given nonce: nonce || GCM(pad(plain)) with refBlockAAD.
func refSealBlock(t testing.TB, dek []byte, id FileID, nonce, plain []byte, block, gen uint64) []byte {
	t.Helper()
	if len(nonce) != NonceSize || len(plain) > PlainBS {
		t.Fatalf("refSealBlock: nonce %d bytes, plain %d bytes", len(nonce), len(plain))
	}
	padded := make([]byte, PlainBS)
	copy(padded, plain)
	out := append([]byte(nil), nonce...)
	return refGCM(t, dek).Seal(out, nonce, padded, refBlockAAD(id, block, gen))
}

// refWrapKey wraps dek with the given nonce: 0x01 || nonce || GCM(dek) with refWrapAAD.
func refWrapKey(t testing.TB, kek, dek []byte, id FileID, keyName string, nonce []byte) []byte {
	t.Helper()
	out := append([]byte{0x01}, nonce...)
	return refGCM(t, kek).Seal(out, nonce, dek, refWrapAAD(id, keyName))
}

func seq(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// Inputs of the known-answer vectors (docs/FORMAT.md, "Test vectors").
var (
	katKEK     = seq(0x80, KeySize) // 80 81 ... 9f
	katDEK     = seq(0x00, KeySize) // 00 01 ... 1f
	katFileID  = FileID{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	katKeyName = "pykmip-mybucketkey"
	katWrapNon = seq(0xa0, NonceSize)
)

const (
	katWrapAAD = "6b6d697066732d64656b0100112233445566778899aabbccddeeff001270796b6d69702d6d796275636b65746b6579"
	katWrapped = "01a0a1a2a3a4a5a6a7a8a9aaab000e723358a5953776660cbd880c8489bd3b14a23b9d943ad8b99c201ccbcfc335d1d152abf9255fa9902906294a1f86"
)

type blockKAT struct {
	name       string
	block, gen uint64
	nonce      []byte
	plain      []byte // before zero padding
	aad        string
	ct32       string // first 32 ciphertext bytes, sealed[12:44]
	tag        string // sealed[4108:4124]
	sha256     string // of the whole 4124-byte sealed block
}

func blockKATs() []blockKAT {
	full := make([]byte, PlainBS)
	for i := range full {
		full[i] = byte(i % 251)
	}
	return []blockKAT{
		{
			name: "short block 0 gen 1", block: 0, gen: 1,
			nonce: seq(0xb0, NonceSize), plain: []byte("hello, kmipfs\n"),
			aad:    "6b6d697066732d626c6b0100112233445566778899aabbccddeeff00000000000000000000000000000001",
			ct32:   "f13036c783e19b342a91e7c4be5788c2843c49d2152e8f355ece82f15c82f216",
			tag:    "9bccdc920c40f0afe6fa4b5d78382881",
			sha256: "be1598c038061beb47cfe7a33a21c6fae2eff499cebb2295568b104c2e7cfd3f",
		},
		{
			name: "full block 5 gen 7", block: 5, gen: 7,
			nonce: seq(0xc0, NonceSize), plain: full,
			aad:    "6b6d697066732d626c6b0100112233445566778899aabbccddeeff00000000000000050000000000000007",
			ct32:   "00492564737d905990d0f7a93ea1e6595c62f12c28f709ad32da51112b6061a9",
			tag:    "cc3659a073216c0bb7e36814a38d1638",
			sha256: "1cf7d88dc3a125b08e2baa23ede935c6b3671c12ebeec77acb3c59698010379a",
		},
		{
			name: "empty plaintext, big-endian check", block: 0x0102030405060708, gen: 0x1112131415161718,
			nonce: seq(0xd0, NonceSize), plain: nil,
			aad:    "6b6d697066732d626c6b0100112233445566778899aabbccddeeff01020304050607081112131415161718",
			ct32:   "2ca7e66e68a7f1a1585f28bff6d687e1cf0a5dd5409db846338a4e960f332ec7",
			tag:    "65e5a954e8dccd06e526206a0c803507",
			sha256: "df4ba0e9fe68559042a1a4f5bf398d9ce9df5fb1a64f620f97345e1c484006d1",
		},
	}
}

func TestKnownAnswerWrapKey(t *testing.T) {
	if got := hex.EncodeToString(appendWrapAAD(nil, katFileID, katKeyName)); got != katWrapAAD {
		t.Errorf("appendWrapAAD = %s, want %s", got, katWrapAAD)
	}
	if got := hex.EncodeToString(refWrapAAD(katFileID, katKeyName)); got != katWrapAAD {
		t.Errorf("refWrapAAD = %s, want %s", got, katWrapAAD)
	}
	ref := refWrapKey(t, katKEK, katDEK, katFileID, katKeyName, katWrapNon)
	if got := hex.EncodeToString(ref); got != katWrapped {
		t.Fatalf("reference wrap = %s, want %s", got, katWrapped)
	}
	if len(ref) != WrappedKeySize {
		t.Errorf("wrapped key is %d bytes, want WrappedKeySize %d", len(ref), WrappedKeySize)
	}
	dek, err := UnwrapKey(katKEK, unhex(t, katWrapped), katFileID, katKeyName)
	if err != nil {
		t.Fatalf("UnwrapKey(vector): %v", err)
	}
	if !bytes.Equal(dek, katDEK) {
		t.Errorf("UnwrapKey(vector) = %x, want %x", dek, katDEK)
	}
}

func TestKnownAnswerBlocks(t *testing.T) {
	c, err := NewCipher(katDEK, katFileID)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range blockKATs() {
		t.Run(v.name, func(t *testing.T) {
			aad := c.aad(v.block, v.gen)
			if got := hex.EncodeToString(aad[:]); got != v.aad {
				t.Errorf("Cipher.aad = %s, want %s", got, v.aad)
			}
			if got := hex.EncodeToString(appendBlockAAD(nil, katFileID, v.block, v.gen)); got != v.aad {
				t.Errorf("appendBlockAAD = %s, want %s", got, v.aad)
			}
			if got := hex.EncodeToString(refBlockAAD(katFileID, v.block, v.gen)); got != v.aad {
				t.Errorf("refBlockAAD = %s, want %s", got, v.aad)
			}

			sealed := refSealBlock(t, katDEK, katFileID, v.nonce, v.plain, v.block, v.gen)
			if len(sealed) != CipherBS {
				t.Fatalf("sealed block is %d bytes, want %d", len(sealed), CipherBS)
			}
			sum := sha256.Sum256(sealed)
			for _, check := range []struct{ what, got, want string }{
				{"nonce", hex.EncodeToString(sealed[:NonceSize]), hex.EncodeToString(v.nonce)},
				{"first 32 ciphertext bytes", hex.EncodeToString(sealed[NonceSize : NonceSize+32]), v.ct32},
				{"tag", hex.EncodeToString(sealed[CipherBS-TagSize:]), v.tag},
				{"sha256", hex.EncodeToString(sum[:]), v.sha256},
			} {
				if check.got != check.want {
					t.Errorf("%s = %s, want %s", check.what, check.got, check.want)
				}
			}

			plain, err := c.OpenBlock(nil, sealed, v.block, v.gen)
			if err != nil {
				t.Fatalf("OpenBlock(vector): %v", err)
			}
			want := make([]byte, PlainBS)
			copy(want, v.plain)
			if !bytes.Equal(plain, want) {
				t.Errorf("OpenBlock(vector) differs from the zero-padded plaintext")
			}
		})
	}
}

// TestSealMatchesReference checks that the production seal and wrap paths, whose nonces come from
// crypto/cipher, lay out exactly the documented bytes: re-sealing with the nonce they chose must
// reproduce their output.
func TestSealMatchesReference(t *testing.T) {
	c, err := NewCipher(katDEK, katFileID)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range blockKATs() {
		sealed := c.SealBlock(nil, v.plain, v.block, v.gen)
		ref := refSealBlock(t, katDEK, katFileID, sealed[:NonceSize], v.plain, v.block, v.gen)
		if !bytes.Equal(sealed, ref) {
			t.Errorf("%s: SealBlock output differs from the reference construction with its nonce", v.name)
		}
	}
	wrapped, err := WrapKey(katKEK, katDEK, katFileID, katKeyName)
	if err != nil {
		t.Fatal(err)
	}
	ref := refWrapKey(t, katKEK, katDEK, katFileID, katKeyName, wrapped[1:1+NonceSize])
	if !bytes.Equal(wrapped, ref) {
		t.Errorf("WrapKey output differs from the reference construction with its nonce")
	}
}

// TestDomainSeparation checks that a wrapped key's AAD can never equal a block's: the labels
// differ in their first bytes, so no choice of ids, names or numbers makes them collide.
func TestDomainSeparation(t *testing.T) {
	if len(blockLabel) != len(wrapLabel) || blockLabel == wrapLabel {
		t.Fatalf("labels %q and %q must be distinct and of equal length", blockLabel, wrapLabel)
	}
	w := appendWrapAAD(nil, katFileID, "")
	b := appendBlockAAD(nil, katFileID, 0, 0)
	if bytes.Equal(w[:len(wrapLabel)], b[:len(blockLabel)]) {
		t.Error("wrap and block AAD share their label")
	}
	if blockAADSize != 43 || len(b) != blockAADSize {
		t.Errorf("block AAD is %d bytes (blockAADSize %d), want 43", len(b), blockAADSize)
	}
}

func TestNameLengthLimit(t *testing.T) {
	long := string(make([]byte, maxKeyNameLen))
	w, err := WrapKey(katKEK, katDEK, katFileID, long)
	if err != nil {
		t.Fatalf("WrapKey with a %d-byte name: %v", len(long), err)
	}
	if _, err := UnwrapKey(katKEK, w, katFileID, long); err != nil {
		t.Fatalf("UnwrapKey with a %d-byte name: %v", len(long), err)
	}
	tooLong := long + "x"
	if _, err := WrapKey(katKEK, katDEK, katFileID, tooLong); !errors.Is(err, ErrFormat) {
		t.Errorf("WrapKey with a %d-byte name: %v, want ErrFormat", len(tooLong), err)
	}
	if _, err := UnwrapKey(katKEK, w, katFileID, tooLong); !errors.Is(err, ErrFormat) {
		t.Errorf("UnwrapKey with a %d-byte name: %v, want ErrFormat", len(tooLong), err)
	}
}
