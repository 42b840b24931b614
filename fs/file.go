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
	ctx = detach(ctx)
	in, errno := n.createFile(ctx, name, syscall.S_IFREG|mode&07777)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	child := n.newChild(ctx, in, out)
	of, errno := n.fsys.acquire(ctx, in, n.childPath(name))
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return child, &handle{of: of}, fuse.FOPEN_KEEP_CACHE, 0
}

// Tmpfile implements open(2) with O_TMPFILE: a regular file with no name, keyed like a file
// created in n, that disappears at its last close unless linkat(2) gives it a name first.
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	ctx = detach(ctx)
	if n.isRoot() {
		return nil, nil, 0, syscall.EPERM
	}
	path := n.childPath("(O_TMPFILE)")
	parent, err := n.fsys.meta.Get(ctx, n.ino)
	if err != nil {
		return nil, nil, 0, n.fsys.toErrno(err, "tmpfile", "path", path)
	}
	rec, errno := n.newFileRecord(ctx, parent, syscall.S_IFREG|mode&07777, path)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	in, err := n.fsys.meta.CreateTmp(ctx, n.ino, rec)
	if err != nil {
		return nil, nil, 0, n.fsys.toErrno(err, "tmpfile", "bucket", parent.Bucket, "path", path)
	}
	n.fsys.mu.Lock()
	n.fsys.tmpfiles[in.Ino] = true
	n.fsys.orphans[in.Ino] = &orphan{bucket: in.Bucket}
	n.fsys.mu.Unlock()
	n.fsys.fillAttr(in, nil, &out.Attr)
	out.SetEntryTimeout(n.fsys.entryTTL)
	out.SetAttrTimeout(n.fsys.attrTTL)
	child := n.NewInode(ctx, &node{fsys: n.fsys, ino: in.Ino}, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: uint64(in.Ino)})
	of, errno := n.fsys.acquire(ctx, in, path)
	if errno != 0 {
		n.fsys.mu.Lock()
		delete(n.fsys.tmpfiles, in.Ino)
		n.fsys.mu.Unlock()
		n.fsys.releaseOrphan(ctx, in.Ino)
		return nil, nil, 0, errno
	}
	return child, &handle{of: of}, fuse.FOPEN_KEEP_CACHE, 0
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
	rec, errno := n.newFileRecord(ctx, parent, mode, path)
	if errno != 0 {
		return nil, errno
	}
	in, err := n.fsys.meta.Create(ctx, n.ino, name, rec)
	if err != nil {
		return nil, n.fsys.toErrno(err, "create", "bucket", parent.Bucket, "path", path)
	}
	return in, 0
}

// newFileRecord builds the meta record of a new regular file below n: owner, times, and a new
// file id and data key wrapped under the key id that n's ancestry names.
func (n *node) newFileRecord(ctx context.Context, parent *meta.Inode, mode uint32, path string) (meta.Inode, syscall.Errno) {
	keyID, err := n.fsys.resolveKeyID(ctx, parent)
	if err != nil {
		return meta.Inode{}, n.fsys.toErrno(err, "create", "bucket", parent.Bucket, "path", path)
	}
	keyName := kms.KeyName(n.fsys.keyTemplate, keyID)
	rec := n.newInode(ctx, parent, mode)
	if err := n.fsys.newFileKey(ctx, &rec, keyID, keyName); err != nil {
		return meta.Inode{}, n.fsys.toErrno(err, "create", "bucket", parent.Bucket, "path", path, "key_id", keyID, "key_name", keyName)
	}
	return rec, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ctx = detach(ctx)
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
	// Every change to file contents goes through this kernel's page cache (writes and mmap
	// write back through it; truncate and fallocate drop the pages they change), so what the
	// kernel cached at an earlier open is still right.
	return &handle{of: of}, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *node) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	ctx = detach(ctx)
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
	ctx = detach(ctx)
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
	ctx = detach(ctx)
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

// Fsync makes the file's data and metadata durable: it flushes the dirty blocks, then makes the
// store's objects (Syncer) and the metadata database durable, the two at once since each is a
// disk round trip. Waiting for the objects before syncing meta would not buy an order on disk:
// the commit is already written (unsynced) when the flush returns, and the kernel may write it
// back before the objects. What a power loss can leave of writes that were never fsync'd is
// described in docs/ARCHITECTURE.md (durability); an fsync that returned 0 covers both.
func (n *node) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	ctx = detach(ctx)
	if of := n.fsys.lookupOpen(n.ino); of != nil {
		of.mu.Lock()
		err := of.flushLocked(ctx)
		of.mu.Unlock()
		if err != nil {
			return n.fsys.toErrno(err, "fsync", "bucket", of.bucket, "path", n.path())
		}
	}
	if err := n.fsys.syncAll(ctx); err != nil {
		return n.fsys.toErrno(err, "fsync", "path", n.path())
	}
	return 0
}

