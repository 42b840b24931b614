package meta

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"syscall"

	badger "github.com/dgraph-io/badger/v4"
)

// maxProblems bounds the report of Check; a badly damaged database would
// otherwise produce one line per key.
const maxProblems = 1000

// Check verifies the whole database against its invariants and returns one
// line per problem found (nil when consistent): every record decodes; every
// entry names an existing inode of its type in an existing directory; Nlink
// counts the names of a file and the subdirectories of a directory; Parent
// and Bucket follow the tree; orphans are exactly the inodes with Nlink 0;
// extents are non-overlapping and belong to regular files; the refcounts are
// the live-block counts of the extents; no queued object is still used; and
// the Stats counters match the inodes. It is for fsck and tests: it reads
// everything in one snapshot and holds the summary in memory, O(n) in the
// number of records. The error is for failures to read, not for problems.
func (db *DB) Check(ctx context.Context) ([]string, error) {
	c := newChecker()
	err := db.view(ctx, func(t *badger.Txn) error {
		it := t.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			k := item.KeyCopy(nil)
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			c.record(k, v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("meta: check: %w", err)
	}
	c.analyze()
	return c.problems, nil
}

type checkDirent struct {
	parent Ino
	name   string
	ino    Ino
	mode   uint32
}

type checker struct {
	problems []string

	formatSeen bool
	inodes     map[Ino]*Inode
	dirents    []checkDirent
	xattrs     map[Ino]int
	extents    map[Ino][]Extent
	refs       map[ObjectRef]uint64
	gc         map[ObjectRef]bool
	orphans    map[Ino]bool
	counters   counters
	baseSeen   bool
}

func (c *checker) problem(format string, args ...any) {
	if len(c.problems) < maxProblems {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	} else if len(c.problems) == maxProblems {
		c.problems = append(c.problems, "too many problems; stopped listing")
	}
}

func newChecker() *checker {
	return &checker{
		inodes:  make(map[Ino]*Inode),
		xattrs:  make(map[Ino]int),
		extents: make(map[Ino][]Extent),
		refs:    make(map[ObjectRef]uint64),
		gc:      make(map[ObjectRef]bool),
		orphans: make(map[Ino]bool),
	}
}

func (c *checker) record(k, v []byte) {
	if len(k) == 0 {
		c.problem("empty key")
		return
	}
	switch k[0] {
	case prefixFormat:
		ver, err := decodeFormat(v)
		switch {
		case len(k) != 1:
			c.problem("format key %x", k)
		case err != nil:
			c.problem("format record: %v", err)
		case ver != formatVersion:
			c.problem("format version %d", ver)
		}
		c.formatSeen = true
	case prefixInode:
		ino, err := decodeInoKey(prefixInode, k)
		if err != nil {
			c.problem("%v", err)
			return
		}
		in, err := decodeInode(v)
		if err != nil {
			c.problem("inode %d: %v", ino, err)
			return
		}
		if in.Ino != ino {
			c.problem("inode %d: record says %d", ino, in.Ino)
			return
		}
		c.inodes[ino] = in
	case prefixDirent:
		if len(k) < 10 {
			c.problem("dirent key %x", k)
			return
		}
		parent := Ino(binary.BigEndian.Uint64(k[1:9]))
		name := string(k[9:])
		ino, mode, err := decodeDirent(v)
		if err != nil {
			c.problem("entry %q in %d: %v", name, parent, err)
			return
		}
		if validName(name) != nil {
			c.problem("entry %q in %d: invalid name", name, parent)
		}
		c.dirents = append(c.dirents, checkDirent{parent, name, ino, mode})
	case prefixXattr:
		if len(k) < 10 {
			c.problem("xattr key %x", k)
			return
		}
		ino := Ino(binary.BigEndian.Uint64(k[1:9]))
		if len(v) > MaxXattrSize {
			c.problem("xattr %q on %d: %d bytes", k[9:], ino, len(v))
		}
		c.xattrs[ino]++
	case prefixExtent:
		ino, _, err := decodeExtentKey(k)
		if err != nil {
			c.problem("%v", err)
			return
		}
		e, err := decodeExtent(ino, k, v)
		if err != nil {
			c.problem("extent of %d: %v", ino, err)
			return
		}
		c.extents[ino] = append(c.extents[ino], e)
	case prefixRefcount:
		ref, err := decodeObjectKey(prefixRefcount, k)
		if err != nil {
			c.problem("%v", err)
			return
		}
		n, err := decodeRefcount(v)
		if err != nil {
			c.problem("refcount of %v: %v", ref, err)
			return
		}
		c.refs[ref] = n
	case prefixGC:
		ref, err := decodeObjectKey(prefixGC, k)
		if err != nil {
			c.problem("%v", err)
			return
		}
		c.gc[ref] = true
	case prefixOrphan:
		ino, err := decodeInoKey(prefixOrphan, k)
		if err != nil {
			c.problem("%v", err)
			return
		}
		c.orphans[ino] = true
	case prefixCounter:
		switch {
		case len(k) == 2 && k[1] == counterBase:
			d, err := decodeCounters(v)
			if err != nil {
				c.problem("counter base: %v", err)
				return
			}
			c.counters.inodes += d.inodes
			c.counters.bytes += d.bytes
			c.baseSeen = true
		case len(k) == len(deltaPrefix)+16 && k[1] == counterDelta:
			d, err := decodeCounters(v)
			if err != nil {
				c.problem("counter delta %x: %v", k, err)
				return
			}
			c.counters.inodes += d.inodes
			c.counters.bytes += d.bytes
		case len(k) == 2 && k[1] == counterSession:
			if _, err := decodeUint(v); err != nil {
				c.problem("session: %v", err)
			}
		default:
			c.problem("counter key %x", k)
		}
	case prefixSequence:
		if string(k) != string(seqKey) {
			c.problem("sequence key %x", k)
		}
	default:
		c.problem("unknown key %x", k)
	}
}

func (c *checker) analyze() {
	if !c.formatSeen {
		c.problem("no format version record")
	}
	if !c.baseSeen {
		c.problem("no counter base")
	}
	root := c.inodes[RootIno]
	switch {
	case root == nil:
		c.problem("no root inode")
	case !root.IsDir() || root.Parent != 0 || root.Bucket != "":
		c.problem("root inode: mode %#o parent %d bucket %q", root.Mode, root.Parent, root.Bucket)
	}

	links := make(map[Ino]uint32)
	subdirs := make(map[Ino]uint32)
	for _, d := range c.dirents {
		p := c.inodes[d.parent]
		in := c.inodes[d.ino]
		switch {
		case p == nil:
			c.problem("entry %q in missing directory %d", d.name, d.parent)
			continue
		case !p.IsDir():
			c.problem("entry %q in non-directory %d", d.name, d.parent)
			continue
		case in == nil:
			c.problem("entry %q in %d names missing inode %d", d.name, d.parent, d.ino)
			continue
		}
		links[d.ino]++
		if in.Mode&syscall.S_IFMT != d.mode {
			c.problem("entry %q in %d: type %#o, inode %d has %#o", d.name, d.parent, d.mode, d.ino, in.Mode&syscall.S_IFMT)
		}
		wantBucket := p.Bucket
		if d.parent == RootIno {
			wantBucket = d.name
		}
		if in.Bucket != wantBucket {
			c.problem("inode %d (%q in %d): bucket %q, want %q", d.ino, d.name, d.parent, in.Bucket, wantBucket)
		}
		if in.IsDir() {
			subdirs[d.parent]++
			if in.Parent != d.parent {
				c.problem("directory %d (%q in %d) has parent %d", d.ino, d.name, d.parent, in.Parent)
			}
		}
	}

	var sum counters
	inos := make([]Ino, 0, len(c.inodes))
	for ino := range c.inodes {
		inos = append(inos, ino)
	}
	sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] })
	for _, ino := range inos {
		in := c.inodes[ino]
		sum.inodes++
		if in.IsRegular() {
			sum.bytes += int64(in.Size)
		}
		if in.IsDir() {
			want := 2 + subdirs[ino]
			if ino != RootIno && links[ino] != 1 {
				c.problem("directory %d has %d entries", ino, links[ino])
			}
			if in.Nlink != want {
				c.problem("directory %d: nlink %d, want %d", ino, in.Nlink, want)
			}
			if c.orphans[ino] {
				c.problem("directory %d is marked orphan", ino)
			}
		} else {
			if in.Nlink != links[ino] {
				c.problem("inode %d: nlink %d, %d entries", ino, in.Nlink, links[ino])
			}
			if (in.Nlink == 0) != c.orphans[ino] {
				c.problem("inode %d: nlink %d, orphan mark %v", ino, in.Nlink, c.orphans[ino])
			}
		}
	}
	for ino := range c.orphans {
		if c.inodes[ino] == nil {
			c.problem("orphan mark for missing inode %d", ino)
		}
	}
	for ino, n := range c.xattrs {
		if c.inodes[ino] == nil {
			c.problem("%d xattrs of missing inode %d", n, ino)
		}
	}

	live := make(map[ObjectRef]uint64)
	for ino, exts := range c.extents {
		in := c.inodes[ino]
		if in == nil || !in.IsRegular() {
			c.problem("extents of missing or non-regular inode %d", ino)
			continue
		}
		for i, e := range exts {
			if i > 0 {
				p := exts[i-1]
				if p.Block+p.Count > e.Block {
					c.problem("inode %d: extents at %d and %d overlap", ino, p.Block, e.Block)
				}
			}
			live[ObjectRef{Bucket: in.Bucket, Key: e.Object}] += e.Count
		}
	}
	for ref, n := range live {
		if c.refs[ref] != n {
			c.problem("object %v: refcount %d, %d live blocks", ref, c.refs[ref], n)
		}
		if c.gc[ref] {
			c.problem("object %v is queued for GC but has %d live blocks", ref, n)
		}
	}
	for ref, n := range c.refs {
		if live[ref] == 0 {
			c.problem("object %v: refcount %d, no live blocks", ref, n)
		}
	}
	if sum != c.counters {
		c.problem("counters say %d inodes, %d bytes; found %d, %d", c.counters.inodes, c.counters.bytes, sum.inodes, sum.bytes)
	}
}
