package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kmipfs/kmipfs/objstore"
)

var (
	_ objstore.Store        = (*Store)(nil)
	_ objstore.BucketLister = (*Store)(nil)
	_ objstore.Syncer       = (*Store)(nil)
)

const (
	// tmpDirName is the directory of temporary files under root. It cannot clash with a bucket because a bucket
	// name must start with a letter or digit.
	tmpDirName = ".tmp"
	// tmpPrefix starts the name of every temporary file; the writer's pid follows it.
	tmpPrefix = "put-"
	// maxSegment is the longest file name Linux file systems take (NAME_MAX).
	maxSegment = 255
	// markerName is the file in root that says the directory is a kmipfs local store, and of which
	// layout version. Like tmpDirName it cannot clash with a bucket.
	markerName = ".kmipfs-store"
	// markerText is its content: layout 1 is the one this package documents.
	markerText = "kmipfs local object store, layout 1\n"
)

// ErrForeignRoot is returned by New for a root directory that holds files but is not a kmipfs store: kmipfs
// never writes into, or serves as buckets, folders it did not make.
var ErrForeignRoot = errors.New("objstore: not a kmipfs object store")

// Options configures a Store.
type Options struct {
	// Logger receives the few events that are not returned as errors: stale temporary files removed at New, and
	// best-effort clean-ups that failed. Nil discards them.
	Logger *slog.Logger
	// SyncEachPut makes every Put fsync the object and its directory before it returns, so that each Put alone
	// survives a power loss. Off, Put is durable against a crash of the process only, and Sync makes everything
	// put so far durable with one syncfs(2): what a filesystem needs, since POSIX asks for durability at fsync.
	SyncEachPut bool
}

// Store is an objstore.Store on a local directory tree. See the package documentation for the layout.
type Store struct {
	root       string
	tmp        string
	tmpPattern string
	log        *slog.Logger
	syncEach   bool

	// pending holds the objects and directories changed by Puts since the last Sync (without SyncEachPut).
	pendMu   sync.Mutex
	pending  map[string]struct{}
	overflow bool // pending overflowed maxPending since the last Sync
	// syncMu serializes Syncs.
	syncMu sync.Mutex

	// dirMu orders the creation of key directories against their removal: Put holds it shared around mkdir and
	// rename, Delete and DeleteBucket hold it exclusively while they remove empty directories.
	dirMu sync.RWMutex

	// beforeRename, when set by a test, runs in Put after the temporary file is synced and before it is renamed
	// into place.
	beforeRename func()
}

