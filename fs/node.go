package fs

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kmipfs/kmipfs/meta"
	"github.com/kmipfs/kmipfs/objstore"
)

// node is one inode of the tree: the root, a bucket, a directory, a file or a symlink. Its state
// lives in meta; a node holds only the inode number, so the node that go-fuse keeps for a hard-linked
// inode is the same whichever name found it.
type node struct {
	gofs.Inode
	fsys *FS
	ino  meta.Ino
	// removed is the last state of a directory that rmdir or a rename over it deleted from meta,
	// for fstat(2) on a descriptor still open on it (which reports it with Nlink 0).
	removed atomic.Pointer[meta.Inode]
}

var (
	_ gofs.NodeLookuper       = (*node)(nil)
	_ gofs.NodeGetattrer      = (*node)(nil)
	_ gofs.NodeSetattrer      = (*node)(nil)
	_ gofs.NodeMkdirer        = (*node)(nil)
	_ gofs.NodeMknoder        = (*node)(nil)
	_ gofs.NodeCreater        = (*node)(nil)
	_ gofs.NodeOpener         = (*node)(nil)
	_ gofs.NodeUnlinker       = (*node)(nil)
	_ gofs.NodeRmdirer        = (*node)(nil)
	_ gofs.NodeRenamer        = (*node)(nil)
	_ gofs.NodeLinker         = (*node)(nil)
	_ gofs.NodeSymlinker      = (*node)(nil)
	_ gofs.NodeReadlinker     = (*node)(nil)
	_ gofs.NodeStatfser       = (*node)(nil)
	_ gofs.NodeGetxattrer     = (*node)(nil)
	_ gofs.NodeSetxattrer     = (*node)(nil)
	_ gofs.NodeRemovexattrer  = (*node)(nil)
	_ gofs.NodeListxattrer    = (*node)(nil)
	_ gofs.NodeReader         = (*node)(nil)
	_ gofs.NodeWriter         = (*node)(nil)
	_ gofs.NodeFlusher        = (*node)(nil)
	_ gofs.NodeFsyncer        = (*node)(nil)
	_ gofs.NodeReleaser       = (*node)(nil)
	_ gofs.NodeTmpfiler       = (*node)(nil)
	_ gofs.NodeOpendirHandler = (*node)(nil)
	_ gofs.NodeOnForgetter    = (*node)(nil)
)

func (n *node) isRoot() bool { return n.ino == meta.RootIno }

// path is the node's path below the mount, for log lines.
func (n *node) path() string {
	p := n.Path(nil)
	if p == "" {
		return "/"
	}
	return "/" + p
}

// newChild returns the go-fuse inode for a child described by in and fills out.
func (n *node) newChild(ctx context.Context, in *meta.Inode, out *fuse.EntryOut) *gofs.Inode {
	in, of := n.fsys.current(ctx, in)
	n.fsys.fillAttr(in, of, &out.Attr)
	out.SetEntryTimeout(n.fsys.entryTTL)
	out.SetAttrTimeout(n.fsys.attrTTL)
	child := &node{fsys: n.fsys, ino: in.Ino}
	return n.NewInode(ctx, child, gofs.StableAttr{Mode: in.Mode & syscall.S_IFMT, Ino: uint64(in.Ino)})
}

// current returns the data state of the regular file in if it is open, else in as meta has it
// now: a record read before a data state went away may predate its last flush.
func (f *FS) current(ctx context.Context, in *meta.Inode) (*meta.Inode, *openFile) {
	if !in.IsRegular() {
		return in, nil
	}
	if of := f.lookupOpen(in.Ino); of != nil {
		return in, of
	}
	if fresh, err := f.meta.Get(ctx, in.Ino); err == nil {
		return fresh, nil
	}
	return in, nil
}

// fillAttr converts a meta inode into FUSE attributes; of, the file's data state if it is open,
// gives the size and times (see attrOverlay).
func (f *FS) fillAttr(in *meta.Inode, of *openFile, out *fuse.Attr) {
	size, mtime, ctime := in.Size, in.Mtime, in.Ctime
	if of != nil {
		size, mtime, ctime = of.attrOverlay(ctime)
	}
	out.Ino = uint64(in.Ino)
	out.Mode = in.Mode
	out.Nlink = in.Nlink
	out.Size = size
	out.Blocks = (size + 511) / 512
	out.Blksize = blockSize
	out.Owner = fuse.Owner{Uid: in.Uid, Gid: in.Gid}
	out.Rdev = in.Rdev
	out.Atime, out.Atimensec = splitNs(in.Atime)
	out.Mtime, out.Mtimensec = splitNs(mtime)
	out.Ctime, out.Ctimensec = splitNs(ctime)
}

