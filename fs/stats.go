package fs

import (
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kmipfs/kmipfs/meta"
)

// Op is a FUSE operation, as counted in Stats.
type Op uint8

// The FUSE operations kmipfs counts, one per method of go-fuse's RawFileSystem that the kernel
// reaches (BATCH_FORGET counts as forget).
const (
	OpLookup Op = iota
	OpForget
	OpGetattr
	OpSetattr
	OpMknod
	OpMkdir
	OpUnlink
	OpRmdir
	OpRename
	OpLink
	OpSymlink
	OpReadlink
	OpAccess
	OpGetxattr
	OpListxattr
	OpSetxattr
	OpRemovexattr
	OpCreate
	OpTmpfile
	OpOpen
	OpRead
	OpLseek
	OpGetlk
	OpSetlk
	OpSetlkw
	OpRelease
	OpWrite
	OpCopyFileRange
	OpIoctl
	OpFlush
	OpFsync
	OpFallocate
	OpOpendir
	OpReaddir
	OpReaddirplus
	OpReleasedir
	OpFsyncdir
	OpStatfs
	OpStatx
	NumOps // the number of operations, not one of them
)

var opNames = [NumOps]string{
	"lookup", "forget", "getattr", "setattr", "mknod", "mkdir", "unlink", "rmdir", "rename", "link",
	"symlink", "readlink", "access", "getxattr", "listxattr", "setxattr", "removexattr", "create",
	"tmpfile", "open", "read", "lseek", "getlk", "setlk", "setlkw", "release", "write",
	"copy_file_range", "ioctl", "flush", "fsync", "fallocate", "opendir", "readdir", "readdirplus",
	"releasedir", "fsyncdir", "statfs", "statx",
}

// String returns the operation's name in lower case, as the kernel's FUSE_* opcode without the
// prefix ("write", "getxattr").
func (o Op) String() string {
	if o < NumOps {
		return opNames[o]
	}
	return "unknown"
}

// LatencyBuckets are the upper bounds, in seconds, of the buckets of the FUSE latency
// histograms: few, a decade apart, from a cached lookup (well under 100 µs) to a flush that waits
// for a slow store.
var LatencyBuckets = [...]float64{0.0001, 0.001, 0.01, 0.1, 1, 10}

// opCounter is the histogram of one operation. Each bucket counts the requests that took at most
// its bound and more than the previous one (the last, beyond every bound); the request count is
// their sum, so a snapshot taken while requests complete is still a consistent histogram.
type opCounter struct {
	buckets [len(LatencyBuckets) + 1]atomic.Uint64
	nanos   atomic.Uint64
	errors  atomic.Uint64
}

// opTable counts every FUSE operation: two or three atomic adds per request, no allocation and no
// lock, so the cost on the hot path stays far below the FUSE round trip itself.
type opTable struct {
	ops                   [NumOps]opCounter
	readBytes, writeBytes atomic.Uint64
}

// record counts one request of op that started at start and replied st.
func (t *opTable) record(op Op, start time.Time, st fuse.Status) {
	d := time.Since(start)
	c := &t.ops[op]
	s := d.Seconds()
	i := 0
	for i < len(LatencyBuckets) && s > LatencyBuckets[i] {
		i++
	}
	c.buckets[i].Add(1)
	c.nanos.Add(uint64(d.Nanoseconds()))
	if st != fuse.OK {
		c.errors.Add(1)
	}
}

// OpStats is the snapshot of one operation's counters.
type OpStats struct {
	Op Op
	// Count is the number of requests answered, Errors of those whose reply was not OK (ENOENT
	// from a lookup of a missing name included).
	Count, Errors uint64
	// Seconds is the total time spent answering them.
	Seconds float64
	// Buckets[i] is the number of requests that took at most LatencyBuckets[i] (cumulative, as
	// a Prometheus histogram).
	Buckets [len(LatencyBuckets)]uint64
}

// Stats is a snapshot of a filesystem's counters and gauges, for metrics and kmipfs status.
// Counters count from New; gauges are the state at the time of the call.
type Stats struct {
	// Ops has one entry per operation, indexed by Op. Requests are counted only on a mount made
	// by Mount.
	Ops [NumOps]OpStats
	// ReadBytes and WrittenBytes are the file data read and written through the mount.
	ReadBytes, WrittenBytes uint64

	// DirtyBytes is the file data written but not yet in the store (gauge), DirtyFiles the number
	// of files holding such data, OpenFiles the number of files with a data state (open, or
	// holding data the store refused).
	DirtyBytes int64
	DirtyFiles int64
	OpenFiles  int

	// Flushes counts the dirty buffers written to the store and committed (one object each, or a
	// metadata-only commit after a truncate), FlushErrors those that failed and were kept for a
	// retry, FlushedBytes the sealed bytes stored by flushes.
	Flushes, FlushErrors, FlushedBytes uint64

	// GCDeleted counts the superseded or freed objects deleted from the store, GCErrors the
	// deletes that failed (the object stays queued for the next mount), GCPending the objects
	// queued for deletion now (gauge).
	GCDeleted, GCErrors uint64
	GCPending           int64
	// OrphansReleased counts the unlinked inodes released after their last use, OrphansPending
	// the unlinked inodes still open or known to the kernel (gauge).
	OrphansReleased uint64
	OrphansPending  int

	// Meta is the metadata read cache.
	Meta meta.CacheStats
}

// counters are the FS's own counters behind Stats.
type counters struct {
	ops                                opTable
	dirtyFiles                         atomic.Int64
	flushes, flushErrors, flushedBytes atomic.Uint64
	gcDeleted, gcErrors                atomic.Uint64
	orphansReleased                    atomic.Uint64
}

// Stats returns a snapshot of the filesystem's counters. It takes FS.mu briefly and no file's
// content lock, so it never waits for a flush in progress.
func (f *FS) Stats() Stats {
	var s Stats
	for op := range NumOps {
		c := &f.stats.ops.ops[op]
		o := &s.Ops[op]
		o.Op = op
		var cum uint64
		for i := range LatencyBuckets {
			cum += c.buckets[i].Load()
			o.Buckets[i] = cum
		}
		o.Count = cum + c.buckets[len(LatencyBuckets)].Load()
		o.Seconds = float64(c.nanos.Load()) / 1e9
		o.Errors = c.errors.Load()
	}
	s.ReadBytes = f.stats.ops.readBytes.Load()
	s.WrittenBytes = f.stats.ops.writeBytes.Load()
	s.DirtyBytes = f.dirtyBlocks.Load() * blockSize
	s.DirtyFiles = f.stats.dirtyFiles.Load()
	s.Flushes = f.stats.flushes.Load()
	s.FlushErrors = f.stats.flushErrors.Load()
	s.FlushedBytes = f.stats.flushedBytes.Load()
	s.GCDeleted = f.stats.gcDeleted.Load()
	s.GCErrors = f.stats.gcErrors.Load()
	s.GCPending = f.gc.queued.Load()
	s.OrphansReleased = f.stats.orphansReleased.Load()
	f.mu.Lock()
	s.OpenFiles = len(f.files)
	s.OrphansPending = len(f.orphans)
	f.mu.Unlock()
	s.Meta = f.meta.CacheStats()
	return s
}
