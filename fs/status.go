package fs

import (
	"context"
	"syscall"
	"time"
)

// xattrStatus is the control attribute of the mount root that kmipfs status reads: a JSON
// document about the running mount (see StatusSource). It is read-only, is not listed by
// listxattr (as every user.kmipfs.* name), and exists only on the root.
//
// An attribute of the mount root, rather than a local socket, because it needs nothing else to
// find, secure or clean up: the path a person already has names the mount, the kernel applies the
// mount's own access rules (allow_other, the root directory's mode), and there is no socket file
// to go stale when the process dies (the getxattr then fails with ENOTCONN, which says exactly
// that). Its limit, 64 KiB per value, is far above the few kilobytes of the document.
const xattrStatus = "user.kmipfs.status"

// StatusSource builds the status document of a mount. It is called on the FUSE request of the
// getxattr, so it must bound its own time (it may ping the key server, with a short timeout).
type StatusSource interface {
	Status(ctx context.Context) ([]byte, error)
}

// StatusFunc adapts a function to StatusSource.
type StatusFunc func(ctx context.Context) ([]byte, error)

// Status calls fn.
func (fn StatusFunc) Status(ctx context.Context) ([]byte, error) { return fn(ctx) }

// statusReuse is how long the document built for a size query (getxattr with an empty buffer, as
// getfattr does first) is kept for the read that follows it, so both see the same bytes.
const statusReuse = 2 * time.Second

// getStatus answers getxattr of user.kmipfs.status on the root, following the size protocol of
// getxattr(2): a size query builds the document and keeps it for the next read; a read uses that
// copy if it is fresh (and takes it), else builds a new document.
func (f *FS) getStatus(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if f.status == nil {
		return 0, syscall.ENODATA
	}
	var doc []byte
	if len(dest) > 0 {
		f.statusMu.Lock()
		if f.statusDoc != nil && time.Since(f.statusAt) < statusReuse && len(f.statusDoc) <= len(dest) {
			doc = f.statusDoc
			f.statusDoc = nil
		}
		f.statusMu.Unlock()
	}
	if doc == nil {
		var err error
		if doc, err = f.status.Status(ctx); err != nil {
			return 0, f.toErrno(err, "status")
		}
		if len(doc) > maxXattrSize {
			f.log.Error("status document is larger than an xattr value can be", "bytes", len(doc))
			return 0, syscall.E2BIG
		}
	}
	if len(dest) == 0 {
		f.statusMu.Lock()
		f.statusDoc, f.statusAt = doc, time.Now()
		f.statusMu.Unlock()
	}
	return copyXattr(dest, doc)
}
