package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
)

// wrapLabel starts the associated data of a wrapped key. It separates the domain of wrapped keys
// from that of blocks (blockLabel), so that no byte string is ever valid AAD for both.
const wrapLabel = "kmipfs-dek"

// maxKeyNameLen is the longest KMIP key name a wrapped key can be bound to: its length is encoded
// in two bytes of the associated data.
const maxKeyNameLen = 1<<16 - 1

// appendWrapAAD appends the associated data of a wrapped key to dst:
// "kmipfs-dek" || Version || id || len(keyName) (2, big endian) || keyName.
// The length prefix keeps the encoding unambiguous; keyName must be at most maxKeyNameLen bytes.
func appendWrapAAD(dst []byte, id FileID, keyName string) []byte {
	dst = append(dst, wrapLabel...)
	dst = append(dst, Version)
	dst = append(dst, id[:]...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(keyName)))
	return append(dst, keyName...)
}

// newKEKAEAD returns AES-256-GCM under kek with nonces that crypto/cipher draws itself and puts in
// front of the ciphertext, which is exactly the nonce || ciphertext || tag part of a wrapped key.
// Letting the standard library choose nonces also keeps kmipfs usable in FIPS 140-only mode, which
// refuses caller-chosen GCM nonces. op ("wrap key", "unwrap key") and id only name the failure.
func newKEKAEAD(op string, id FileID, kek []byte, keyName string) (cipher.AEAD, error) {
	if len(kek) != KeySize {
		return nil, fmt.Errorf("crypt: %s for file %s under %q: kek is %d bytes, want %d: %w", op, id, keyName, len(kek), KeySize, ErrFormat)
	}
	if len(keyName) > maxKeyNameLen {
		return nil, fmt.Errorf("crypt: %s for file %s: key name is %d bytes, longer than %d: %w", op, id, len(keyName), maxKeyNameLen, ErrFormat)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("crypt: %s for file %s under %q: %w", op, id, keyName, err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("crypt: %s for file %s under %q: %w", op, id, keyName, err)
	}
	return aead, nil
}

// WrapKey seals dek (KeySize bytes) under kek (KeySize bytes) with AES-256-GCM and a fresh random
// nonce. The associated data binds Version, the file id and the KMIP key name, so a wrapped key
// cannot be moved to another file or presented as wrapped under another key name. The output is
// WrappedKeySize bytes: Version || nonce || ciphertext || tag. Keys of the wrong length and key
// names longer than 65535 bytes are ErrFormat. WrapKey keeps no reference to kek or dek.
func WrapKey(kek, dek []byte, id FileID, keyName string) ([]byte, error) {
	if len(dek) != KeySize {
		return nil, fmt.Errorf("crypt: wrap key for file %s: dek is %d bytes, want %d: %w", id, len(dek), KeySize, ErrFormat)
	}
	aead, err := newKEKAEAD("wrap key", id, kek, keyName)
	if err != nil {
		return nil, err
	}
	var aadBuf [64]byte
	aad := appendWrapAAD(aadBuf[:0], id, keyName)
	out := make([]byte, 1, WrappedKeySize)
	out[0] = Version
	return aead.Seal(out, nil, dek, aad), nil
}

// UnwrapKey reverses WrapKey and returns a new KeySize-byte slice holding the DEK, which the caller
// owns and should Zero when done. An empty input, an unknown version byte or a wrong length is
// ErrFormat (checked in that order, so a wrapped key of a future version is reported as such); a
// wrong kek, file id or key name, or any other change to the bytes, is ErrAuth.
func UnwrapKey(kek, wrapped []byte, id FileID, keyName string) ([]byte, error) {
	switch {
	case len(wrapped) == 0:
		return nil, fmt.Errorf("crypt: unwrap key for file %s: empty wrapped key: %w", id, ErrFormat)
	case wrapped[0] != Version:
		return nil, fmt.Errorf("crypt: unwrap key for file %s: unknown format version %d (this build reads %d): %w", id, wrapped[0], Version, ErrFormat)
	case len(wrapped) != WrappedKeySize:
		return nil, fmt.Errorf("crypt: unwrap key for file %s: wrapped key is %d bytes, want %d: %w", id, len(wrapped), WrappedKeySize, ErrFormat)
	}
	aead, err := newKEKAEAD("unwrap key", id, kek, keyName)
	if err != nil {
		return nil, err
	}
	var aadBuf [64]byte
	aad := appendWrapAAD(aadBuf[:0], id, keyName)
	dek, err := aead.Open(make([]byte, 0, KeySize), nil, wrapped[1:], aad)
	if err != nil {
		return nil, fmt.Errorf("crypt: unwrap key for file %s under %q: %w", id, keyName, ErrAuth)
	}
	return dek, nil
}
