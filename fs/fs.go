package fs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kmipfs/kmipfs/meta"
	"github.com/kmipfs/kmipfs/objstore"
)

// SecretSource hands out the KMIP secret (key-encryption key) stored under a KMIP object name.
// The caller owns the returned slice and zeroes it after use. kms.Cache implements it.
type SecretSource interface {
	Secret(ctx context.Context, name string) ([]byte, error)
}

// Config is the [fs] section of kmipfs.toml.
type Config struct {
	// DefaultKeyID is the key id for files in trees where no directory names one. Empty means such
	// creates fail with ENOKEY.
	DefaultKeyID string `toml:"default_key_id"`
	// AllowOther lets users other than the one who mounted access the filesystem (FUSE allow_other).
	AllowOther bool `toml:"allow_other"`
	// DefaultPermissions makes the kernel check mode bits (FUSE default_permissions). Default true.
	DefaultPermissions *bool `toml:"default_permissions"`
	// MaxDirtyMiB bounds the written data of all files that is not in the store yet; a write that
	// would pass it flushes its file first (back-pressure). Default 128.
	MaxDirtyMiB int `toml:"max_dirty_mib"`
}

// defaultMaxDirtyMiB keeps the daemon well under 300 MiB however many files are written at once.
const defaultMaxDirtyMiB = 128

// SetDefaults fills in the defaults of unset options.
func (c *Config) SetDefaults() {
	if c.DefaultPermissions == nil {
		t := true
		c.DefaultPermissions = &t
	}
}

// Validate checks the options and names the one that is wrong.
func (c Config) Validate() error {
	if c.MaxDirtyMiB < 0 {
		return fmt.Errorf("fs.max_dirty_mib: expected a positive number of MiB, got %d", c.MaxDirtyMiB)
	}
	if strings.ContainsAny(c.DefaultKeyID, "\x00/") {
		return fmt.Errorf("fs.default_key_id: expected a key id without NUL or '/', got %q", c.DefaultKeyID)
	}
	return nil
}

// Options are what New needs to build a filesystem.
type Options struct {
	Meta  *meta.DB
	Store objstore.Store
	Keys  SecretSource
	// KeyTemplate turns a key id into a KMIP object name ("$keyid" is replaced).
	KeyTemplate string
	Config      Config
	Logger      *slog.Logger
	// FlushBytes is the size of a file's dirty buffer that triggers a flush to the store while the
	// file is still being written (default 16 MiB).
	FlushBytes int
	// EntryTimeout and AttrTimeout are how long the kernel may cache names (also the absence of a
	// name) and attributes; zero means defaultCacheTTL.
	EntryTimeout, AttrTimeout time.Duration
	// Status, if set, builds the document that getxattr of user.kmipfs.status on the mount root
	// returns (kmipfs status reads it); nil makes that attribute absent.
	Status StatusSource
}

// defaultCacheTTL is how long the kernel may cache entries, negative entries and attributes.
// A passthrough filesystem like gocryptfs must keep this near a second because other programs
// change its backing directory behind its back. kmipfs owns its metadata: every change reaches it
// through this mount, and the kernel already updates or drops what it cached for each change it
// forwards (a write, setattr, setxattr, link, unlink, rename; the parent directory of each).
// So the kernel may keep what it knows until memory pressure evicts it, saving a LOOKUP and a
// GETATTR round trip per path component and stat.
const defaultCacheTTL = time.Hour

