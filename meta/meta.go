package meta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Ino is an inode number. Numbers are never reused: they come from a Badger
// sequence, so a stale kernel handle can never reach a different file.
type Ino uint64

// RootIno is the mount root. Its children are the buckets, which are ordinary
// directory entries.
const RootIno Ino = 1

// BlockSize is the file block size that extent arithmetic is done in. It must
// match the plaintext block size of the data path.
const BlockSize = 4096

// MaxNameLen is the longest directory entry name, in bytes (NAME_MAX).
const MaxNameLen = 255

// MaxXattrNameLen is the longest extended attribute name, in bytes
// (XATTR_NAME_MAX).
const MaxXattrNameLen = 255

// MaxXattrSize is the largest extended attribute value, in bytes
// (XATTR_SIZE_MAX).
const MaxXattrSize = 64 << 10

// MaxBlocks bounds block numbers and object slots: a file of MaxBlocks blocks
// of BlockSize bytes is 2^64 bytes, so no larger number can be meaningful and
// extent arithmetic on smaller ones cannot overflow.
const MaxBlocks = 1 << 52

// Sentinel errors. Test for them with errors.Is: the methods wrap them with the
// operation and the object.
var (
	ErrNotFound = errors.New("meta: not found")
	ErrExist    = errors.New("meta: already exists")
	ErrNotEmpty = errors.New("meta: directory not empty")
	ErrNotDir   = errors.New("meta: not a directory")
	ErrIsDir    = errors.New("meta: is a directory")
	ErrInvalid  = errors.New("meta: invalid argument")
	// ErrFormat reports bytes in the database that do not decode, or a schema
	// version this code does not know. The database is trusted, so this means
	// corruption or a newer kmipfs.
	ErrFormat = errors.New("meta: bad record format")
	// ErrCrossBucket is returned by Rename and Link when the source and the
	// destination are in different buckets (fs maps it to EXDEV, and tools
	// then fall back to copy and delete). Renaming a bucket, or moving an
	// entry into or out of the mount root, is a cross-bucket move too: the
	// bucket name is part of where every object of the bucket lives.
	ErrCrossBucket = errors.New("meta: cross-bucket rename or link")
	// ErrNameTooLong is returned for a name longer than MaxNameLen (or an
	// xattr name longer than MaxXattrNameLen). It also matches ErrInvalid, so
	// callers that do not care about ENAMETOOLONG need not test for it.
	ErrNameTooLong error = nameTooLongError{}
	// ErrTooBig is returned when one change does not fit in a Badger
	// transaction (about 2.4 MiB of writes, some 20,000 extents): fs splits
	// such a commit, for example a flush of very many scattered blocks, into
	// several.
	ErrTooBig = errors.New("meta: change too big for one transaction")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("meta: database closed")
)

// nameTooLongError is ErrNameTooLong: a distinct sentinel that is also
// ErrInvalid under errors.Is.
type nameTooLongError struct{}

func (nameTooLongError) Error() string        { return "meta: name too long" }
func (nameTooLongError) Is(target error) bool { return target == ErrInvalid }

// Inode is one file, directory, symlink or special file.
type Inode struct {
	Ino Ino
	// Parent is, for a directory only, the directory that contains it. Create
	// and Rename keep it up to date; it is 0 for every other type.
	Parent Ino
	// Mode is st_mode including the type bits (syscall.S_IFREG etc.).
	Mode     uint32
	Uid, Gid uint32
	Nlink    uint32
	Size     uint64
	Rdev     uint32
	// Atime, Mtime and Ctime are Unix nanoseconds.
	Atime, Mtime, Ctime int64
	// Bucket names the bucket the inode lives in: "" for RootIno, its own
	// name for a bucket directory.
	Bucket string
	// Target is a symlink's target.
	Target string

	// The fields below are used by regular files only.

	// FileID is the random id used in object names and in the crypto
	// associated data.
	FileID [16]byte
	// KeyID is the user-visible key id the file is encrypted under.
	KeyID string
	// KeyName is the KMIP object name KeyID resolved to (template applied).
	KeyName string
	// WrappedKey is the data key wrapped under the KMIP secret. meta treats it
	// as opaque bytes.
	WrappedKey []byte
	// Gen is the highest write generation handed out by NextGen.
	Gen uint64
}

// IsDir reports whether in is a directory.
func (in *Inode) IsDir() bool { return in.Mode&syscall.S_IFMT == syscall.S_IFDIR }

// IsRegular reports whether in is a regular file.
func (in *Inode) IsRegular() bool { return in.Mode&syscall.S_IFMT == syscall.S_IFREG }

