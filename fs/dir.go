package fs

import (
	"context"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kmipfs/kmipfs/meta"
)

// dirHandle is an open directory. readdir(3) must stay correct while the directory changes:
// every entry that exists from opendir (or rewinddir) to the end of the listing is returned
// exactly once, and seekdir to a position telldir returned goes back to the same entry. The
// handle therefore lists a snapshot taken at the first read and again at every rewind (offset
// 0); offsets are positions in that snapshot. Entries added or removed meanwhile may or may not
// appear, as POSIX allows.
type dirHandle struct {
	n *node

	mu   sync.Mutex
	ents []fuse.DirEntry // nil until the first read after open or rewind
	pos  int
}

var (
	_ gofs.FileReaddirenter = (*dirHandle)(nil)
	_ gofs.FileSeekdirer    = (*dirHandle)(nil)
	_ gofs.FileReleasedirer = (*dirHandle)(nil)
	_ gofs.FileFsyncdirer   = (*dirHandle)(nil)
)

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ctx = detach(ctx)
	in, err := n.fsys.meta.Get(ctx, n.ino)
	if err != nil {
		return nil, 0, n.fsys.toErrno(err, "opendir", "path", n.path())
	}
	if !in.IsDir() {
		return nil, 0, syscall.ENOTDIR
	}
	return &dirHandle{n: n}, 0, 0
}

// load takes the snapshot: ".", "..", then the entries in name order.
func (d *dirHandle) load(ctx context.Context) syscall.Errno {
	n := d.n
	in, err := n.fsys.meta.Get(ctx, n.ino)
	if err != nil {
		return n.fsys.toErrno(err, "readdir", "path", n.path())
	}
	ents, err := n.fsys.meta.ReadDir(ctx, n.ino)
	if err != nil {
		return n.fsys.toErrno(err, "readdir", "path", n.path())
	}
	parent := in.Parent
	if n.ino == meta.RootIno || parent == 0 {
		parent = n.ino
	}
	out := make([]fuse.DirEntry, 0, len(ents)+2)
	out = append(out,
		fuse.DirEntry{Name: ".", Ino: uint64(n.ino), Mode: syscall.S_IFDIR},
		fuse.DirEntry{Name: "..", Ino: uint64(parent), Mode: syscall.S_IFDIR})
	for _, e := range ents {
		out = append(out, fuse.DirEntry{Name: e.Name, Ino: uint64(e.Ino), Mode: e.Mode})
	}
	for i := range out {
		out[i].Off = uint64(i + 1)
	}
	d.ents = out
	return 0
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	ctx = detach(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ents == nil {
		if errno := d.load(ctx); errno != 0 {
			return nil, errno
		}
	}
	if d.pos >= len(d.ents) {
		return nil, 0
	}
	e := d.ents[d.pos]
	d.pos++
	return &e, 0
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	ctx = detach(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	if off == 0 {
		// rewinddir: the next read sees the directory as it is now.
		d.ents, d.pos = nil, 0
		return 0
	}
	if d.ents == nil {
		if errno := d.load(ctx); errno != 0 {
			return errno
		}
	}
	if off > uint64(len(d.ents)) {
		return syscall.EINVAL
	}
	d.pos = int(off)
	return 0
}

func (d *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {}

// Fsyncdir makes the directory's entries durable: they are metadata, so this syncs meta.
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	ctx = detach(ctx)
	if err := d.n.fsys.meta.Sync(); err != nil {
		return d.n.fsys.toErrno(err, "fsync directory", "path", d.n.path())
	}
	return 0
}