// FS is a kmipfs filesystem: the state shared by all nodes of one mount.
type FS struct {
	meta        *meta.DB
	store       objstore.Store
	keys        SecretSource
	keyTemplate string
	cfg         Config
	log         *slog.Logger
	flushBytes  int
	maxDirty    int64
	// dirtyBlocks counts the dirty blocks of all files, for the mount-wide bound (maxDirty).
	dirtyBlocks atomic.Int64
	entryTTL    time.Duration
	attrTTL     time.Duration

	root *node

	// lifeMu orders the creation of a file's data state (acquire) against the release of an
	// unlinked inode (releaseOrphan), so an open never gets an inode that is being deleted.
	// Lock order: lifeMu before mu.
	lifeMu sync.Mutex
	mu     sync.Mutex
	// files holds the per-inode data state of every regular file that is open or still has
	// unflushed data. Protected by mu.
	files map[meta.Ino]*openFile
	// dyingBuckets are buckets removed from the namespace whose store bucket still holds objects
	// of files that were unlinked while open; the store bucket goes when the last is released.
	// Protected by mu.
	dyingBuckets map[string]bool
	// reported remembers recently logged damage, for firstReport. Protected by mu.
	reported map[string]time.Time
	// tmpfiles are the files made by open(O_TMPFILE) that have no name yet; linkat(2) may give
	// them one (LinkOrphan). Protected by mu.
	tmpfiles map[meta.Ino]bool
	// orphans are inodes whose last name went while the kernel may still use them (see
	// orphan). Protected by mu.
	orphans map[meta.Ino]*orphan
	// releaser frees forgotten orphans in the background, one at a time; FlushAll waits for it.
	releaser *background[meta.Ino]
	// bgCtx is the context New was given, for background work; the caller cancels it at
	// unmount.
	bgCtx context.Context
	// gc deletes superseded and freed objects in the background.
	gc *background[meta.ObjectRef]

	// stats are the counters behind Stats (atomics: no lock on the hot path).
	stats counters
	// status builds the user.kmipfs.status document (Options.Status); statusMu guards the
	// copy kept for getxattr's size protocol.
	status   StatusSource
	statusMu sync.Mutex
	// statusDoc and statusAt are the document of the last size query and when it was made.
	// Protected by statusMu.
	statusDoc []byte
	statusAt  time.Time
}

// orphan is an inode whose last name is gone (unlink, a rename over it, or O_TMPFILE) but that
// the kernel may still use: through open files, and through an open of a name that the kernel
// resolved just before the name went, whose OPEN request is on its way. Such an open must find
// the file (rename over a file is atomic: the name always names the old or the new file), so the
// inode is released only once it is not open and the kernel has forgotten it (FORGET), which it
// does as soon as the last use of an unlinked inode ends. Orphans left at unmount are released at
// the next mount.
type orphan struct {
	bucket    string
	forgotten bool
}