// unixNano is t in Unix nanoseconds, the unit of meta timestamps, clamped to what 64 bits hold
// (the years 1678 to 2262), as ext4 clamps times to its own range.
func unixNano(t time.Time) int64 {
	switch s := t.Unix(); {
	case s >= math.MaxInt64/int64(time.Second):
		return math.MaxInt64
	case s <= math.MinInt64/int64(time.Second):
		return math.MinInt64
	}
	return t.UnixNano()
}

func splitNs(ns int64) (uint64, uint32) {
	s, r := ns/1e9, ns%1e9
	if r < 0 {
		s, r = s-1, r+1e9
	}
	return uint64(s), uint32(r)
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx = detach(ctx)
	if len(name) > maxNameLen {
		return nil, syscall.ENAMETOOLONG
	}
	in, err := n.fsys.meta.Lookup(ctx, n.ino, name)
	if err != nil {
		if errors.Is(err, meta.ErrNotFound) {
			return nil, syscall.ENOENT
		}
		return nil, n.fsys.toErrno(err, "lookup", "path", n.path(), "name", name)
	}
	return n.newChild(ctx, in, out), 0
}

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ctx = detach(ctx)
	// The data state first, then meta: meta is then at least as new as the state's absence.
	of := n.fsys.lookupOpen(n.ino)
	in, err := n.fsys.meta.Get(ctx, n.ino)
	if errors.Is(err, meta.ErrNotFound) {
		if gone := n.removed.Load(); gone != nil {
			in, err = gone, nil
		}
	}
	if err != nil {
		return n.fsys.toErrno(err, "getattr", "path", n.path())
	}
	n.fsys.fillAttr(in, of, &out.Attr)
	out.SetTimeout(n.fsys.attrTTL)
	return 0
}

func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, sa *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	ctx = detach(ctx)
	if size, ok := sa.GetSize(); ok {
		in, err := n.fsys.meta.Get(ctx, n.ino)
		if err != nil {
			return n.fsys.toErrno(err, "truncate", "path", n.path())
		}
		if in.IsDir() {
			return syscall.EISDIR
		}
		if !in.IsRegular() {
			return syscall.EINVAL
		}
		of, errno := n.fsys.acquire(ctx, in, n.path())
		if errno != 0 {
			return errno
		}
		err = of.truncate(ctx, size)
		n.fsys.releaseFile(ctx, of)
		if err != nil {
			return n.fsys.toErrno(err, "truncate", "bucket", in.Bucket, "path", n.path())
		}
	}
	t := now()
	in, err := n.fsys.meta.Update(ctx, n.ino, func(in *meta.Inode) error {
		changed := false
		if mode, ok := sa.GetMode(); ok {
			in.Mode = in.Mode&syscall.S_IFMT | mode&^syscall.S_IFMT
			changed = true
		}
		if uid, ok := sa.GetUID(); ok {
			in.Uid = uid
			changed = true
		}
		if gid, ok := sa.GetGID(); ok {
			in.Gid = gid
			changed = true
		}
		if at, ok := sa.GetATime(); ok {
			in.Atime = unixNano(at)
			changed = true
		}
		if mt, ok := sa.GetMTime(); ok {
			in.Mtime = unixNano(mt)
			changed = true
		}
		if changed {
			in.Ctime = t
		}
		return nil
	})
	if err != nil {
		return n.fsys.toErrno(err, "setattr", "path", n.path())
	}
	if _, ok := sa.GetMTime(); ok && in.IsRegular() {
		// An explicit mtime (touch -d, cp -p) must win over the time of later-flushed writes.
		if of := n.fsys.lookupOpen(n.ino); of != nil {
			of.setTimes(in.Mtime, in.Ctime)
		}
	}
	in, of := n.fsys.current(ctx, in)
	n.fsys.fillAttr(in, of, &out.Attr)
	out.SetTimeout(n.fsys.attrTTL)
	return 0
}

