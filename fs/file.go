package fs

import (
	"context"
	"errors"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kmipfs/kmipfs/crypt"
	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/meta"
)

// The file operations are node methods: the data state of a file is per inode, shared by every
// open of it and every hard link. Open still returns a handle, because go-fuse sends Release only
// for opens that have one, and Release is where the last close forgets the data state.
type handle struct{ of *openFile }

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	in, errno := n.createFile(ctx, name, syscall.S_IFREG|mode&07777)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	child := n.newChild(ctx, in, out)
	of, errno := n.fsys.acquire(ctx, in, n.childPath(name))
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return child, &handle{of: of}, 0, 0
}

func (n *node) childPath(name string) string {
	if p := n.path(); p != "/" {
		return p + "/" + name
	}
	return "/" + name
}

// createFile makes a new regular file below n, encrypted under the key id that n's ancestry names.
func (n *node) createFile(ctx context.Context, name string, mode uint32) (*meta.Inode, syscall.Errno) {
	if n.isRoot() {
		// Only buckets live at the root.
		return nil, syscall.EPERM
	}
	if len(name) > maxNameLen {
		return nil, syscall.ENAMETOOLONG
	}
	path := n.childPath(name)
	parent, err := n.fsys.meta.Get(ctx, n.ino)
	if err != nil {
		return nil, n.fsys.toErrno(err, "create", "path", path)
	}
	keyID, err := n.fsys.resolveKeyID(ctx, parent)
	if err != nil {
		return nil, n.fsys.toErrno(err, "create", "bucket", parent.Bucket, "path", path)
	}
	keyName := kms.KeyName(n.fsys.keyTemplate, keyID)
	rec := n.newInode(ctx, parent, mode)
	if err := n.fsys.newFileKey(ctx, &rec, keyID, keyName); err != nil {
		return nil, n.fsys.toErrno(err, "create", "bucket", parent.Bucket, "path", path, "key_id", keyID, "key_name", keyName)
	}
	in, err := n.fsys.meta.Create(ctx, n.ino, name, rec)
	if err != nil {
		return nil, n.fsys.toErrno(err, "create", "bucket", parent.Bucket, "path", path)
	}
	return in, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	in, err := n.fsys.meta.Get(ctx, n.ino)
	if err != nil {
		return nil, 0, n.fsys.toErrno(err, "open", "path", n.path())
	}
	if !in.IsRegular() {
		return nil, 0, 0
	}
	of, errno := n.fsys.acquire(ctx, in, n.path())
	if errno != 0 {
		return nil, 0, errno
	}
	return &handle{of: of}, 0, 0
}

func (n *node) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	of := n.fsys.lookupOpen(n.ino)
	if of == nil {
		return nil, syscall.EBADF
	}
	of.mu.Lock()
	defer of.mu.Unlock()
	if err := of.checkKeyLocked(ctx); err != nil {
		return nil, n.fsys.toErrno(err, "read", "bucket", of.bucket, "path", n.path(), "key_name", of.keyName)
	}
	cnt, err := of.readLocked(ctx, dest, off)
	if err != nil {
		return nil, n.fsys.toErrno(err, "read", "bucket", of.bucket, "path", n.path(), "offset", off)
	}
	return fuse.ReadResultData(dest[:cnt]), 0
}

func (n *node) Write(ctx context.Context, fh gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	of := n.fsys.lookupOpen(n.ino)
	if of == nil {
		return 0, syscall.EBADF
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	of.mu.Lock()
	defer of.mu.Unlock()
	if err := of.checkKeyLocked(ctx); err != nil {
		return 0, n.fsys.toErrno(err, "write", "bucket", of.bucket, "path", n.path(), "key_name", of.keyName)
	}
	if err := of.writeLocked(ctx, data, off); err != nil {
		return 0, n.fsys.toErrno(err, "write", "bucket", of.bucket, "path", n.path(), "offset", off)
	}
	return uint32(len(data)), 0
}

// Flush runs on every close(2): the data reaches the store and meta before close returns, so
// every later open sees it and a crash of kmipfs loses nothing that close acknowledged.
func (n *node) Flush(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	of := n.fsys.lookupOpen(n.ino)
	if of == nil {
		return 0
	}
	of.mu.Lock()
	defer of.mu.Unlock()
	if err := of.flushLocked(ctx); err != nil {
		return n.fsys.toErrno(err, "flush", "bucket", of.bucket, "path", n.path())
	}
	return 0
}

// Fsync makes the file's data and metadata durable: objects are durable when Put returns, so
// what remains is to flush dirty blocks and sync the metadata database.
func (n *node) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	if of := n.fsys.lookupOpen(n.ino); of != nil {
		of.mu.Lock()
		err := of.flushLocked(ctx)
		of.mu.Unlock()
		if err != nil {
			return n.fsys.toErrno(err, "fsync", "bucket", of.bucket, "path", n.path())
		}
	}
	if err := n.fsys.meta.Sync(); err != nil {
		return n.fsys.toErrno(err, "fsync", "path", n.path())
	}
	return 0
}