// IsSymlink reports whether in is a symbolic link.
func (in *Inode) IsSymlink() bool { return in.Mode&syscall.S_IFMT == syscall.S_IFLNK }

// clone returns a deep copy, so that callers never share a WrappedKey slice
// with a cached record.
func (in *Inode) clone() *Inode {
	c := *in
	if in.WrappedKey != nil {
		c.WrappedKey = append([]byte(nil), in.WrappedKey...)
	}
	return &c
}

// Dirent is one directory entry. Mode carries only the file type bits
// (syscall.S_IFMT), which is what readdir reports; permission bits live in the
// inode and would go stale here after a chmod.
type Dirent struct {
	Name string
	Ino  Ino
	Mode uint32
}

// Extent says that file blocks [Block, Block+Count) are the object slots
// [Slot, Slot+Count) of Object, sealed at write generation Gen.
type Extent struct {
	Block, Count uint64
	Object       string
	Slot         uint64
	Gen          uint64
}

// ObjectRef names one object of the object store.
type ObjectRef struct {
	Bucket, Key string
}

// Options configures Open.
type Options struct {
	// InMemory keeps everything in memory and writes no files (tests).
	InMemory bool
	// SyncWrites makes every commit fsync (Badger SyncWrites). It is off by
	// default because fs calls Sync for fsync, as a local filesystem would.
	SyncWrites bool
	// EncryptionKey turns on Badger's at-rest encryption (16, 24 or 32
	// bytes); nil leaves it off. The key is never logged.
	EncryptionKey []byte
	// Logger receives Badger's own log lines: Errorf and Warningf at Warn,
	// Infof and Debugf at Debug. nil discards them.
	Logger *slog.Logger
}

// DB is the metadata database. Its methods are safe for concurrent use; each
// change is one Badger transaction, retried on conflict.
type DB struct {
	bdb *badger.DB
	seq *badger.Sequence
	log *slog.Logger

	// session numbers the counter delta keys written by this open of the
	// database, and deltaSeq numbers them within the session (see doc.go,
	// "Counters").
	session  uint64
	deltaSeq atomic.Uint64
	// pendingDeltas counts delta keys written since the last fold; when it
	// passes foldThreshold a background fold starts.
	pendingDeltas atomic.Int64
	folding       atomic.Bool
	foldMu        sync.Mutex // serializes folds
	wg            sync.WaitGroup

	// cache serves Get, Lookup and GetXattr from memory; see readCache.
	cache *readCache

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Badger sizing. Badger's defaults (64 MiB memtables x5, a 256 MiB block
// cache, 1 GiB value log files) are made for large servers; metadata for one
// mount is small, so these keep the whole database near 64 MiB of memory.
const (
	memTableSize     = 16 << 20 // maxBatchSize is 15% of this: about 2.4 MiB per transaction
	numMemtables     = 2
	blockCacheSize   = 16 << 20
	indexCacheSize   = 8 << 20
	valueLogFileSize = 64 << 20
	// seqBandwidth is how many inode numbers one sequence lease covers; a
	// crash wastes at most that many numbers.
	seqBandwidth = 256
)

// Open opens (creating if needed) the database in dir, or an in-memory one
// when opts.InMemory is set (dir is then ignored). A new database gets the
// root inode (directory, mode 0755, uid and gid 0, times now) and the schema format
// version; an existing one with another format version is refused with
// ErrFormat, so an older kmipfs never misreads a newer schema.
func Open(dir string, opts Options) (*DB, error) {
	switch len(opts.EncryptionKey) {
	case 0, 16, 24, 32:
	default:
		return nil, fmt.Errorf("meta: open %q: encryption key must be 16, 24 or 32 bytes, not %d: %w",
			dir, len(opts.EncryptionKey), ErrInvalid)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	bo := badgerOptions(dir, opts.InMemory, logger)
	bo = bo.WithSyncWrites(opts.SyncWrites)
	if len(opts.EncryptionKey) > 0 {
		bo = bo.WithEncryptionKey(opts.EncryptionKey)
	}
	bdb, err := badger.Open(bo)
	if err != nil {
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
			return nil, fmt.Errorf("meta: open %q: wrong encryption key: %w", dir, ErrInvalid)
		}
		return nil, fmt.Errorf("meta: open %q: %w", dir, err)
	}
	db := &DB{bdb: bdb, log: logger, cache: newReadCache(defaultCacheEntries)}
	if err := db.init(); err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("meta: open %q: %w", dir, err)
	}
	seq, err := bdb.GetSequence(seqKey, seqBandwidth)
	if err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("meta: open %q: inode sequence: %w", dir, err)
	}
	db.seq = seq
	if err := db.fold(); err != nil {
		_ = seq.Release()
		_ = bdb.Close()
		return nil, fmt.Errorf("meta: open %q: %w", dir, err)
	}
	return db, nil
}

