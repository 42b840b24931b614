package fs

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
	"time"

	"github.com/kmipfs/kmipfs/crypt"
	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/meta"
	"github.com/kmipfs/kmipfs/objstore"
)

// errnoError carries an errno chosen by fs itself through code that returns error.
type errnoError struct {
	errno syscall.Errno
	msg   string
}

func (e *errnoError) Error() string { return e.msg }

// errnoErr returns an error that toErrno maps to errno.
func errnoErr(errno syscall.Errno, msg string) error { return &errnoError{errno: errno, msg: msg} }

// toErrno maps an error from the leaf packages to the errno the application sees. It is the only
// place where that mapping happens. Unexpected errors become EIO and are logged once here, with op
// and the attributes the caller passes (bucket, path, inode), so a person can act on the line.
func (f *FS) toErrno(err error, op string, attrs ...any) syscall.Errno {
	if err == nil {
		return 0
	}
	var ee *errnoError
	switch {
	case errors.As(err, &ee):
		return ee.errno
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, context.DeadlineExceeded):
		f.log.Warn("request timed out", append([]any{"op", op, "err", err}, attrs...)...)
		return syscall.ETIMEDOUT
	case errors.Is(err, meta.ErrNotFound), errors.Is(err, objstore.ErrBucketNotFound):
		return syscall.ENOENT
	case errors.Is(err, meta.ErrExist):
		return syscall.EEXIST
	case errors.Is(err, meta.ErrNotEmpty), errors.Is(err, objstore.ErrBucketNotEmpty):
		return syscall.ENOTEMPTY
	case errors.Is(err, meta.ErrNotDir):
		return syscall.ENOTDIR
	case errors.Is(err, meta.ErrIsDir):
		return syscall.EISDIR
	case errors.Is(err, meta.ErrCrossBucket):
		return syscall.EXDEV
	case errors.Is(err, meta.ErrInvalid), errors.Is(err, objstore.ErrInvalidBucketName):
		return syscall.EINVAL
	case errors.Is(err, objstore.ErrNoSpace):
		f.log.Error("object store is full", append([]any{"op", op, "err", err}, attrs...)...)
		return syscall.ENOSPC
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		f.log.Error("no space for the metadata database", append([]any{"op", op, "err", err}, attrs...)...)
		return syscall.ENOSPC
	case errors.Is(err, kms.ErrKeyNotFound):
		f.log.Warn("key not found in KMIP", append([]any{"op", op, "err", err}, attrs...)...)
		return syscall.ENOKEY
	case errors.Is(err, kms.ErrAmbiguous), errors.Is(err, kms.ErrBadKey):
		f.log.Error("unusable KMIP key", append([]any{"op", op, "err", err}, attrs...)...)
		return syscall.ENOKEY
	case errors.Is(err, crypt.ErrAuth), errors.Is(err, crypt.ErrFormat):
		if !f.firstReport(err.Error()) {
			// The kernel retries a failed readahead page by page; one line per damaged block.
			return syscall.EIO
		}
		f.log.Error("authentication failed: data in the object store was changed or damaged",
			append([]any{"op", op, "err", err}, attrs...)...)
		return syscall.EIO
	case errors.Is(err, kms.ErrUnavailable):
		f.log.Error("KMIP server unavailable", append([]any{"op", op, "err", err}, attrs...)...)
		return syscall.EIO
	case errors.Is(err, meta.ErrNameTooLong):
		return syscall.ENAMETOOLONG
	}
	// Any other errno in the chain comes from the store or the database (EACCES on the store
	// directory, EROFS, a disk's EIO): to the application that is an I/O error of the
	// filesystem, not a permission problem of its own, and a person must see it.
	f.log.Error("I/O error", append([]any{"op", op, "err", err}, attrs...)...)
	return syscall.EIO
}

// firstReport reports whether the problem named by key was not already logged in the last
// minute, so that one damaged block gives one log line, not one per retry.
func (f *FS) firstReport(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := time.Now()
	if last, ok := f.reported[key]; ok && t.Sub(last) < time.Minute {
		return false
	}
	if len(f.reported) > 1000 {
		clear(f.reported)
	}
	f.reported[key] = t
	return true
}

// detach returns the request context without its cancellation. The kernel cancels a request
// when the calling process gets a signal, but a local filesystem does not fail unlink, rename,
// close, or a read or write of a regular file with EINTR, and programs do not expect it (the Go
// runtime alone sends SIGURG to its threads all the time). So kmipfs finishes what it started. A
// fatal signal still ends the process at once (the kernel stops waiting for the reply), and
// every store and KMIP call has timeouts of its own.
func detach(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// discardLogger is used when Options.Logger is nil.
var discardLogger = slog.New(slog.DiscardHandler)