func (n *node) Release(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	if h, ok := fh.(*handle); ok && h.of != nil {
		n.fsys.releaseFile(ctx, h.of)
		h.of = nil
	}
	return 0
}

// lookupOpen returns the data state of an open file, or nil.
func (f *FS) lookupOpen(ino meta.Ino) *openFile {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.files[ino]
}

// acquire returns the data state of file in, creating it on first open, and takes a reference.
// Creating it fetches the KMIP secret and unwraps the file's data key; no lock is held meanwhile.
func (f *FS) acquire(ctx context.Context, in *meta.Inode, path string) (*openFile, syscall.Errno) {
	f.mu.Lock()
	if of := f.files[in.Ino]; of != nil {
		of.refs++
		f.mu.Unlock()
		return of, 0
	}
	f.mu.Unlock()

	of, err := f.openData(ctx, in, path)
	if err != nil {
		return nil, f.toErrno(err, "open", "bucket", in.Bucket, "path", path, "key_id", in.KeyID, "key_name", in.KeyName)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if other := f.files[in.Ino]; other != nil {
		// Another open won the race; use its state so all opens share one dirty buffer.
		of.cipher.Destroy()
		other.refs++
		return other, 0
	}
	of.refs = 1
	f.files[in.Ino] = of
	return of, 0
}

// openData builds the data state of a file from its meta record and its KMIP key.
func (f *FS) openData(ctx context.Context, in *meta.Inode, path string) (*openFile, error) {
	extents, err := f.meta.Extents(ctx, in.Ino)
	if err != nil {
		return nil, err
	}
	c, err := f.fileCipher(ctx, in)
	if err != nil {
		return nil, err
	}
	return &openFile{
		fsys:       f,
		ino:        in.Ino,
		bucket:     in.Bucket,
		path:       path,
		fileID:     crypt.FileID(in.FileID),
		cipher:     c,
		keyName:    in.KeyName,
		keyChecked: time.Now(),
		size:       in.Size,
		gen:        in.Gen,
		mtime:      in.Mtime,
		ctime:      in.Ctime,
		dirty:      make(map[uint64][]byte),
		extents:    extents,
	}, nil
}

// releaseFile drops a reference taken by acquire. The last one forgets the data state unless it
// still holds data that could not be stored (then it stays for the next flush or unmount), and
// frees the inode if it was unlinked meanwhile.
func (f *FS) releaseFile(ctx context.Context, of *openFile) {
	f.mu.Lock()
	of.refs--
	if of.refs > 0 {
		f.mu.Unlock()
		return
	}
	of.mu.Lock()
	in, err := f.meta.Get(ctx, of.ino)
	unlinked := err == nil && in.Nlink == 0
	keep := of.hasDirtyLocked() && !unlinked
	if !keep {
		delete(f.files, of.ino)
		of.cipher.Destroy()
	} else {
		f.log.Error("file closed with data the store did not take; it stays in memory and is retried at the next flush or unmount",
			"bucket", of.bucket, "path", of.path)
	}
	of.mu.Unlock()
	f.mu.Unlock()
	if unlinked {
		f.releaseIfUnused(ctx, of.ino)
	}
}

// releaseIfUnused deletes an unlinked inode and its objects unless it is still open; then the
// last release does it.
func (f *FS) releaseIfUnused(ctx context.Context, ino meta.Ino) {
	f.mu.Lock()
	open := f.files[ino] != nil
	f.mu.Unlock()
	if open {
		return
	}
	in, err := f.meta.Get(ctx, ino)
	if err != nil {
		return
	}
	freed, err := f.meta.Release(ctx, ino)
	if err != nil {
		if !errors.Is(err, meta.ErrNotFound) && !errors.Is(err, meta.ErrInvalid) {
			f.log.Warn("release of unlinked inode failed; it is retried at the next mount", "inode", ino, "err", err)
		}
		return
	}
	f.deleteObjects(ctx, freed)
	f.mu.Lock()
	dying := f.dyingBuckets[in.Bucket]
	f.mu.Unlock()
	if dying {
		f.deleteBucket(ctx, in.Bucket)
	}
}