// New opens the store rooted at root, creating root (0700) and root/.tmp if they are missing, and removes
// temporary files left by processes that no longer run.
func New(root string, opts Options) (*Store, error) {
	if root == "" {
		return nil, errors.New("objstore: open local store: empty root path")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("objstore: open local store %q: %w", root, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		root:       abs,
		tmp:        filepath.Join(abs, tmpDirName),
		tmpPattern: tmpPrefix + strconv.Itoa(os.Getpid()) + "-*",
		log:        log,
		syncEach:   opts.SyncEachPut,
		pending:    make(map[string]struct{}),
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, wrapErr("open local store", abs, err)
	}
	if err := claimRoot(abs); err != nil {
		return nil, fmt.Errorf("objstore: open local store %q: %w", abs, err)
	}
	if err := os.Mkdir(s.tmp, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, wrapErr("open local store", abs, err)
	}
	if fi, err := os.Stat(s.tmp); err != nil {
		return nil, wrapErr("open local store", abs, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("objstore: open local store %q: %s is not a directory", abs, s.tmp)
	}
	if err := s.cleanTemp(); err != nil {
		return nil, wrapErr("open local store", abs, err)
	}
	return s, nil
}

// claimRoot checks that root is a kmipfs store, or empty, and writes the marker into an empty root. A root
// that has the temporary directory but no marker was made by an earlier kmipfs and gets the marker.
func claimRoot(root string) error {
	marker := filepath.Join(root, markerName)
	b, err := os.ReadFile(marker)
	switch {
	case err == nil && string(b) == markerText:
		return nil
	case err == nil:
		return fmt.Errorf("%w: %s says %q; this kmipfs knows %q", ErrForeignRoot, marker,
			strings.TrimSpace(string(b)), strings.TrimSpace(markerText))
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	ours, seen := true, 0
	for _, e := range entries {
		switch {
		case e.Name() == tmpDirName && e.IsDir():
			ours, seen = true, -len(entries) // made by an earlier kmipfs
		case e.Name() == "lost+found":
			// the root of a file system of its own
		default:
			seen++
		}
	}
	if seen > 0 {
		ours = false
	}
	if !ours {
		return fmt.Errorf("%w: the directory holds %d entries (%s, ...) and no %s; point the store at an empty or new directory",
			ErrForeignRoot, len(entries), entries[0].Name(), markerName)
	}
	if err := os.WriteFile(marker, []byte(markerText), 0o600); err != nil {
		return err
	}
	return syncDir(root)
}

// cleanTemp removes the temporary files of dead processes.
func (s *Store) cleanTemp() error {
	entries, err := os.ReadDir(s.tmp)
	if err != nil {
		return err
	}
	removed := 0
	for _, e := range entries {
		if !staleTemp(e.Name()) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.tmp, e.Name())); err != nil {
			s.log.Warn("objstore: cannot remove stale temporary file", "path", filepath.Join(s.tmp, e.Name()),
				"err", err)
			continue
		}
		removed++
	}
	if removed > 0 {
		s.log.Info("objstore: removed stale temporary files", "dir", s.tmp, "count", removed)
	}
	return nil
}

// staleTemp reports whether the entry name in root/.tmp can be removed: it is not a temporary file of ours, or the
// process that wrote it is gone. A pid that was reused only delays the clean-up until a later New.
func staleTemp(name string) bool {
	rest, ok := strings.CutPrefix(name, tmpPrefix)
	if !ok {
		return true
	}
	pidText, _, ok := strings.Cut(rest, "-")
	if !ok {
		return true
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return true
	}
	if pid == os.Getpid() {
		return false // another Store in this process may be writing it
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// wrapErr wraps an OS error as "objstore: op "name": err", adding objstore.ErrNoSpace for ENOSPC and EDQUOT.
func wrapErr(op, name string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("objstore: %s %q: %w: %w", op, name, objstore.ErrNoSpace, err)
	}
	return fmt.Errorf("objstore: %s %q: %w", op, name, err)
}

// validate checks a bucket name and a key, including the local limit on segment length.
func validate(bucket, key string) error {
	if err := objstore.ValidBucketName(bucket); err != nil {
		return err
	}
	if err := objstore.ValidKey(key); err != nil {
		return err
	}
	for seg := range strings.SplitSeq(key, "/") {
		if len(seg) > maxSegment {
			return fmt.Errorf("%w: a path segment is %d bytes long; the local store takes at most %d",
				objstore.ErrInvalidKey, len(seg), maxSegment)
		}
	}
	return nil
}

// errCollision explains why a key that ValidKey accepts cannot be stored here.
var errCollision = fmt.Errorf("%w: the key and an existing object's key are path prefixes of each other "+
	"(the local store cannot hold both \"a\" and \"a/b\")", objstore.ErrInvalidKey)

func (s *Store) bucketDir(bucket string) string { return filepath.Join(s.root, bucket) }

func (s *Store) objPath(bucket, key string) string {
	return filepath.Join(s.root, bucket, filepath.FromSlash(key))
}

// checkBucket returns objstore.ErrBucketNotFound if the bucket directory does not exist.
func checkBucket(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return objstore.ErrBucketNotFound
	case err != nil:
		return err
	case !fi.IsDir():
		return objstore.ErrBucketNotFound
	}
	return nil
}

// missing turns "no such file" for an object path into ErrBucketNotFound or ErrNotFound.
func missing(bucketDir string) error {
	if err := checkBucket(bucketDir); err != nil {
		return err
	}
	return objstore.ErrNotFound
}

// isMissing reports whether err from opening an object path means that there is no such file.
func isMissing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// syncDir fsyncs a directory so that the entries created or removed in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// CreateBucket implements objstore.Store.
func (s *Store) CreateBucket(ctx context.Context, bucket string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: create bucket %q: %w", bucket, err)
	}
	if err := objstore.ValidBucketName(bucket); err != nil {
		return fmt.Errorf("objstore: create bucket %q: %w", bucket, err)
	}
	if err := os.Mkdir(s.bucketDir(bucket), 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("objstore: create bucket %q: %w", bucket, objstore.ErrBucketExists)
		}
		return wrapErr("create bucket", bucket, err)
	}
	if err := syncDir(s.root); err != nil {
		return wrapErr("create bucket", bucket, err)
	}
	return nil
}