// newInode builds the meta record of a child of n made by the calling process.
func (n *node) newInode(ctx context.Context, parent *meta.Inode, mode uint32) meta.Inode {
	uid, gid := caller(ctx)
	if parent.Mode&syscall.S_ISGID != 0 {
		gid = parent.Gid
		if mode&syscall.S_IFMT == syscall.S_IFDIR {
			mode |= syscall.S_ISGID
		}
	}
	t := now()
	return meta.Inode{Mode: mode, Uid: uid, Gid: gid, Atime: t, Mtime: t, Ctime: t}
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx = detach(ctx)
	if len(name) > maxNameLen {
		return nil, syscall.ENAMETOOLONG
	}
	parent, err := n.fsys.meta.Get(ctx, n.ino)
	if err != nil {
		return nil, n.fsys.toErrno(err, "mkdir", "path", n.path())
	}
	rec := n.newInode(ctx, parent, syscall.S_IFDIR|mode&07777)
	if n.isRoot() {
		return n.mkBucket(ctx, name, rec, out)
	}
	in, err := n.fsys.meta.Create(ctx, n.ino, name, rec)
	if err != nil {
		return nil, n.fsys.toErrno(err, "mkdir", "path", n.path(), "name", name)
	}
	return n.newChild(ctx, in, out), 0
}

