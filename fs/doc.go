// Package fs is the FUSE face of kmipfs: go-fuse node types that turn POSIX calls into metadata
// transactions (package meta), object-store requests (package objstore), block encryption (package
// crypt) and key lookups (through a SecretSource, in practice the kms cache).
//
// It is the only package that imports go-fuse, the only one that returns syscall.Errno, and the only
// one that joins the leaf packages. Every error becomes an errno in one place, toErrno in errno.go.
//
// # Namespace
//
// The mount root lists the buckets. mkdir at the root creates a bucket (a bucket in the object store
// and a directory in meta), rmdir of an empty bucket deletes both, and anything else at the root
// (files, symlinks, device nodes, renames) is refused with EPERM. Below a bucket is an ordinary POSIX
// tree. Rename and link across buckets are EXDEV, so tools fall back to copy and delete.
//
// # Keys
//
// A new regular file takes the key id from the nearest directory up the tree that carries the xattr
// user.kmipfs.key-id, else the configured default key id, else the create fails with ENOKEY. The
// KMIP object name is the key template with $keyid replaced. The file gets a random file id and data
// key; the data key is wrapped with the KMIP secret and stored in meta. Setting user.kmipfs.key-id on
// a file re-wraps its data key; no data is re-encrypted.
//
// # Data path
//
// File contents are 4096-byte blocks. While a file is open its blocks that were written but not yet
// stored sit in a per-inode dirty buffer (openFile). Partial-block writes read the old block first
// (read-modify-write). The dirty blocks reach the store as one new immutable object on close
// (Flush), fsync, or when the buffer passes a size threshold; then one meta transaction points
// those blocks at the new object (the extent map) and records the new size. Objects that no longer
// hold any live block are deleted after that commit. A crash therefore leaves at worst an orphan
// object, never a torn file. A failed store or meta write returns EIO and keeps the dirty blocks, so
// the next flush retries them.
//
// Reads take dirty blocks first, then ranged GETs of just the needed slots of each object, which are
// authenticated and decrypted. A block that fails authentication is EIO with one log line naming the
// bucket, path and block.
//
// # Caching
//
// kmipfs is the only writer of its metadata, so the kernel may cache entries and attributes; the
// timeouts come from Options. File contents are cached by the kernel page cache.
//
// # Locking
//
// FS.mu guards the table of open files. openFile.mu is the per-file content lock: it serializes
// writes, reads, truncates and flushes of one inode, and is held across the object-store round trip
// of a flush on purpose, so that a flush and a concurrent write cannot interleave. Lock order:
// FS.mu before openFile.mu; never the reverse.
//
// # Cancellation
//
// The request context from go-fuse is passed to every meta, store and key call; an interrupted
// request returns EINTR and leaves the dirty buffer as it was.
package fs
