package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"
)

// blockLabel starts the associated data of every sealed block (see wrapLabel).
const blockLabel = "kmipfs-blk"

const (
	// blockAADPrefixSize covers the part of a block's associated data that is fixed per file:
	// label, version and file id.
	blockAADPrefixSize = len(blockLabel) + 1 + FileIDSize
	// blockAADSize is the full associated data of a block: the prefix, block index and generation.
	blockAADSize = blockAADPrefixSize + 8 + 8
)

// appendBlockAAD appends the associated data of a block to dst:
// "kmipfs-blk" || Version || id || block (8, big endian) || gen (8, big endian).
func appendBlockAAD(dst []byte, id FileID, block, gen uint64) []byte {
	dst = append(dst, blockLabel...)
	dst = append(dst, Version)
	dst = append(dst, id[:]...)
	dst = binary.BigEndian.AppendUint64(dst, block)
	return binary.BigEndian.AppendUint64(dst, gen)
}

// Cipher seals and opens the data blocks of one file under its DEK. It is safe for concurrent use
// by multiple goroutines: fs encrypts the blocks of one flush in parallel with one Cipher.
type Cipher struct {
	// aead is nil once Destroy has run. It is an atomic pointer so that a Destroy racing with a
	// seal is a clean use-after-destroy panic rather than a data race.
	aead atomic.Pointer[blockAEAD]
	// prefix is the per-file start of every block's associated data; read-only after NewCipher.
	prefix [blockAADPrefixSize]byte
}

// blockAEAD boxes the AEAD so that Cipher can hold it in an atomic.Pointer.
type blockAEAD struct {
	gcm cipher.AEAD // AES-256-GCM with random nonces prepended to the ciphertext
}

// NewCipher returns a Cipher for the blocks of file id under dek, which must be KeySize bytes
// (ErrFormat otherwise). The Cipher keeps no reference to dek: the caller may Zero it right away.
func NewCipher(dek []byte, id FileID) (*Cipher, error) {
	if len(dek) != KeySize {
		return nil, fmt.Errorf("crypt: new cipher for file %s: dek is %d bytes, want %d: %w", id, len(dek), KeySize, ErrFormat)
	}
	block, err := aes.NewCipher(dek) // expands (copies) the key into its own schedule
	if err != nil {
		return nil, fmt.Errorf("crypt: new cipher for file %s: %w", id, err)
	}
	// NewGCMWithRandomNonce draws a fresh 96-bit nonce per Seal and lays out nonce || ciphertext
	// || tag, which is exactly a sealed block. It also works in FIPS 140-only mode, where
	// caller-chosen GCM nonces are refused.
	gcm, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("crypt: new cipher for file %s: %w", id, err)
	}
	c := &Cipher{}
	appendBlockAAD(c.prefix[:0], id, 0, 0)
	c.aead.Store(&blockAEAD{gcm: gcm})
	return c, nil
}

// load returns the AEAD, or panics if the Cipher was destroyed: using a destroyed Cipher is a
// programmer error, and silently sealing with no key is not an option.
func (c *Cipher) load(op string) cipher.AEAD {
	a := c.aead.Load()
	if a == nil {
		panic("crypt: " + op + " with a destroyed Cipher")
	}
	return a.gcm
}

// aad returns the associated data of one block of this file.
func (c *Cipher) aad(block, gen uint64) [blockAADSize]byte {
	var aad [blockAADSize]byte
	copy(aad[:], c.prefix[:])
	binary.BigEndian.PutUint64(aad[blockAADPrefixSize:], block)
	binary.BigEndian.PutUint64(aad[blockAADPrefixSize+8:], gen)
	return aad
}

// SealBlock appends to dst one sealed block of exactly CipherBS bytes, nonce || AES-256-GCM
// ciphertext || tag, and returns the extended slice, like cipher.AEAD.Seal. plain may be shorter
// than PlainBS and is then zero-padded to PlainBS, so the store never learns where inside the last
// block a file ends; a plain longer than PlainBS is a programmer error and panics. The nonce is
// fresh and random on every call. The associated data binds Version, the file id, the block index
// and the write generation, so the block cannot be moved to another offset or file, nor replaced
// by an older copy (whose generation differs). plain may overlap dst's spare capacity.
//
// Random 96-bit nonces keep the chance of a repeat below 2^-32 for up to 2^32 seals under one
// DEK (16 TiB of block writes to one file); see docs/FORMAT.md.
func (c *Cipher) SealBlock(dst, plain []byte, block, gen uint64) []byte {
	if len(plain) > PlainBS {
		panic(fmt.Sprintf("crypt: seal block %d: plaintext is %d bytes, more than PlainBS (%d)", block, len(plain), PlainBS))
	}
	gcm := c.load("seal block")
	aad := c.aad(block, gen)
	// Stage the zero-padded plaintext at the very start of the output; the AEAD moves it behind
	// the nonce itself (it allows an output that starts exactly where its input starts), so a
	// short block costs no extra allocation.
	dst = slices.Grow(dst, CipherBS)
	staged := dst[len(dst) : len(dst)+PlainBS]
	n := copy(staged, plain) // copy is a memmove, so plain may alias staged
	clear(staged[n:])
	return gcm.Seal(dst, nil, staged, aad[:])
}

// OpenBlock authenticates and decrypts one sealed block of this file, which meta says holds file
// block block written at generation gen, appends the PlainBS plaintext bytes to dst and returns
// the extended slice. Any failure is ErrAuth, including a sealed block that is not exactly
// CipherBS bytes long: a truncated or extended block is tampering like any other, and callers
// treat all tampering alike (EIO). On error it returns nil, and the bytes of dst's spare capacity
// may have been overwritten. To decrypt in place, pass sealed[:0] as dst; otherwise dst's spare
// capacity must not overlap sealed.
func (c *Cipher) OpenBlock(dst, sealed []byte, block, gen uint64) ([]byte, error) {
	gcm := c.load("open block")
	if len(sealed) != CipherBS {
		return nil, fmt.Errorf("crypt: open block %d gen %d: sealed block is %d bytes, want %d: %w", block, gen, len(sealed), CipherBS, ErrAuth)
	}
	aad := c.aad(block, gen)
	out, err := gcm.Open(dst, nil, sealed, aad[:])
	if err != nil {
		return nil, fmt.Errorf("crypt: open block %d gen %d: %w", block, gen, ErrAuth)
	}
	return out, nil
}

// Destroy drops the key material the Cipher holds; later SealBlock or OpenBlock calls panic.
// It is idempotent. This is best effort: the Cipher never copies the DEK into memory of its own,
// and the only copy it holds is the AES key schedule inside crypto/aes, which cannot be wiped from
// outside the standard library; Destroy makes it unreachable so the garbage collector frees it.
// Callers must still Zero their own DEK slices.
func (c *Cipher) Destroy() {
	c.aead.Store(nil)
}
