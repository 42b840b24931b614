package meta

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Retry policy for conflicting transactions, as juicefs pkg/meta/tkv.go
// does: many concurrent creates in one directory all write the parent inode,
// so each round one of them wins and the others retry after a short,
// jittered, growing pause.
const (
	maxTxnAttempts = 50
	minBackoff     = 50 * time.Microsecond
	maxBackoff     = 20 * time.Millisecond
)

// tx is one read-write transaction. It caches the inodes it reads so that an
// operation touching the same inode twice (a rename within one directory)
// sees one copy, and it maintains the Stats counters from the inodes it
// creates, changes and deletes, so no operation can forget them.
type tx struct {
	ctx context.Context
	db  *DB
	t   *badger.Txn

	inodes map[Ino]*txInode
	// order lists the cached inodes in load order, so writes are
	// deterministic.
	order []Ino
	// extra is a change to the counters that does not come from an inode.
	extra counters
}

type txInode struct {
	in *Inode // nil once deleted
	// origSize is the regular-file size when loaded (0 for a new inode or a
	// non-file); existed is whether the inode was in the database.
	origSize uint64
	existed  bool
	dirty    bool
}

// update runs fn in a read-write transaction, retrying on conflict. fn may
// run several times and must not have effects outside tx before it returns.
func (db *DB) update(ctx context.Context, fn func(*tx) error) error {
	if db.closed.Load() {
		return ErrClosed
	}
	backoff := minBackoff
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := db.attempt(ctx, fn)
		if !errors.Is(err, badger.ErrConflict) || attempt >= maxTxnAttempts {
			return err
		}
		d := backoff/2 + rand.N(backoff)
		if backoff < maxBackoff {
			backoff *= 2
		}
		timer := time.NewTimer(d)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

func (db *DB) attempt(ctx context.Context, fn func(*tx) error) error {
	t := db.bdb.NewTransaction(true)
	defer t.Discard()
	x := &tx{ctx: ctx, db: db, t: t, inodes: make(map[Ino]*txInode)}
	if err := fn(x); err != nil {
		if errors.Is(err, badger.ErrTxnTooBig) {
			return fmt.Errorf("%w (%v)", ErrTooBig, err)
		}
		return err
	}
	wroteDelta, err := x.flush()
	if err == nil {
		err = t.Commit()
	}
	if errors.Is(err, badger.ErrTxnTooBig) {
		return fmt.Errorf("%w (%v)", ErrTooBig, err)
	}
	if err != nil {
		return err
	}
	db.cache.invalidate(x.order)
	if wroteDelta {
		db.noteDelta()
	}
	return nil
}

// ready reports why the database cannot serve a request (a done ctx, a closed database), as view
// would, for answers served from the cache.
func (db *DB) ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if db.closed.Load() {
		return ErrClosed
	}
	return nil
}

// view runs fn in a read-only transaction.
func (db *DB) view(ctx context.Context, fn func(*badger.Txn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if db.closed.Load() {
		return ErrClosed
	}
	return db.bdb.View(fn)
}

// flush writes the dirty inodes and a counter delta for what changed.
func (x *tx) flush() (wroteDelta bool, err error) {
	c := x.extra
	for _, ino := range x.order {
		ti := x.inodes[ino]
		if !ti.dirty {
			continue
		}
		switch {
		case ti.in == nil:
			if ti.existed {
				if err := x.t.Delete(inodeKey(ino)); err != nil {
					return false, err
				}
				c.inodes--
				c.bytes -= int64(ti.origSize)
			}
		default:
			if err := x.t.Set(inodeKey(ino), encodeInode(ti.in)); err != nil {
				return false, err
			}
			if !ti.existed {
				c.inodes++
			}
			var size uint64
			if ti.in.IsRegular() {
				size = ti.in.Size
			}
			c.bytes += int64(size) - int64(ti.origSize)
		}
	}
	if c.isZero() {
		return false, nil
	}
	// A delta key is written blind (never read by other operations), so
	// transactions that change the counters do not conflict on them.
	k := deltaKey(x.db.session, x.db.deltaSeq.Add(1))
	if err := x.t.Set(k, encodeCounters(c)); err != nil {
		return false, err
	}
	return true, nil
}

// get returns the inode, reading it once per transaction. The result is
// shared with the transaction: change it and call put.
func (x *tx) get(ino Ino) (*Inode, error) {
	if ti, ok := x.inodes[ino]; ok {
		if ti.in == nil {
			return nil, fmt.Errorf("inode %d: %w", ino, ErrNotFound)
		}
		return ti.in, nil
	}
	in, err := getInode(x.t, ino)
	if err != nil {
		return nil, err
	}
	ti := &txInode{in: in, existed: true}
	if in.IsRegular() {
		ti.origSize = in.Size
	}
	x.inodes[ino] = ti
	x.order = append(x.order, ino)
	return in, nil
}

// getDir is get for an inode that must be a directory.
func (x *tx) getDir(ino Ino) (*Inode, error) {
	in, err := x.get(ino)
	if err != nil {
		return nil, err
	}
	if !in.IsDir() {
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotDir)
	}
	return in, nil
}