// New builds the filesystem, releases inodes orphaned by an earlier run (unlinked while open) and
// deletes objects left on the GC queue. ctx is also the context of the filesystem's background
// work (releasing unlinked files the kernel has forgotten); cancelling it at unmount leaves what
// is unfinished to the next mount.
func New(ctx context.Context, opts Options) (*FS, error) {
	if opts.Meta == nil || opts.Store == nil || opts.Keys == nil {
		return nil, errors.New("fs: Meta, Store and Keys are required")
	}
	opts.Config.SetDefaults()
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	f := &FS{
		meta:         opts.Meta,
		store:        opts.Store,
		keys:         opts.Keys,
		keyTemplate:  opts.KeyTemplate,
		cfg:          opts.Config,
		log:          opts.Logger,
		flushBytes:   opts.FlushBytes,
		maxDirty:     int64(opts.Config.MaxDirtyMiB) << 20,
		entryTTL:     opts.EntryTimeout,
		attrTTL:      opts.AttrTimeout,
		files:        make(map[meta.Ino]*openFile),
		dyingBuckets: make(map[string]bool),
		reported:     make(map[string]time.Time),
		tmpfiles:     make(map[meta.Ino]bool),
		orphans:      make(map[meta.Ino]*orphan),
		bgCtx:        ctx,
		status:       opts.Status,
	}
	if f.log == nil {
		f.log = discardLogger
	}
	if f.keyTemplate == "" {
		f.keyTemplate = "$keyid"
	}
	if f.flushBytes <= 0 {
		f.flushBytes = 16 << 20
	}
	if f.maxDirty <= 0 {
		f.maxDirty = defaultMaxDirtyMiB << 20
	}
	if f.entryTTL == 0 {
		f.entryTTL = defaultCacheTTL
	}
	if f.attrTTL == 0 {
		f.attrTTL = defaultCacheTTL
	}
	f.gc = newBackground(func(refs []meta.ObjectRef) { f.deleteObjects(f.bgCtx, refs) })
	f.releaser = newBackground(func(inos []meta.Ino) {
		for _, ino := range inos {
			f.releaseOrphan(f.bgCtx, ino)
		}
	})
	f.root = &node{fsys: f, ino: meta.RootIno}
	if err := f.recover(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// recover finishes what a previous run left undone: orphan inodes and queued object deletions.
func (f *FS) recover(ctx context.Context) error {
	orphans, err := f.meta.Orphans(ctx)
	if err != nil {
		return fmt.Errorf("fs: list orphans: %w", err)
	}
	for _, ino := range orphans {
		if _, err := f.meta.Release(ctx, ino); err != nil {
			return fmt.Errorf("fs: release orphan inode %d: %w", ino, err)
		}
	}
	pending, err := f.meta.PendingGC(ctx)
	if err != nil {
		return fmt.Errorf("fs: list gc queue: %w", err)
	}
	f.gc.enqueue(pending...)
	return nil
}

// deleteBucket removes a bucket from the store after rmdir removed it from meta: first the objects
// still queued for deletion, then the bucket. Files of the bucket that were unlinked while open
// keep objects there until their last close; then releaseOrphan calls this again.
func (f *FS) deleteBucket(ctx context.Context, name string) {
	if pending, err := f.meta.PendingGC(ctx); err == nil {
		var mine []meta.ObjectRef
		for _, r := range pending {
			if r.Bucket == name {
				mine = append(mine, r)
			}
		}
		f.deleteObjects(ctx, mine)
	}
	err := f.store.DeleteBucket(ctx, name)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case err == nil, errors.Is(err, objstore.ErrBucketNotFound):
		delete(f.dyingBuckets, name)
	case errors.Is(err, objstore.ErrBucketNotEmpty) && f.openInBucketLocked(name):
		f.dyingBuckets[name] = true
	default:
		delete(f.dyingBuckets, name)
		f.log.Warn("bucket removed from the filesystem but not from the object store; fsck lists what is left in it",
			"bucket", name, "err", err)
	}
}

func (f *FS) openInBucketLocked(name string) bool {
	for _, of := range f.files {
		if of.bucket == name {
			return true
		}
	}
	for _, o := range f.orphans {
		if o.bucket == name {
			return true
		}
	}
	return false
}

// Root returns the root node for go-fuse.
func (f *FS) Root() gofs.InodeEmbedder { return f.root }

// FlushAll writes every file's dirty data to the store and syncs the metadata. It is called before
// unmount; it returns the first error but tries every file.
func (f *FS) FlushAll(ctx context.Context) error {
	f.releaser.wait(ctx)
	defer f.gc.wait(ctx)
	f.mu.Lock()
	files := make([]*openFile, 0, len(f.files))
	for _, of := range f.files {
		files = append(files, of)
	}
	f.mu.Unlock()
	var first error
	for _, of := range files {
		of.mu.Lock()
		err := of.flushLocked(ctx)
		of.mu.Unlock()
		if err != nil && first == nil {
			first = err
		}
	}
	if err := f.syncAll(ctx); err != nil && first == nil {
		first = err
	}
	return first
}

// syncAll makes everything stored and committed so far durable: the store's objects and the
// metadata database, synced concurrently.
func (f *FS) syncAll(ctx context.Context) error {
	metaErr := make(chan error, 1)
	go func() { metaErr <- f.meta.Sync() }()
	storeErr := f.syncStore(ctx)
	return errors.Join(storeErr, <-metaErr)
}

// syncStore makes every object stored so far durable, on stores whose Put alone is not.
func (f *FS) syncStore(ctx context.Context) error {
	if s, ok := f.store.(objstore.Syncer); ok {
		return s.Sync(ctx)
	}
	return nil
}

// MountOptions are the FUSE-level settings of a mount.
type MountOptions struct {
	// Debug logs every FUSE request and reply.
	Debug bool
	// FsName is shown as the source in /proc/mounts.
	FsName string
	// KernelOptions are passed to the kernel's mount as they are ("ro", "noatime", ...): options
	// the kernel enforces itself, so kmipfs needs no code of its own for them.
	KernelOptions []string
}

// Mount mounts f at mountpoint and returns once the kernel has acknowledged the mount.
func Mount(mountpoint string, f *FS, mo MountOptions) (*fuse.Server, error) {
	entry, attr := f.entryTTL, f.attrTTL
	neg := f.entryTTL
	fsName := mo.FsName
	if fsName == "" {
		fsName = "kmipfs"
	}
	opts := &gofs.Options{
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		Logger:          log.New(slogWriter{f.log}, "", 0),
		MountOptions: fuse.MountOptions{
			AllowOther:   f.cfg.AllowOther,
			FsName:       fsName,
			Name:         "kmipfs",
			MaxWrite:     1 << 20,
			MaxReadAhead: 1 << 20,
			Debug:        mo.Debug,
			// flock(2) and POSIX record locks are left to the kernel's local lock manager,
			// which is exact for kmipfs: one kmipfs process serves a metadata database, so
			// every process using the files goes through this one mount.
			EnableLocks: false,
			// The root of kmipfs is Unix-only; xattrs are a core feature.
			DisableXAttrs: false,
		},
	}
	if *f.cfg.DefaultPermissions {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "default_permissions")
	}
	if os.Geteuid() == 0 {
		// As root the mount(2) call works without the fusermount3 helper. mount(2) takes ro,
		// noatime and the like as flag bits, not as strings (fusermount3 translates them itself),
		// and there is no falling back to fusermount3 after that: it would get no ro.
		flags, rest := mountFlags(mo.KernelOptions)
		opts.MountOptions.Options = append(opts.MountOptions.Options, rest...)
		opts.MountOptions.DirectMountFlags = flags
		opts.MountOptions.DirectMountStrict = true
	} else {
		opts.MountOptions.Options = append(opts.MountOptions.Options, mo.KernelOptions...)
	}
	// What gofs.Mount does, with the node API's RawFileSystem wrapped to count every request
	// (see timedFS).
	raw := &timedFS{RawFileSystem: gofs.NewNodeFS(f.root, opts), t: &f.stats.ops}
	srv, err := fuse.NewServer(raw, mountpoint, &opts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("fs: mount %s: %w", mountpoint, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		// As in gofs.Mount: the serve loop ends by itself when the mount did not come up.
		return nil, fmt.Errorf("fs: mount %s: %w", mountpoint, err)
	}
	return srv, nil
}

// mountFlagBits are the mount options that mount(2) takes as flag bits: set (true) or cleared.
// nosuid, nodev and noexec are left to go-fuse, which turns them into bits itself.
var mountFlagBits = map[string]struct {
	bit uintptr
	set bool
}{
	"ro":          {unix.MS_RDONLY, true},
	"rw":          {unix.MS_RDONLY, false},
	"sync":        {unix.MS_SYNCHRONOUS, true},
	"async":       {unix.MS_SYNCHRONOUS, false},
	"dirsync":     {unix.MS_DIRSYNC, true},
	"noatime":     {unix.MS_NOATIME, true},
	"atime":       {unix.MS_NOATIME, false},
	"nodiratime":  {unix.MS_NODIRATIME, true},
	"diratime":    {unix.MS_NODIRATIME, false},
	"relatime":    {unix.MS_RELATIME, true},
	"norelatime":  {unix.MS_RELATIME, false},
	"strictatime": {unix.MS_STRICTATIME, true},
	"lazytime":    {unix.MS_LAZYTIME, true},
	"nolazytime":  {unix.MS_LAZYTIME, false},
}

// mountFlags splits kernel mount options into mount(2) flag bits, starting from fusermount3's
// nosuid,nodev, and the options that stay strings.
func mountFlags(options []string) (uintptr, []string) {
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	var rest []string
	for _, o := range options {
		b, ok := mountFlagBits[o]
		switch {
		case !ok:
			rest = append(rest, o)
		case b.set:
			flags |= b.bit
		default:
			flags &^= b.bit
		}
	}
	return flags, rest
}

// slogWriter adapts go-fuse's *log.Logger output to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(strings.TrimRight(string(p), "\n"), "component", "go-fuse")
	return len(p), nil
}

// now returns the current time in Unix nanoseconds, the unit of meta timestamps.
func now() int64 { return time.Now().UnixNano() }

// caller returns the uid and gid of the process that made the request.
func caller(ctx context.Context) (uid, gid uint32) {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return uint32(os.Getuid()), uint32(os.Getgid())
}