// DeleteBucket implements objstore.Store. Empty directories left in the bucket by an interrupted clean-up do not
// count as contents.
func (s *Store) DeleteBucket(ctx context.Context, bucket string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: delete bucket %q: %w", bucket, err)
	}
	if err := objstore.ValidBucketName(bucket); err != nil {
		return fmt.Errorf("objstore: delete bucket %q: %w", bucket, err)
	}
	dir := s.bucketDir(bucket)
	// Exclusive: no Put may create a directory or an object in the bucket while it is checked and removed.
	s.dirMu.Lock()
	defer s.dirMu.Unlock()
	err := syscall.Rmdir(dir)
	if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
		empty, cerr := removeEmptyDirs(dir)
		if cerr != nil {
			return wrapErr("delete bucket", bucket, cerr)
		}
		if !empty {
			return fmt.Errorf("objstore: delete bucket %q: %w", bucket, objstore.ErrBucketNotEmpty)
		}
		err = syscall.Rmdir(dir)
	}
	switch {
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("objstore: delete bucket %q: %w", bucket, objstore.ErrBucketNotFound)
	case err != nil:
		return wrapErr("delete bucket", bucket, &fs.PathError{Op: "rmdir", Path: dir, Err: err})
	}
	if err := syncDir(s.root); err != nil {
		return wrapErr("delete bucket", bucket, err)
	}
	return nil
}

// removeEmptyDirs removes every subdirectory of dir that holds no file, bottom up, and reports whether dir is now
// empty. The caller holds dirMu exclusively.
func removeEmptyDirs(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	empty := true
	for _, e := range entries {
		if !e.IsDir() {
			empty = false
			continue
		}
		sub := filepath.Join(dir, e.Name())
		subEmpty, err := removeEmptyDirs(sub)
		if err != nil {
			return false, err
		}
		if !subEmpty {
			empty = false
			continue
		}
		if err := syscall.Rmdir(sub); err != nil {
			return false, &fs.PathError{Op: "rmdir", Path: sub, Err: err}
		}
	}
	return empty, nil
}

// Buckets implements objstore.BucketLister. It lists the directories (or symlinks to directories) of root whose
// names are valid bucket names.
func (s *Store) Buckets(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("objstore: list buckets: %w", err)
	}
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("objstore: list buckets: %w", err)
	}
	var names []string
	for _, e := range entries {
		if objstore.ValidBucketName(e.Name()) != nil {
			continue
		}
		if !e.IsDir() {
			if e.Type()&fs.ModeSymlink == 0 {
				continue
			}
			if fi, err := os.Stat(filepath.Join(s.root, e.Name())); err != nil || !fi.IsDir() {
				continue
			}
		}
		names = append(names, e.Name())
	}
	return names, nil // os.ReadDir sorts by name
}

// Put implements objstore.Store; see the package documentation for how it is made atomic and durable.
func (s *Store) Put(ctx context.Context, bucket, key string, data []byte) error {
	name := bucket + "/" + key
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: put %q: %w", name, err)
	}
	if err := validate(bucket, key); err != nil {
		return fmt.Errorf("objstore: put %q: %w", name, err)
	}
	bdir := s.bucketDir(bucket)
	if err := checkBucket(bdir); err != nil {
		return wrapErr("put", name, err)
	}
	tmp, err := s.writeTemp(data)
	if err != nil {
		return wrapErr("put", name, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			s.removeTemp(tmp)
		}
	}()
	if s.beforeRename != nil {
		s.beforeRename()
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: put %q: %w", name, err)
	}
	dirs, err := s.link(bdir, key, tmp)
	if err != nil {
		return wrapErr("put", name, err)
	}
	renamed = true
	if !s.syncEach {
		s.pendMu.Lock()
		if len(s.pending) >= maxPending {
			// Too many to track: the next Sync writes back the whole file system instead.
			clear(s.pending)
			s.overflow = true
		}
		if !s.overflow {
			s.pending[s.objPath(bucket, key)] = struct{}{}
			for _, d := range dirs {
				s.pending[d] = struct{}{}
			}
		}
		s.pendMu.Unlock()
		return nil
	}
	for _, d := range dirs {
		if err := fsyncPath(d); err != nil {
			return wrapErr("put", name, err)
		}
	}
	return nil
}

