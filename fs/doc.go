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
// FS.mu guards the table of open files and of orphans. openFile.mu is the per-file content lock:
// it serializes writes, reads, truncates, fallocates and flushes of one inode, and is held across
// the object-store round trip of a flush on purpose, so that a flush and a concurrent write cannot
// interleave. FS.lifeMu orders the creation of a file's data state against the release of an
// orphan. Lock order: FS.lifeMu before FS.mu before openFile.mu; never the reverse.
//
// # Cancellation
//
// Requests are not abandoned when the calling process gets a signal (detach in errno.go): a local
// filesystem never fails unlink, rename, close or a read of a regular file with EINTR, programs
// do not retry them, and the Go runtime alone signals its threads all the time. The kernel still
// lets a process with a fatal signal go at once. The request context (without its cancellation)
// is passed to every meta, store and key call, which have timeouts of their own.
//
// # Unlinked files
//
// An inode whose last name goes (unlink, a rename over it, or an O_TMPFILE file) becomes an
// orphan in meta and stays readable and writable through open descriptors. It is released when
// it is neither open nor known to the kernel any more (FORGET), not at unlink: an open of the
// name that the kernel resolved just before a rename replaced it must still find the file. A
// directory removed while open keeps answering fstat from its last state (Nlink 0).
//
// # Page cache and locks
//
// Opens keep the kernel's page cache (FOPEN_KEEP_CACHE): every change of file contents goes
// through this kernel (writes and shared mappings write through its page cache; truncate and
// fallocate drop the pages they change), so nothing cached can be stale. flock(2) and POSIX and
// OFD record locks are left to the kernel's local lock manager, which is exact because one
// kmipfs process serves a metadata database and so every user of the files goes through it.
package fs
