package fs

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// timedFS wraps the RawFileSystem that go-fuse's node API builds and counts every request by
// operation: its latency (from the moment the request reached kmipfs's side of go-fuse to the
// reply), whether it failed, and the bytes read and written. go-fuse's own
// MountOptions.RecordLatencies is a no-op in v2.12, and timing each node method instead would
// miss what go-fuse answers itself (forget, opendir, releasedir) and scatter timers through the
// POSIX code. The embedded RawFileSystem forwards String, SetDebug, Init and OnUnmount.
type timedFS struct {
	fuse.RawFileSystem
	t *opTable
}

var _ fuse.RawFileSystem = (*timedFS)(nil)

// Forget has no reply; it is counted with its time, as OK.
func (w *timedFS) Forget(nodeid, nlookup uint64) {
	start := time.Now()
	w.RawFileSystem.Forget(nodeid, nlookup)
	w.t.record(OpForget, start, fuse.OK)
}

// Release has no reply; it is counted as OK.
func (w *timedFS) Release(cancel <-chan struct{}, input *fuse.ReleaseIn) {
	start := time.Now()
	w.RawFileSystem.Release(cancel, input)
	w.t.record(OpRelease, start, fuse.OK)
}

// ReleaseDir has no reply; it is counted as OK.
func (w *timedFS) ReleaseDir(input *fuse.ReleaseIn) {
	start := time.Now()
	w.RawFileSystem.ReleaseDir(input)
	w.t.record(OpReleasedir, start, fuse.OK)
}

// Read also counts the bytes returned.
func (w *timedFS) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	start := time.Now()
	res, st := w.RawFileSystem.Read(cancel, input, buf)
	if st == fuse.OK && res != nil {
		w.t.readBytes.Add(uint64(res.Size()))
	}
	w.t.record(OpRead, start, st)
	return res, st
}

// Write also counts the bytes written.
func (w *timedFS) Write(cancel <-chan struct{}, input *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	start := time.Now()
	n, st := w.RawFileSystem.Write(cancel, input, data)
	w.t.writeBytes.Add(uint64(n))
	w.t.record(OpWrite, start, st)
	return n, st
}

// Writev is go-fuse's first choice for WRITE; when it answers ENOSYS, go-fuse calls Write, which
// counts the request, so that reply is not counted here.
func (w *timedFS) Writev(cancel <-chan struct{}, input *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	start := time.Now()
	n, st := w.RawFileSystem.Writev(cancel, input, data)
	if st == fuse.ENOSYS {
		return n, st
	}
	w.t.writeBytes.Add(uint64(n))
	w.t.record(OpWrite, start, st)
	return n, st
}

func (w *timedFS) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Lookup(cancel, header, name, out)
	w.t.record(OpLookup, start, st)
	return st
}

func (w *timedFS) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.GetAttr(cancel, input, out)
	w.t.record(OpGetattr, start, st)
	return st
}

func (w *timedFS) SetAttr(cancel <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.SetAttr(cancel, input, out)
	w.t.record(OpSetattr, start, st)
	return st
}

func (w *timedFS) Mknod(cancel <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Mknod(cancel, input, name, out)
	w.t.record(OpMknod, start, st)
	return st
}

func (w *timedFS) Mkdir(cancel <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Mkdir(cancel, input, name, out)
	w.t.record(OpMkdir, start, st)
	return st
}

func (w *timedFS) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Unlink(cancel, header, name)
	w.t.record(OpUnlink, start, st)
	return st
}

func (w *timedFS) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Rmdir(cancel, header, name)
	w.t.record(OpRmdir, start, st)
	return st
}

func (w *timedFS) Rename(cancel <-chan struct{}, input *fuse.RenameIn, oldName string, newName string) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Rename(cancel, input, oldName, newName)
	w.t.record(OpRename, start, st)
	return st
}

func (w *timedFS) Link(cancel <-chan struct{}, input *fuse.LinkIn, filename string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Link(cancel, input, filename, out)
	w.t.record(OpLink, start, st)
	return st
}

func (w *timedFS) Symlink(cancel <-chan struct{}, header *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Symlink(cancel, header, pointedTo, linkName, out)
	w.t.record(OpSymlink, start, st)
	return st
}