// fsyncPath fsyncs a file or directory by path. A path that is gone needs no sync: a concurrent
// Delete or DeleteBucket removed it, and what it held with it.
func fsyncPath(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncfsThreshold is the number of waiting paths above which Sync writes back the whole file system with one
// syncfs(2) instead of one fsync(2) per path: after an untar, thousands of fsyncs would take seconds, while
// syncfs also walks every other dirty inode of the file system, which costs more than a few fsyncs.
const syncfsThreshold = 64

// maxPending bounds the paths remembered for Sync, so that writing millions of objects without a Sync does not
// grow memory without bound.
const maxPending = 8192

// Sync implements objstore.Syncer: it fsyncs every object written by a Put that returned before the call, and the
// directories that got new entries for them, or syncfs's the file system when many are waiting. Syncs are
// serialized, so a Sync that finds nothing waiting returns only after an earlier Sync that took the paths has
// made them durable.
func (s *Store) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: sync: %w", err)
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.pendMu.Lock()
	paths := make([]string, 0, len(s.pending))
	for p := range s.pending {
		paths = append(paths, p)
	}
	clear(s.pending)
	overflow := s.overflow
	s.overflow = false
	s.pendMu.Unlock()
	if len(paths) == 0 && !overflow {
		return nil
	}
	if !overflow && len(paths) <= syncfsThreshold {
		// Files before directories: on a journaling file system the first fsync commits the directory
		// entries too, and the directory fsyncs that follow find nothing left to do.
		slices.SortFunc(paths, func(a, b string) int { return strings.Compare(b, a) })
		for _, p := range paths {
			if err := fsyncPath(p); err != nil {
				return wrapErr("sync", p, err)
			}
		}
		return nil
	}
	return s.syncfs()
}