// badgerOptions is Badger's configuration for a metadata database: sized
// for about 64 MiB of memory, logging to logger.
func badgerOptions(dir string, inMemory bool, logger *slog.Logger) badger.Options {
	bo := badger.DefaultOptions(dir)
	if inMemory {
		bo = badger.DefaultOptions("").WithInMemory(true)
	}
	return bo.WithLogger(badgerLogger{logger}).
		WithMetricsEnabled(false).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithNumCompactors(2).
		WithBlockCacheSize(blockCacheSize).
		WithIndexCacheSize(indexCacheSize).
		WithValueLogFileSize(valueLogFileSize).
		WithNumGoroutines(2)
}

// init checks the format version, creates the root inode and the counters on
// first open, and takes a session number for counter deltas.
func (db *DB) init() error {
	return db.bdb.Update(func(t *badger.Txn) error {
		item, err := t.Get(formatKey)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			if err := requireEmpty(t); err != nil {
				return err
			}
			if err := t.Set(formatKey, encodeFormat(formatVersion)); err != nil {
				return err
			}
			now := time.Now().UnixNano()
			root := &Inode{Ino: RootIno, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Atime: now, Mtime: now, Ctime: now}
			if err := t.Set(inodeKey(RootIno), encodeInode(root)); err != nil {
				return err
			}
			if err := t.Set(counterBaseKey, encodeCounters(counters{inodes: 1})); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			ver, err := decodeFormat(v)
			if err != nil {
				return err
			}
			if ver != formatVersion {
				return fmt.Errorf("schema format version %d, this build knows %d: %w", ver, formatVersion, ErrFormat)
			}
		}
		var s uint64
		item, err = t.Get(sessionKey)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if s, err = decodeUint(v); err != nil {
				return err
			}
		}
		db.session = s + 1
		return t.Set(sessionKey, encodeUint(db.session))
	})
}

// requireEmpty refuses to initialize a database that has keys but no format
// version: that is not a kmipfs metadata database (or a damaged one).
func requireEmpty(t *badger.Txn) error {
	it := t.NewIterator(badger.IteratorOptions{})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()
		if len(k) > 0 && k[0] == prefixSequence {
			continue // a sequence lease may precede the first init in theory
		}
		return fmt.Errorf("database has data but no format version: %w", ErrFormat)
	}
	return nil
}

// Close folds the counter deltas, releases the unused part of the inode
// number lease and closes Badger. Calling it again returns the first result;
// any other method called afterwards returns ErrClosed. Calls still running
// when Close starts must have returned first (fs closes at unmount, when no
// request is left).
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.closed.Store(true)
		db.wg.Wait()
		var errs []error
		if err := db.fold(); err != nil {
			errs = append(errs, err)
		}
		if err := db.seq.Release(); err != nil {
			errs = append(errs, fmt.Errorf("release inode sequence: %w", err))
		}
		if err := db.bdb.Close(); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			db.closeErr = fmt.Errorf("meta: close: %w", err)
		}
	})
	return db.closeErr
}

// Sync makes every transaction committed so far durable. fs calls it for
// fsync instead of paying for SyncWrites on every change.
func (db *DB) Sync() error {
	if db.closed.Load() {
		return fmt.Errorf("meta: sync: %w", ErrClosed)
	}
	if err := db.bdb.Sync(); err != nil {
		return fmt.Errorf("meta: sync: %w", err)
	}
	return nil
}

// badgerLogger adapts a slog.Logger to badger.Logger. Badger's informational
// lines (table opens, compactions) go to Debug so they are silent by default;
// its warnings and errors concern background work that no call returns, so
// they go to Warn where an operator sees them.
type badgerLogger struct{ l *slog.Logger }

var _ badger.Logger = badgerLogger{}

func (b badgerLogger) logf(level slog.Level, format string, args ...any) {
	ctx := context.TODO() // Badger's logger interface carries no context.
	if !b.l.Enabled(ctx, level) {
		return
	}
	b.l.Log(ctx, level, "badger: "+trimNewline(fmt.Sprintf(format, args...)))
}

func (b badgerLogger) Errorf(format string, args ...any) { b.logf(slog.LevelWarn, format, args...) }
func (b badgerLogger) Warningf(format string, args ...any) {
	b.logf(slog.LevelWarn, format, args...)
}
func (b badgerLogger) Infof(format string, args ...any)  { b.logf(slog.LevelDebug, format, args...) }
func (b badgerLogger) Debugf(format string, args ...any) { b.logf(slog.LevelDebug, format, args...) }

func trimNewline(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}