// put marks a cached inode (from get or create) to be written at commit.
func (x *tx) put(in *Inode) {
	x.inodes[in.Ino].dirty = true
}

// create adds a new inode to the transaction.
func (x *tx) create(in *Inode) {
	x.inodes[in.Ino] = &txInode{in: in, dirty: true}
	x.order = append(x.order, in.Ino)
}

// remove deletes a cached inode together with its xattrs and orphan mark.
// Extents must already be gone (Release and Rmdir ensure it).
func (x *tx) remove(in *Inode) error {
	if err := x.deletePrefix(xattrPrefix(in.Ino)); err != nil {
		return err
	}
	if err := x.t.Delete(orphanKey(in.Ino)); err != nil {
		return err
	}
	ti := x.inodes[in.Ino]
	ti.in = nil
	ti.dirty = true
	return nil
}

// deletePrefix deletes every key with the prefix.
func (x *tx) deletePrefix(prefix []byte) error {
	keys, err := keysWithPrefix(x.t, prefix, 0)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := x.t.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// keysWithPrefix returns copies of the keys with the prefix, at most limit
// of them (0: all).
func keysWithPrefix(t *badger.Txn, prefix []byte, limit int) ([][]byte, error) {
	it := t.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
		if limit > 0 && len(keys) >= limit {
			break
		}
	}
	return keys, nil
}

// hasPrefix reports whether any key has the prefix.
func hasPrefix(t *badger.Txn, prefix []byte) bool {
	it := t.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	it.Rewind()
	return it.Valid()
}

// getInode reads and decodes one inode.
func getInode(t *badger.Txn, ino Ino) (*Inode, error) {
	item, err := t.Get(inodeKey(ino))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var in *Inode
	err = item.Value(func(v []byte) error {
		var err error
		in, err = decodeInode(v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("inode %d: %w", ino, err)
	}
	if in.Ino != ino {
		return nil, fmt.Errorf("inode %d: record says %d: %w", ino, in.Ino, ErrFormat)
	}
	return in, nil
}

// getDirent looks up one directory entry.
func getDirent(t *badger.Txn, parent Ino, name string) (Ino, uint32, error) {
	item, err := t.Get(direntKey(parent, name))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, 0, fmt.Errorf("entry %q in %d: %w", name, parent, ErrNotFound)
	}
	if err != nil {
		return 0, 0, err
	}
	var ino Ino
	var mode uint32
	err = item.Value(func(v []byte) error {
		var err error
		ino, mode, err = decodeDirent(v)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("entry %q in %d: %w", name, parent, err)
	}
	return ino, mode, nil
}

// exists reports whether key is present.
func exists(t *badger.Txn, key []byte) (bool, error) {
	_, err := t.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// sortRefs sorts object references for deterministic results.
func sortRefs(refs []ObjectRef) {
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].Bucket != refs[j].Bucket {
			return refs[i].Bucket < refs[j].Bucket
		}
		return refs[i].Key < refs[j].Key
	})
}