// syncfs writes back the whole file system that holds root.
func (s *Store) syncfs() error {
	d, err := os.Open(s.root)
	if err != nil {
		return wrapErr("sync", s.root, err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return wrapErr("sync", s.root, &fs.PathError{Op: "syncfs", Path: s.root, Err: err})
	}
	return nil
}

// writeTemp writes data to a new temporary file, fsyncs it if every Put is to be durable, closes it, and
// returns its path.
func (s *Store) writeTemp(data []byte) (string, error) {
	f, err := os.CreateTemp(s.tmp, s.tmpPattern) // mode 0600
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil && s.syncEach {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.removeTemp(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// removeTemp removes a temporary file after a failed Put. A failure is only logged: the error of the Put is the
// one worth returning, and New removes the file later anyway.
func (s *Store) removeTemp(path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("objstore: cannot remove temporary file", "path", path, "err", err)
	}
}

// link renames the temporary file tmp to the object key in the bucket directory bdir, creating the key's
// directories as needed. It returns the directories that got new entries, to fsync when the object is to be
// durable.
func (s *Store) link(bdir, key, tmp string) ([]string, error) {
	s.dirMu.RLock()
	defer s.dirMu.RUnlock()

	dst := filepath.Join(bdir, filepath.FromSlash(key))
	parent := filepath.Dir(dst)
	firstNew := "" // the topmost directory this Put created
	err := os.Rename(tmp, dst)
	if errors.Is(err, syscall.ENOENT) && parent != bdir {
		firstNew, err = mkdirs(bdir, key)
		if err == nil {
			err = os.Rename(tmp, dst)
		}
	}
	switch {
	case errors.Is(err, syscall.ENOENT):
		if berr := checkBucket(bdir); berr != nil {
			return nil, berr
		}
		return nil, err // the temporary file vanished: another Store's New removed it
	case errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) ||
		errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST):
		return nil, errCollision
	case err != nil:
		return nil, err
	}

	// The new name must be durable in its directory, and every directory created for it in its parent.
	// The directories created are firstNew down to parent, so the set to sync is parent up to firstNew's parent.
	toSync := []string{parent}
	if firstNew != "" {
		stop := filepath.Dir(firstNew)
		for d := filepath.Dir(parent); ; d = filepath.Dir(d) {
			toSync = append(toSync, d)
			if d == stop || len(d) <= len(bdir) {
				break
			}
		}
	}
	return toSync, nil
}

// mkdirs creates the directories of key below the bucket directory bdir, one by one so that it never recreates
// a bucket that was deleted. It returns the topmost directory it created, or "" if all existed. The caller holds
// dirMu shared.
func mkdirs(bdir, key string) (string, error) {
	segs := strings.Split(key, "/")
	firstNew := ""
	dir := bdir
	for i, seg := range segs[:len(segs)-1] {
		dir = filepath.Join(dir, seg)
		err := os.Mkdir(dir, 0o700)
		switch {
		case err == nil:
			if firstNew == "" {
				firstNew = dir
			}
		case errors.Is(err, fs.ErrExist):
			// Already there; if it is a file, the next Mkdir or the rename reports ENOTDIR.
		case i == 0 && errors.Is(err, syscall.ENOENT):
			return "", objstore.ErrBucketNotFound
		default:
			return "", err
		}
	}
	return firstNew, nil
}

// Get implements objstore.Store. A missing bucket is objstore.ErrBucketNotFound.
func (s *Store) Get(ctx context.Context, bucket, key string, off, length int64) ([]byte, error) {
	name := bucket + "/" + key
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("objstore: get %q: %w", name, err)
	}
	if err := validate(bucket, key); err != nil {
		return nil, fmt.Errorf("objstore: get %q: %w", name, err)
	}
	if off < 0 {
		return nil, fmt.Errorf("objstore: get %q: negative offset %d", name, off)
	}
	f, err := os.Open(s.objPath(bucket, key))
	if err != nil {
		if isMissing(err) {
			return nil, wrapErr("get", name, missing(s.bucketDir(bucket)))
		}
		return nil, wrapErr("get", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, wrapErr("get", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("objstore: get %q: %w", name, objstore.ErrNotFound)
	}
	size := fi.Size()
	if off >= size {
		return []byte{}, nil
	}
	n := size - off
	if length >= 0 && length < n {
		n = length
	}
	if n > math.MaxInt {
		return nil, fmt.Errorf("objstore: get %q: range of %d bytes does not fit in memory", name, n)
	}
	buf := make([]byte, n)
	got, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, wrapErr("get", name, err)
	}
	return buf[:got], nil
}

// Stat implements objstore.Store.
func (s *Store) Stat(ctx context.Context, bucket, key string) (objstore.Info, error) {
	name := bucket + "/" + key
	if err := ctx.Err(); err != nil {
		return objstore.Info{}, fmt.Errorf("objstore: stat %q: %w", name, err)
	}
	if err := validate(bucket, key); err != nil {
		return objstore.Info{}, fmt.Errorf("objstore: stat %q: %w", name, err)
	}
	fi, err := os.Stat(s.objPath(bucket, key))
	if err != nil {
		if isMissing(err) {
			return objstore.Info{}, wrapErr("stat", name, missing(s.bucketDir(bucket)))
		}
		return objstore.Info{}, wrapErr("stat", name, err)
	}
	if !fi.Mode().IsRegular() {
		return objstore.Info{}, fmt.Errorf("objstore: stat %q: %w", name, objstore.ErrNotFound)
	}
	return objstore.Info{Key: key, Size: fi.Size()}, nil
}

// Delete implements objstore.Store. It removes the directories the object leaves empty, best effort.
func (s *Store) Delete(ctx context.Context, bucket, key string) error {
	name := bucket + "/" + key
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: delete %q: %w", name, err)
	}
	if err := validate(bucket, key); err != nil {
		return fmt.Errorf("objstore: delete %q: %w", name, err)
	}
	bdir := s.bucketDir(bucket)
	path := s.objPath(bucket, key)
	err := syscall.Unlink(path)
	switch {
	case err == nil:
		s.prune(bdir, filepath.Dir(path))
		return nil
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR):
		if berr := checkBucket(bdir); berr != nil {
			return wrapErr("delete", name, berr)
		}
		return nil
	case errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.EPERM):
		// Linux says EISDIR, POSIX EPERM, for a directory: the key is only a prefix of other keys.
		if fi, lerr := os.Lstat(path); lerr == nil && fi.IsDir() {
			return nil
		}
	}
	return wrapErr("delete", name, &fs.PathError{Op: "unlink", Path: path, Err: err})
}

