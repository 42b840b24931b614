package meta

import (
	"sync"
)

// readCache keeps recently read inodes, directory entries and extended attributes in memory, so
// that the read-only lookups the kernel makes on every path component, stat, open and write
// (LOOKUP, GETATTR, GETXATTR "security.capability") cost a map lookup instead of a Badger read,
// even after the kernel dropped its own caches.
//
// Correctness rests on two rules. Every change goes through update, and after a transaction
// commits, update drops every cached record of every inode the transaction read or wrote (x.order):
// a change to an inode, to one of its xattrs, or to an entry in it (as a parent, every namespace
// change reads the directory) always reads that inode first. And a read fills the cache only if
// no invalidation happened since just before its Badger snapshot was taken (the epoch), so a
// reader that saw the old value cannot put it back after the writer dropped it.
// Read-write transactions never use the cache: Badger's conflict detection must see their reads.
type readCache struct {
	mu     sync.Mutex
	epoch  uint64
	max    int
	n      int
	inodes map[Ino]Inode
	// dirents maps a directory to its cached entries; a missing name is cached as 0.
	dirents map[Ino]map[string]Ino
	// xattrs maps an inode to its cached attributes; a missing one is cached as nil.
	xattrs map[Ino]map[string][]byte
	// hits and misses count the lookups (inode, entry, xattr) answered from the cache and those
	// that went to Badger, for CacheStats. Plain counters: every lookup already holds mu.
	hits, misses uint64
}

// CacheStats describes the read cache of a DB: how many records it holds and how many lookups
// it answered (hits) or passed on to Badger (misses) since Open. Read-write transactions never use
// the cache and are not counted.
type CacheStats struct {
	Entries int
	Hits    uint64
	Misses  uint64
}

// CacheStats returns the read cache's counters, for metrics and kmipfs status.
func (db *DB) CacheStats() CacheStats {
	c := db.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Entries: c.n, Hits: c.hits, Misses: c.misses}
}

// count records the outcome of one lookup. The caller holds mu.
func (c *readCache) count(found bool) {
	if found {
		c.hits++
	} else {
		c.misses++
	}
}

// defaultCacheEntries bounds the cache at roughly 40 MiB with typical records.
const defaultCacheEntries = 150_000

func newReadCache(max int) *readCache {
	return &readCache{max: max, inodes: make(map[Ino]Inode), dirents: make(map[Ino]map[string]Ino),
		xattrs: make(map[Ino]map[string][]byte)}
}

// begin returns the epoch to pass to the fill methods; call it before the Badger read.
func (c *readCache) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

func (c *readCache) inode(ino Ino) (*Inode, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	in, ok := c.inodes[ino]
	c.count(ok)
	if !ok {
		return nil, false
	}
	return &in, true // a copy: callers may change the fields they get
}

func (c *readCache) fillInode(epoch uint64, in *Inode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		return
	}
	if _, ok := c.inodes[in.Ino]; !ok {
		c.grow()
	}
	c.inodes[in.Ino] = *in
}

// dirent returns the cached entry: found reports whether the cache knows, ino is 0 for "no such
// entry".
func (c *readCache) dirent(parent Ino, name string) (ino Ino, found bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ino, found = c.dirents[parent][name]
	c.count(found)
	return ino, found
}

func (c *readCache) fillDirent(epoch uint64, parent Ino, name string, ino Ino) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		return
	}
	m := c.dirents[parent]
	if m == nil {
		m = make(map[string]Ino)
		c.dirents[parent] = m
	}
	if _, ok := m[name]; !ok {
		c.grow()
	}
	m[name] = ino
}

// xattr returns a copy of the cached value; found reports whether the cache knows, present
// whether the attribute exists.
func (c *readCache) xattr(ino Ino, name string) (val []byte, present, found bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, found := c.xattrs[ino][name]
	c.count(found)
	if !found || v == nil {
		return nil, false, found
	}
	return append([]byte{}, v...), true, true
}

// fillXattr caches a value (nil: the attribute does not exist).
func (c *readCache) fillXattr(epoch uint64, ino Ino, name string, val []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		return
	}
	m := c.xattrs[ino]
	if m == nil {
		m = make(map[string][]byte)
		c.xattrs[ino] = m
	}
	if _, ok := m[name]; !ok {
		c.grow()
	}
	if val != nil {
		val = append([]byte{}, val...)
	}
	m[name] = val
}

// grow makes room for one more record, dropping about a tenth of the cache (in map order, which
// is random) when it is full. The caller holds mu.
func (c *readCache) grow() {
	if c.n < c.max {
		c.n++
		return
	}
	drop := c.max/10 + 1
	for ino := range c.inodes {
		if drop <= 0 {
			break
		}
		delete(c.inodes, ino)
		c.n--
		drop--
	}
	for ino, m := range c.dirents {
		if drop <= 0 {
			break
		}
		delete(c.dirents, ino)
		c.n -= len(m)
		drop -= len(m)
	}
	for ino, m := range c.xattrs {
		if drop <= 0 {
			break
		}
		delete(c.xattrs, ino)
		c.n -= len(m)
		drop -= len(m)
	}
	c.n++
}

// invalidate drops everything cached about the inodes: the records, their entries as a directory
// and their xattrs. It runs after every committed change.
func (c *readCache) invalidate(inos []Ino) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for _, ino := range inos {
		if _, ok := c.inodes[ino]; ok {
			delete(c.inodes, ino)
			c.n--
		}
		c.n -= len(c.dirents[ino]) + len(c.xattrs[ino])
		delete(c.dirents, ino)
		delete(c.xattrs, ino)
	}
}