// mkBucket creates a bucket: first in the object store (so that a bucket in meta always has one in
// the store), then in meta. A store bucket that already exists is taken over; its objects are named
// by random file ids and never collide with new ones.
func (n *node) mkBucket(ctx context.Context, name string, rec meta.Inode, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if err := objstore.ValidBucketName(name); err != nil {
		n.fsys.log.Warn("bucket name refused", "name", name, "err", err)
		return nil, syscall.EINVAL
	}
	if _, err := n.fsys.meta.Lookup(ctx, meta.RootIno, name); err == nil {
		return nil, syscall.EEXIST
	}
	n.fsys.mu.Lock()
	delete(n.fsys.dyingBuckets, name)
	n.fsys.mu.Unlock()
	if err := n.fsys.store.CreateBucket(ctx, name); err != nil && !errors.Is(err, objstore.ErrBucketExists) {
		return nil, n.fsys.toErrno(err, "mkdir bucket", "bucket", name)
	}
	in, err := n.fsys.meta.Create(ctx, meta.RootIno, name, rec)
	if err != nil {
		return nil, n.fsys.toErrno(err, "mkdir bucket", "bucket", name)
	}
	return n.newChild(ctx, in, out), 0
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx = detach(ctx)
	if mode&syscall.S_IFMT == syscall.S_IFREG || mode&syscall.S_IFMT == 0 {
		in, errno := n.createFile(ctx, name, syscall.S_IFREG|mode&07777)
		if errno != 0 {
			return nil, errno
		}
		return n.newChild(ctx, in, out), 0
	}
	if n.isRoot() {
		return nil, syscall.EPERM
	}
	if len(name) > maxNameLen {
		return nil, syscall.ENAMETOOLONG
	}
	parent, err := n.fsys.meta.Get(ctx, n.ino)
	if err != nil {
		return nil, n.fsys.toErrno(err, "mknod", "path", n.path())
	}
	rec := n.newInode(ctx, parent, mode)
	rec.Rdev = dev
	in, err := n.fsys.meta.Create(ctx, n.ino, name, rec)
	if err != nil {
		return nil, n.fsys.toErrno(err, "mknod", "path", n.path(), "name", name)
	}
	return n.newChild(ctx, in, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx = detach(ctx)
	if n.isRoot() {
		return nil, syscall.EPERM
	}
	if len(name) > maxNameLen {
		return nil, syscall.ENAMETOOLONG
	}
	parent, err := n.fsys.meta.Get(ctx, n.ino)
	if err != nil {
		return nil, n.fsys.toErrno(err, "symlink", "path", n.path())
	}
	rec := n.newInode(ctx, parent, syscall.S_IFLNK|0777)
	rec.Target = target
	rec.Size = uint64(len(target))
	in, err := n.fsys.meta.Create(ctx, n.ino, name, rec)
	if err != nil {
		return nil, n.fsys.toErrno(err, "symlink", "path", n.path(), "name", name)
	}
	return n.newChild(ctx, in, out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	ctx = detach(ctx)
	in, err := n.fsys.meta.Get(ctx, n.ino)
	if err != nil {
		return nil, n.fsys.toErrno(err, "readlink", "path", n.path())
	}
	if !in.IsSymlink() {
		return nil, syscall.EINVAL
	}
	return []byte(in.Target), 0
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ctx = detach(ctx)
	if n.isRoot() {
		return nil, syscall.EPERM
	}
	if len(name) > maxNameLen {
		return nil, syscall.ENAMETOOLONG
	}
	tn, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	n.fsys.mu.Lock()
	tmp := n.fsys.tmpfiles[tn.ino]
	n.fsys.mu.Unlock()
	var in *meta.Inode
	var err error
	if tmp {
		// linkat(2) of an O_TMPFILE file (the kernel refuses to link other unlinked files).
		in, err = n.fsys.meta.LinkOrphan(ctx, tn.ino, n.ino, name, now())
	} else {
		in, err = n.fsys.meta.Link(ctx, tn.ino, n.ino, name, now())
	}
	if err != nil {
		return nil, n.fsys.toErrno(err, "link", "path", n.path(), "name", name)
	}
	if tmp {
		n.fsys.mu.Lock()
		delete(n.fsys.tmpfiles, tn.ino)
		delete(n.fsys.orphans, tn.ino)
		n.fsys.mu.Unlock()
	}
	return n.newChild(ctx, in, out), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	ctx = detach(ctx)
	in, err := n.fsys.meta.Unlink(ctx, n.ino, name, now())
	if err != nil {
		return n.fsys.toErrno(err, "unlink", "path", n.path(), "name", name)
	}
	if in.Nlink == 0 {
		n.fsys.noteOrphan(in.Ino, in.Bucket)
	}
	return 0
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	ctx = detach(ctx)
	victim, _ := n.fsys.meta.Lookup(ctx, n.ino, name)
	if err := n.fsys.meta.Rmdir(ctx, n.ino, name, now()); err != nil {
		return n.fsys.toErrno(err, "rmdir", "path", n.path(), "name", name)
	}
	n.markRemoved(name, victim)
	if n.isRoot() {
		n.fsys.deleteBucket(ctx, name)
	}
	return 0
}

// markRemoved records the last state of the directory in that was just removed as n/name, on the
// go-fuse node the kernel may still hold open.
func (n *node) markRemoved(name string, in *meta.Inode) {
	if in == nil || !in.IsDir() {
		return
	}
	child := n.GetChild(name)
	if child == nil {
		return
	}
	if cn, ok := child.Operations().(*node); ok && cn.ino == in.Ino {
		gone := *in
		gone.Nlink = 0
		cn.removed.Store(&gone)
	}
}

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	ctx = detach(ctx)
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if n.isRoot() || np.isRoot() {
		// Buckets are named by their directory at the root; their objects live under that name.
		return syscall.EPERM
	}
	if len(newName) > maxNameLen {
		return syscall.ENAMETOOLONG
	}
	replaced, err := n.fsys.meta.Rename(ctx, n.ino, name, np.ino, newName, flags, now())
	if err != nil {
		return n.fsys.toErrno(err, "rename", "path", n.path(), "name", name, "to", newName)
	}
	if replaced != nil && replaced.IsDir() {
		np.markRemoved(newName, replaced)
	}
	if replaced != nil && replaced.Nlink == 0 && !replaced.IsDir() {
		n.fsys.noteOrphan(replaced.Ino, replaced.Bucket)
	}
	return 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	ctx = detach(ctx)
	inodes, bytes, err := n.fsys.meta.Stats(ctx)
	if err != nil {
		return n.fsys.toErrno(err, "statfs")
	}
	// The object store has no fixed size; report a large capacity so tools that check free space
	// before writing go ahead, and the real usage as used blocks.
	const capacityBlocks = 1 << 40 / blockSize * 1024 // 1 PiB
	used := (bytes + blockSize - 1) / blockSize
	out.Bsize = blockSize
	out.Frsize = blockSize
	out.Blocks = capacityBlocks
	out.Bfree = capacityBlocks - used
	out.Bavail = out.Bfree
	out.Files = inodes + 1<<32
	out.Ffree = 1 << 32
	out.NameLen = maxNameLen
	return 0
}

const maxNameLen = 255