// prune removes dir and its parents up to, not including, the bucket directory bdir, for as long as they are
// empty.
func (s *Store) prune(bdir, dir string) {
	if dir == bdir {
		return
	}
	s.dirMu.Lock()
	defer s.dirMu.Unlock()
	for ; len(dir) > len(bdir); dir = filepath.Dir(dir) {
		err := syscall.Rmdir(dir)
		switch {
		case err == nil:
			continue
		case errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOENT):
		default:
			s.log.Warn("objstore: cannot remove empty directory", "path", dir, "err", err)
		}
		return
	}
}

// List implements objstore.Store. It walks the directories of the prefix in key order, one directory in memory
// at a time.
func (s *Store) List(ctx context.Context, bucket, prefix string, fn func(objstore.Info) error) error {
	name := bucket + "/" + prefix
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: list %q: %w", name, err)
	}
	if err := objstore.ValidBucketName(bucket); err != nil {
		return fmt.Errorf("objstore: list %q: %w", name, err)
	}
	bdir := s.bucketDir(bucket)
	if err := checkBucket(bdir); err != nil {
		return wrapErr("list", name, err)
	}
	// Descend straight to the directory named by the prefix up to its last '/'; the rest filters its entries.
	dir, keyBase, filter := bdir, "", prefix
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dirPart := prefix[:i]
		if objstore.ValidKey(dirPart) != nil {
			return nil // no valid key starts with this prefix
		}
		dir, keyBase, filter = filepath.Join(bdir, filepath.FromSlash(dirPart)), dirPart+"/", prefix[i+1:]
	}
	return s.walk(ctx, name, dir, keyBase, filter, fn)
}

type listEntry struct {
	name    string
	sortKey string // name, plus "/" for a directory, so that sorting entries sorts the keys below them
	isDir   bool
	entry   fs.DirEntry
}

// walk lists dir, whose objects have keys starting with keyBase, calling fn for the files whose names start with
// filter and descending into the directories that do. Errors from fn are returned as they are.
func (s *Store) walk(ctx context.Context, name, dir, keyBase, filter string, fn func(objstore.Info) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: list %q: %w", name, err)
	}
	dirents, err := os.ReadDir(dir)
	if err != nil {
		if isMissing(err) {
			return nil // nothing there, or removed by a concurrent Delete
		}
		return wrapErr("list", name, err)
	}
	entries := make([]listEntry, 0, len(dirents))
	for _, e := range dirents {
		n := e.Name()
		if !strings.HasPrefix(n, filter) || !validSegment(n) {
			continue
		}
		switch {
		case e.IsDir():
			entries = append(entries, listEntry{name: n, sortKey: n + "/", isDir: true, entry: e})
		case e.Type().IsRegular():
			entries = append(entries, listEntry{name: n, sortKey: n, entry: e})
		}
	}
	slices.SortFunc(entries, func(a, b listEntry) int { return strings.Compare(a.sortKey, b.sortKey) })
	for _, e := range entries {
		if e.isDir {
			if err := s.walk(ctx, name, filepath.Join(dir, e.name), keyBase+e.name+"/", "", fn); err != nil {
				return err
			}
			continue
		}
		fi, err := e.entry.Info()
		if err != nil {
			if isMissing(err) {
				continue // deleted since ReadDir
			}
			return wrapErr("list", name, err)
		}
		if err := fn(objstore.Info{Key: keyBase + e.name, Size: fi.Size()}); err != nil {
			return err
		}
	}
	return nil
}

// validSegment reports whether a directory entry can be a segment of a key, so that stray files that Put could
// never have written stay out of List.
func validSegment(n string) bool {
	return n != "" && len(n) <= maxSegment && !strings.Contains(n, "/") && objstore.ValidKey(n) == nil
}
