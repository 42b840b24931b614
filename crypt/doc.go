// Package crypt seals and opens the data blocks of kmipfs files and wraps their data keys.
//
// It is pure code: no I/O, no context, no logging. The fs package fetches a secret (the KEK) from
// KMIP, stores wrapped data keys in meta and sealed blocks in the object store; crypt only turns
// bytes into other bytes and tells forged ones apart from genuine ones. docs/FORMAT.md is the
// normative, byte-exact description of everything written here, with test vectors.
//
// # Keys
//
// Every file has a random 128-bit [FileID] and a random 256-bit data key (DEK, [NewDataKey]). The
// DEK is sealed with AES-256-GCM under the KEK by [WrapKey]; the associated data binds the format
// [Version], the file id and the KMIP key name, so a wrapped key copied to another file, or
// presented as wrapped under another key name, does not unwrap. Re-keying a file re-wraps its DEK;
// no data is re-encrypted.
//
// Wrapped key, [WrappedKeySize] (61) bytes:
//
//	version(1) || nonce(12) || AES-256-GCM ciphertext of the DEK(32) || tag(16)
//	AAD = "kmipfs-dek" || version(1) || file id(16) || len(key name)(2, big endian) || key name
//
// # Blocks
//
// File data is cut into [PlainBS] (4096) byte blocks. Each block is sealed with AES-256-GCM under
// the DEK with a fresh random nonce on every write; a short last block is zero-padded, so every
// sealed block is exactly [CipherBS] (4124) bytes and the store learns file sizes only rounded up to
// 4 KiB. The associated data binds the file id, the block index and the write generation (a
// per-file counter kept in meta), so a block cannot be moved to another offset or file, nor
// replaced by an older copy of itself.
//
//	sealed block = nonce(12) || AES-256-GCM ciphertext(4096) || tag(16)
//	AAD = "kmipfs-blk" || version(1) || file id(16) || block index(8, BE) || generation(8, BE)
//
// An object in the store is a plain concatenation of sealed blocks; slot i starts at byte
// i*CipherBS. There is no per-object header: each block authenticates itself, and meta (trusted)
// says which object, slot and generation hold which file block, and how long the file is. Because
// the generation and not the object is authenticated, compaction may copy sealed blocks into a
// new object without re-encrypting them.
//
// # Errors
//
// [ErrAuth] means "this is not what we wrote": a flipped bit, a block from another offset, file or
// generation, a wrong key, a truncated or extended block. [ErrFormat] means input that cannot even
// be parsed: a wrapped key of the wrong length or of an unknown version, a key of the wrong size, a
// malformed file id. Both are wrapped with the operation and object; test them with errors.Is.
// Untrusted bytes never cause a panic; a panic means a programmer error (a plaintext longer than a
// block, a destroyed Cipher).
//
// # Concurrency
//
// A [Cipher] is safe for concurrent use by multiple goroutines; the AES-GCM state it holds is
// read-only after [NewCipher]. Every other function is stateless.
//
// # Key material in memory
//
// The package never keeps a copy of a DEK or KEK in a byte slice of its own. The AES key schedule
// inside crypto/aes cannot be wiped from outside the standard library, so [Cipher.Destroy] can only
// drop its reference and let the garbage collector reclaim it; callers [Zero] their own copies of
// DEKs and KEKs as soon as the Cipher is built or the key is wrapped.
package crypt