func (n *node) Release(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	ctx = detach(ctx)
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
// Creating it fetches the KMIP secret and unwraps the file's data key with no lock held; then,
// under lifeMu, it re-reads the inode and its extent map, so that neither a flush by an open that
// closed meanwhile nor the release of an inode unlinked meanwhile (releaseOrphan) can leave it
// with a stale size, generation or extent map, or with an inode that is gone.
func (f *FS) acquire(ctx context.Context, in *meta.Inode, path string) (*openFile, syscall.Errno) {
	if of := f.ref(in.Ino); of != nil {
		return of, 0
	}
	c, err := f.fileCipher(ctx, in)
	if err != nil {
		return nil, f.toErrno(err, "open", "bucket", in.Bucket, "path", path, "key_id", in.KeyID, "key_name", in.KeyName)
	}
	f.lifeMu.Lock()
	defer f.lifeMu.Unlock()
	if other := f.ref(in.Ino); other != nil {
		// Another open won the race; use its state so all opens share one dirty buffer.
		c.Destroy()
		return other, 0
	}
	of, err := f.openData(ctx, in.Ino, c, path)
	if err != nil {
		c.Destroy()
		return nil, f.toErrno(err, "open", "bucket", in.Bucket, "path", path)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	of.refs = 1
	f.files[in.Ino] = of
	return of, 0
}

// ref takes a reference to the data state of an open file, or returns nil.
func (f *FS) ref(ino meta.Ino) *openFile {
	f.mu.Lock()
	defer f.mu.Unlock()
	of := f.files[ino]
	if of != nil {
		of.refs++
	}
	return of
}

// openData builds the data state of a file from its current meta record. The caller holds lifeMu
// and has checked that the file has no data state.
func (f *FS) openData(ctx context.Context, ino meta.Ino, c *crypt.Cipher, path string) (*openFile, error) {
	in, err := f.meta.Get(ctx, ino)
	if err != nil {
		return nil, err
	}
	var extents []meta.Extent
	if in.Gen > 0 {
		// Every extent is made by a committed write, which raises Gen; a file that was never
		// flushed (a new one, above all) has none, and opening it skips the Badger scan.
		if extents, err = f.meta.Extents(ctx, ino); err != nil {
			return nil, err
		}
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

// releaseFile drops a reference taken by acquire. The last one stores what is still dirty (the
// kernel writes back pages of a shared mapping after the last close, so their data can arrive
// between Flush and Release), then forgets the data state unless it still holds data that could
// not be stored (then it stays for the next flush or unmount), and frees the inode if it was
// unlinked meanwhile and the kernel has forgotten it (see orphan).
func (f *FS) releaseFile(ctx context.Context, of *openFile) {
	f.mu.Lock()
	of.refs--
	if of.refs > 0 {
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()

	of.mu.Lock()
	in, err := f.meta.Get(ctx, of.ino)
	unlinked := err == nil && in.Nlink == 0
	if !unlinked && of.hasDirtyLocked() {
		if err := of.flushLocked(ctx); err != nil {
			f.toErrno(err, "release", "bucket", of.bucket, "path", of.path)
		}
	}
	keep := of.hasDirtyLocked() && !unlinked
	if unlinked {
		// Nothing can name the file any more: its unstored data is dropped with it.
		clear(of.dirty)
		of.account()
	}
	of.mu.Unlock()

	f.mu.Lock()
	if of.refs > 0 || f.files[of.ino] != of {
		// Opened again while the data was stored: the new opens own it now.
		f.mu.Unlock()
		return
	}
	if !keep {
		delete(f.files, of.ino)
		of.cipher.Destroy()
	} else {
		f.log.Error("file closed with data the store did not take; it stays in memory and is retried at the next flush or unmount",
			"bucket", of.bucket, "path", of.path)
	}
	o := f.orphans[of.ino]
	release := unlinked && (o == nil || o.forgotten)
	f.mu.Unlock()
	if release {
		f.releaseOrphan(ctx, of.ino)
	}
}

// noteOrphan records that ino lost its last name; it is released once it is neither open nor
// known to the kernel.
func (f *FS) noteOrphan(ino meta.Ino, bucket string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.orphans[ino] == nil {
		f.orphans[ino] = &orphan{bucket: bucket}
	}
}

// OnForget runs when the kernel no longer knows the node. An orphan that is not open is released
// then, in the background (FlushAll waits for it).
func (n *node) OnForget() {
	f := n.fsys
	f.mu.Lock()
	o := f.orphans[n.ino]
	if o == nil {
		f.mu.Unlock()
		return
	}
	o.forgotten = true
	var kept *openFile
	of := f.files[n.ino]
	if of != nil && of.refs == 0 {
		// Not open: the data state stayed only because the store refused its last flush (see
		// releaseFile). Nothing names the file any more, so that data has no reader; drop it, or
		// the inode and the space it holds would never be released.
		delete(f.files, n.ino)
		kept, of = of, nil
	}
	f.mu.Unlock()
	if of != nil {
		return // the last release does it
	}
	if kept != nil {
		kept.mu.Lock()
		clear(kept.dirty)
		kept.account()
		kept.mu.Unlock()
		kept.cipher.Destroy()
	}
	f.releaser.enqueue(n.ino)
}

// releaseOrphan deletes an unlinked inode and its objects unless it is open again.
func (f *FS) releaseOrphan(ctx context.Context, ino meta.Ino) {
	f.lifeMu.Lock()
	f.mu.Lock()
	open := f.files[ino] != nil
	f.mu.Unlock()
	if open {
		f.lifeMu.Unlock()
		return
	}
	in, err := f.meta.Get(ctx, ino)
	var freed []meta.ObjectRef
	if err == nil {
		freed, err = f.meta.Release(ctx, ino)
	}
	f.mu.Lock()
	delete(f.orphans, ino)
	delete(f.tmpfiles, ino)
	f.mu.Unlock()
	f.lifeMu.Unlock()
	if err != nil {
		if !errors.Is(err, meta.ErrNotFound) && !errors.Is(err, meta.ErrInvalid) && !errors.Is(err, context.Canceled) {
			f.log.Warn("release of unlinked inode failed; it is retried at the next mount", "inode", ino, "err", err)
		}
		return
	}
	f.stats.orphansReleased.Add(1)
	f.gc.enqueue(freed...)
	f.mu.Lock()
	dying := f.dyingBuckets[in.Bucket]
	f.mu.Unlock()
	if dying {
		f.deleteBucket(ctx, in.Bucket)
	}
}
