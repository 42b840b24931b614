package crypt

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

const (
	// Version is the on-store format version. It is the first byte of every wrapped key and is
	// part of every associated data, so data written under one version never authenticates as
	// another. Readers refuse versions they do not know.
	Version = 1

	// PlainBS is the plaintext block size: file data is sealed in blocks of this many bytes.
	PlainBS = 4096

	// NonceSize is the length of the random AES-GCM nonce stored in front of every sealed block and
	// inside every wrapped key.
	NonceSize = 12

	// TagSize is the length of the AES-GCM authentication tag.
	TagSize = 16

	// CipherBS is the length of every sealed block (nonce, ciphertext, tag), and so the stride of
	// slots in an object: slot i starts at byte i*CipherBS.
	CipherBS = NonceSize + PlainBS + TagSize

	// KeySize is the length of a data key (DEK) and of a key-encryption key (KEK): AES-256.
	KeySize = 32

	// FileIDSize is the length of a FileID.
	FileIDSize = 16

	// WrappedKeySize is the exact length of WrapKey's output: version, nonce, encrypted DEK, tag.
	WrappedKeySize = 1 + NonceSize + KeySize + TagSize
)

// ErrAuth is returned when authentication fails: the input was tampered with, moved to another
// block or file, replaced by an older generation, truncated or extended, or opened with the wrong
// key. Callers treat it as EIO and never use the data.
var ErrAuth = errors.New("crypt: authentication failed")

// ErrFormat is returned for input that cannot be parsed before any authentication is attempted:
// a wrong length, an unknown version, a malformed file id, a key of the wrong size.
var ErrFormat = errors.New("crypt: malformed input")

// FileID names a file for the lifetime of its data. It is random, not derived from the inode
// number or the path, so that renames, hard links and inode reuse never make two files share the
// associated data of their blocks.
type FileID [FileIDSize]byte

var _ fmt.Stringer = FileID{}

// NewFileID returns a random FileID from crypto/rand. At 128 bits, ids collide with negligible
// probability even across every file a deployment will ever create.
func NewFileID() (FileID, error) {
	var id FileID
	// crypto/rand.Read never fails (it crashes the program instead); the error is kept in the
	// signature so callers need not change if that ever changes.
	if _, err := rand.Read(id[:]); err != nil {
		return FileID{}, fmt.Errorf("crypt: new file id: %w", err)
	}
	return id, nil
}

// String returns the id as 32 lowercase hex digits, the form used in object names and logs.
func (id FileID) String() string {
	return hex.EncodeToString(id[:])
}

// ParseFileID parses the form String produces. Only exactly 32 lowercase hex digits are accepted,
// so every FileID has one spelling and object names derived from it are canonical.
func ParseFileID(s string) (FileID, error) {
	var id FileID
	if len(s) != 2*FileIDSize {
		return FileID{}, fmt.Errorf("crypt: parse file id %q: %d characters, want %d: %w", s, len(s), 2*FileIDSize, ErrFormat)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return FileID{}, fmt.Errorf("crypt: parse file id %q: not lowercase hex: %w", s, ErrFormat)
		}
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return FileID{}, fmt.Errorf("crypt: parse file id %q: %v: %w", s, err, ErrFormat)
	}
	return id, nil
}

// NewDataKey returns a fresh random data key (DEK) of KeySize bytes from crypto/rand. The caller
// owns it and should Zero it once it is wrapped and a Cipher is built from it.
func NewDataKey() ([]byte, error) {
	dek := make([]byte, KeySize)
	if _, err := rand.Read(dek); err != nil {
		return nil, fmt.Errorf("crypt: new data key: %w", err)
	}
	return dek, nil
}

// Zero overwrites b with zeros. Callers use it to wipe DEKs and KEKs as soon as they are no longer
// needed, so that key material does not linger in memory that is later reused or dumped. It cannot
// reach other copies, such as the AES key schedule inside crypto/aes (see the package
// documentation) or an old goroutine stack the runtime copied while growing it.
func Zero(b []byte) {
	clear(b)
}