func (w *timedFS) Readlink(cancel <-chan struct{}, header *fuse.InHeader) ([]byte, fuse.Status) {
	start := time.Now()
	v, st := w.RawFileSystem.Readlink(cancel, header)
	w.t.record(OpReadlink, start, st)
	return v, st
}

func (w *timedFS) Access(cancel <-chan struct{}, input *fuse.AccessIn) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Access(cancel, input)
	w.t.record(OpAccess, start, st)
	return st
}

func (w *timedFS) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	start := time.Now()
	v, st := w.RawFileSystem.GetXAttr(cancel, header, attr, dest)
	w.t.record(OpGetxattr, start, st)
	return v, st
}

func (w *timedFS) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	start := time.Now()
	v, st := w.RawFileSystem.ListXAttr(cancel, header, dest)
	w.t.record(OpListxattr, start, st)
	return v, st
}

func (w *timedFS) SetXAttr(cancel <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.SetXAttr(cancel, input, attr, data)
	w.t.record(OpSetxattr, start, st)
	return st
}

func (w *timedFS) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.RemoveXAttr(cancel, header, attr)
	w.t.record(OpRemovexattr, start, st)
	return st
}

func (w *timedFS) Create(cancel <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Create(cancel, input, name, out)
	w.t.record(OpCreate, start, st)
	return st
}

func (w *timedFS) Tmpfile(cancel <-chan struct{}, input *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Tmpfile(cancel, input, out)
	w.t.record(OpTmpfile, start, st)
	return st
}

func (w *timedFS) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Open(cancel, input, out)
	w.t.record(OpOpen, start, st)
	return st
}

func (w *timedFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Lseek(cancel, in, out)
	w.t.record(OpLseek, start, st)
	return st
}

func (w *timedFS) GetLk(cancel <-chan struct{}, input *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.GetLk(cancel, input, out)
	w.t.record(OpGetlk, start, st)
	return st
}

func (w *timedFS) SetLk(cancel <-chan struct{}, input *fuse.LkIn) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.SetLk(cancel, input)
	w.t.record(OpSetlk, start, st)
	return st
}

func (w *timedFS) SetLkw(cancel <-chan struct{}, input *fuse.LkIn) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.SetLkw(cancel, input)
	w.t.record(OpSetlkw, start, st)
	return st
}

func (w *timedFS) CopyFileRange(cancel <-chan struct{}, input *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	start := time.Now()
	v, st := w.RawFileSystem.CopyFileRange(cancel, input)
	w.t.record(OpCopyFileRange, start, st)
	return v, st
}

func (w *timedFS) Ioctl(cancel <-chan struct{}, input *fuse.IoctlIn, inbuf []byte, output *fuse.IoctlOut, outbuf []byte) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Ioctl(cancel, input, inbuf, output, outbuf)
	w.t.record(OpIoctl, start, st)
	return st
}

func (w *timedFS) Flush(cancel <-chan struct{}, input *fuse.FlushIn) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Flush(cancel, input)
	w.t.record(OpFlush, start, st)
	return st
}

func (w *timedFS) Fsync(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Fsync(cancel, input)
	w.t.record(OpFsync, start, st)
	return st
}

func (w *timedFS) Fallocate(cancel <-chan struct{}, input *fuse.FallocateIn) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Fallocate(cancel, input)
	w.t.record(OpFallocate, start, st)
	return st
}

func (w *timedFS) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.OpenDir(cancel, input, out)
	w.t.record(OpOpendir, start, st)
	return st
}

func (w *timedFS) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.ReadDir(cancel, input, out)
	w.t.record(OpReaddir, start, st)
	return st
}

func (w *timedFS) ReadDirPlus(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.ReadDirPlus(cancel, input, out)
	w.t.record(OpReaddirplus, start, st)
	return st
}

func (w *timedFS) FsyncDir(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.FsyncDir(cancel, input)
	w.t.record(OpFsyncdir, start, st)
	return st
}

func (w *timedFS) StatFs(cancel <-chan struct{}, input *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.StatFs(cancel, input, out)
	w.t.record(OpStatfs, start, st)
	return st
}

func (w *timedFS) Statx(cancel <-chan struct{}, input *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	start := time.Now()
	st := w.RawFileSystem.Statx(cancel, input, out)
	w.t.record(OpStatx, start, st)
	return st
}
