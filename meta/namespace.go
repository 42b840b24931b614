package meta

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"syscall"

	badger "github.com/dgraph-io/badger/v4"
)

// Rename flags, with the values of Linux RENAME_NOREPLACE and RENAME_EXCHANGE
// so fs can pass renameat2 flags through.
const (
	RenameNoReplace = 1
	RenameExchange  = 2
)

// maxDepth bounds the walk up the Parent chain; a longer chain can only be a
// cycle in a corrupt database.
const maxDepth = 1 << 16

// validName checks a directory entry name the way Linux does: not empty, not
// "." or "..", no '/' or NUL, at most MaxNameLen bytes.
func validName(name string) error {
	switch {
	case len(name) > MaxNameLen:
		return ErrNameTooLong
	case name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00"):
		return ErrInvalid
	}
	return nil
}

// Get returns the inode, orphans included.
func (db *DB) Get(ctx context.Context, ino Ino) (*Inode, error) {
	if in, ok := db.cache.inode(ino); ok {
		if err := db.ready(ctx); err != nil {
			return nil, fmt.Errorf("meta: get %d: %w", ino, err)
		}
		return in, nil
	}
	epoch := db.cache.begin()
	var in *Inode
	err := db.view(ctx, func(t *badger.Txn) error {
		var err error
		in, err = getInode(t, ino)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("meta: get %d: %w", ino, err)
	}
	db.cache.fillInode(epoch, in)
	return in, nil
}

// Lookup returns the inode that parent/name names: ErrNotFound if there is
// no such entry (or no such parent), ErrNotDir if parent is not a directory.
func (db *DB) Lookup(ctx context.Context, parent Ino, name string) (*Inode, error) {
	if err := validName(name); err != nil {
		return nil, fmt.Errorf("meta: lookup %q in %d: %w", name, parent, err)
	}
	if ino, ok := db.cache.dirent(parent, name); ok {
		if ino == 0 {
			return nil, fmt.Errorf("meta: lookup %q in %d: %w", name, parent, ErrNotFound)
		}
		if in, ok := db.cache.inode(ino); ok {
			if err := db.ready(ctx); err != nil {
				return nil, fmt.Errorf("meta: lookup %q in %d: %w", name, parent, err)
			}
			return in, nil
		}
	}
	epoch := db.cache.begin()
	var in *Inode
	err := db.view(ctx, func(t *badger.Txn) error {
		ino, _, err := getDirent(t, parent, name)
		if errors.Is(err, ErrNotFound) {
			// Tell a missing entry from a missing or non-directory parent
			// only on this slow path, so a hit costs two reads.
			p, perr := getInode(t, parent)
			if perr != nil {
				return perr
			}
			if !p.IsDir() {
				return fmt.Errorf("inode %d: %w", parent, ErrNotDir)
			}
			db.cache.fillDirent(epoch, parent, name, 0)
		}
		if err != nil {
			return err
		}
		in, err = getInode(t, ino)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("meta: lookup %q in %d: %w", name, parent, err)
	}
	db.cache.fillDirent(epoch, parent, name, in.Ino)
	db.cache.fillInode(epoch, in)
	return in, nil
}

// nextIno allocates an inode number from the Badger sequence. The sequence
// starts at 0 and RootIno is 1, so both are skipped.
func (db *DB) nextIno() (Ino, error) {
	if db.closed.Load() {
		return 0, ErrClosed
	}
	for {
		n, err := db.seq.Next()
		if err != nil {
			return 0, err
		}
		if Ino(n) > RootIno {
			return Ino(n), nil
		}
	}
}

// Create adds a new inode as parent/name and returns it. From in it takes
// Mode (which must carry a file type), Uid, Gid, Size, Rdev, the times,
// Target and the regular-file fields; it allocates Ino, sets Nlink (1, or 2
// for a directory, whose ".." also adds one to the parent's Nlink), Parent
// (directories only) and Bucket (the parent's, or name itself when parent is
// RootIno: a new bucket), and sets the parent's Mtime and Ctime to in.Ctime.
// Errors: ErrInvalid for a bad name or mode, ErrNameTooLong, ErrExist,
// ErrNotFound (parent), ErrNotDir (parent).
func (db *DB) Create(ctx context.Context, parent Ino, name string, in Inode) (*Inode, error) {
	wrap := func(err error) error { return fmt.Errorf("meta: create %q in %d: %w", name, parent, err) }
	if err := validName(name); err != nil {
		return nil, wrap(err)
	}
	if !validType(in.Mode) {
		return nil, wrap(fmt.Errorf("mode %#o has no file type: %w", in.Mode, ErrInvalid))
	}
	n, err := db.newInode(ctx, parent, in, func(x *tx, p, n *Inode) error {
		dk := direntKey(parent, name)
		if ok, err := exists(x.t, dk); err != nil {
			return err
		} else if ok {
			return ErrExist
		}
		n.Nlink = 1
		if parent == RootIno {
			n.Bucket = name
		}
		if n.IsDir() {
			if p.Nlink == math.MaxUint32 {
				return fmt.Errorf("too many links to %d: %w", parent, ErrInvalid)
			}
			n.Nlink = 2
			n.Parent = parent
			p.Nlink++
		}
		p.Mtime, p.Ctime = in.Ctime, in.Ctime
		x.put(p)
		return x.t.Set(dk, encodeDirent(n.Ino, n.Mode))
	})
	if err != nil {
		return nil, wrap(err)
	}
	return n, nil
}

// newInode does what Create and CreateTmp share: it allocates an inode number and, in one
// transaction, reads the directory dir and builds the new inode from in (Ino set, Nlink 0, no
// Parent, dir's bucket, the data-key fields only for a regular file), lets place finish it (give
// it a name, or mark it orphan) and stores it. It returns a copy of what was stored.
func (db *DB) newInode(ctx context.Context, dir Ino, in Inode, place func(x *tx, dir, n *Inode) error) (*Inode, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ino, err := db.nextIno()
	if err != nil {
		return nil, err
	}
	var out *Inode
	err = db.update(ctx, func(x *tx) error {
		p, err := x.getDir(dir)
		if err != nil {
			return err
		}
		n := in.clone()
		n.Ino, n.Nlink, n.Parent, n.Bucket = ino, 0, 0, p.Bucket
		if !n.IsRegular() {
			n.FileID, n.KeyID, n.KeyName, n.WrappedKey, n.Gen = [16]byte{}, "", "", nil, 0
		}
		if err := place(x, p, n); err != nil {
			return err
		}
		x.create(n)
		out = n.clone()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Link adds newParent/newName as another name of the non-directory ino
// (ErrIsDir for a directory), increments its Nlink and sets its Ctime to now
// and the new parent's Mtime and Ctime to now. An inode that has no name left
// (an orphan) cannot get one back: ErrNotFound (LinkOrphan is for files made
// by CreateTmp). A link into another bucket or into the mount root is
// ErrCrossBucket.
func (db *DB) Link(ctx context.Context, ino, newParent Ino, newName string, now int64) (*Inode, error) {
	return db.link(ctx, ino, newParent, newName, now, false)
}

// LinkOrphan gives the orphan ino (Nlink 0) its first name, as linkat(2) does
// for a file opened with O_TMPFILE, and clears its orphan mark. An inode with
// links is ErrInvalid. meta cannot tell an O_TMPFILE file from one whose
// names were all removed; fs (and the kernel, which refuses to link an
// unlinked file that was not made by O_TMPFILE) decide.
func (db *DB) LinkOrphan(ctx context.Context, ino, newParent Ino, newName string, now int64) (*Inode, error) {
	return db.link(ctx, ino, newParent, newName, now, true)
}

func (db *DB) link(ctx context.Context, ino, newParent Ino, newName string, now int64, orphan bool) (*Inode, error) {
	wrap := func(err error) error {
		return fmt.Errorf("meta: link %d as %q in %d: %w", ino, newName, newParent, err)
	}
	if err := validName(newName); err != nil {
		return nil, wrap(err)
	}
	var out *Inode
	err := db.update(ctx, func(x *tx) error {
		in, err := x.get(ino)
		if err != nil {
			return err
		}
		if in.IsDir() {
			return ErrIsDir
		}
		switch {
		case orphan && in.Nlink != 0:
			return fmt.Errorf("inode %d has %d links: %w", ino, in.Nlink, ErrInvalid)
		case !orphan && in.Nlink == 0:
			return fmt.Errorf("inode %d has no links: %w", ino, ErrNotFound)
		}
		if in.Nlink == math.MaxUint32 {
			return fmt.Errorf("too many links: %w", ErrInvalid)
		}
		p, err := x.getDir(newParent)
		if err != nil {
			return err
		}
		dk := direntKey(newParent, newName)
		if ok, err := exists(x.t, dk); err != nil {
			return err
		} else if ok {
			return ErrExist
		}
		if newParent == RootIno || p.Bucket != in.Bucket {
			return ErrCrossBucket
		}
		if in.Nlink == 0 {
			if err := x.t.Delete(orphanKey(in.Ino)); err != nil {
				return err
			}
		}
		in.Nlink++
		in.Ctime = now
		p.Mtime, p.Ctime = now, now
		x.put(in)
		x.put(p)
		if err := x.t.Set(dk, encodeDirent(in.Ino, in.Mode)); err != nil {
			return err
		}
		out = in.clone()
		return nil
	})
	if err != nil {
		return nil, wrap(err)
	}
	return out, nil
}

// CreateTmp adds a new non-directory inode that has no name, for open(2)
// with O_TMPFILE in dir: it takes the same fields from in as Create, lives
// in dir's bucket, has Nlink 0 and is marked orphan, so it is released like
// an unlinked file unless LinkOrphan names it first. dir must be a directory
// below the mount root (ErrNotDir, ErrCrossBucket for the root); its times
// do not change.
func (db *DB) CreateTmp(ctx context.Context, dir Ino, in Inode) (*Inode, error) {
	wrap := func(err error) error { return fmt.Errorf("meta: create unnamed file in %d: %w", dir, err) }
	if !validType(in.Mode) || in.IsDir() {
		return nil, wrap(fmt.Errorf("mode %#o: %w", in.Mode, ErrInvalid))
	}
	n, err := db.newInode(ctx, dir, in, func(x *tx, _, n *Inode) error {
		if dir == RootIno {
			return ErrCrossBucket
		}
		return x.t.Set(orphanKey(n.Ino), nil)
	})
	if err != nil {
		return nil, wrap(err)
	}
	return n, nil
}

// dropLink decrements a non-directory's Nlink and records it as an orphan
// when no name is left: open files stay readable until Release.
func (x *tx) dropLink(in *Inode, now int64) error {
	if in.Nlink == 0 {
		return fmt.Errorf("inode %d has an entry but nlink 0: %w", in.Ino, ErrFormat)
	}
	in.Nlink--
	in.Ctime = now
	x.put(in)
	if in.Nlink == 0 {
		return x.t.Set(orphanKey(in.Ino), nil)
	}
	return nil
}

// Unlink removes the non-directory entry parent/name (ErrIsDir for a
// directory) and decrements the inode's Nlink. At Nlink 0 the inode is not
// deleted but recorded as an orphan, still readable through Get, until
// Release: open files stay usable. It returns the updated inode.
func (db *DB) Unlink(ctx context.Context, parent Ino, name string, now int64) (*Inode, error) {
	wrap := func(err error) error { return fmt.Errorf("meta: unlink %q in %d: %w", name, parent, err) }
	if err := validName(name); err != nil {
		return nil, wrap(err)
	}
	var out *Inode
	err := db.update(ctx, func(x *tx) error {
		p, err := x.getDir(parent)
		if err != nil {
			return err
		}
		ino, _, err := getDirent(x.t, parent, name)
		if err != nil {
			return err
		}
		in, err := x.get(ino)
		if err != nil {
			return err
		}
		if in.IsDir() {
			return ErrIsDir
		}
		if err := x.dropLink(in, now); err != nil {
			return err
		}
		p.Mtime, p.Ctime = now, now
		x.put(p)
		if err := x.t.Delete(direntKey(parent, name)); err != nil {
			return err
		}
		out = in.clone()
		return nil
	})
	if err != nil {
		return nil, wrap(err)
	}
	return out, nil
}

// removeDir deletes the empty directory in (ErrNotEmpty otherwise), whose
// entry in parent p is being removed by the caller.
//
// Emptiness is checked by iterating the directory's entries, which Badger's
// conflict detection does not track as a range. It is still serializable:
// every operation that adds an entry to a directory also writes that
// directory's inode (its Mtime), and this transaction read that inode, so the
// two conflict.
func (x *tx) removeDir(p, in *Inode) error {
	if hasPrefix(x.t, direntPrefix(in.Ino)) {
		return ErrNotEmpty
	}
	if p.Nlink <= 2 {
		return fmt.Errorf("directory %d has a subdirectory but nlink %d: %w", p.Ino, p.Nlink, ErrFormat)
	}
	p.Nlink--
	x.put(p)
	return x.remove(in)
}

// Rmdir removes the empty directory parent/name and its inode (ErrNotEmpty,
// ErrNotDir), decrements the parent's Nlink and sets its Mtime and Ctime to
// now.
func (db *DB) Rmdir(ctx context.Context, parent Ino, name string, now int64) error {
	wrap := func(err error) error { return fmt.Errorf("meta: rmdir %q in %d: %w", name, parent, err) }
	if err := validName(name); err != nil {
		return wrap(err)
	}
	err := db.update(ctx, func(x *tx) error {
		p, err := x.getDir(parent)
		if err != nil {
			return err
		}
		ino, _, err := getDirent(x.t, parent, name)
		if err != nil {
			return err
		}
		in, err := x.get(ino)
		if err != nil {
			return err
		}
		if !in.IsDir() {
			return ErrNotDir
		}
		if err := x.removeDir(p, in); err != nil {
			return err
		}
		p.Mtime, p.Ctime = now, now
		return x.t.Delete(direntKey(parent, name))
	})
	if err != nil {
		return wrap(err)
	}
	return nil
}

// isAncestor reports whether directory anc is dir or one of its ancestors.
func (x *tx) isAncestor(anc, dir Ino) (bool, error) {
	cur := dir
	for range maxDepth {
		if cur == anc {
			return true, nil
		}
		if cur == RootIno {
			return false, nil
		}
		in, err := x.get(cur)
		if err != nil {
			return false, err
		}
		if !in.IsDir() || in.Parent == 0 {
			return false, fmt.Errorf("directory %d has parent %d: %w", cur, in.Parent, ErrFormat)
		}
		cur = in.Parent
	}
	return false, fmt.Errorf("parent chain of %d too long: %w", dir, ErrFormat)
}

// Rename moves oldParent/oldName to newParent/newName in one transaction,
// with the semantics of rename(2) and renameat2(2):
//
//   - A non-directory target is replaced: its Nlink is decremented (it
//     becomes an orphan at 0) and it is returned as replaced. A directory
//     target must be an empty directory (ErrNotEmpty); it is deleted and
//     returned as replaced with Nlink 0. A directory source needs a
//     directory target (ErrNotDir) and a non-directory source a
//     non-directory target (ErrIsDir).
//   - Moving a directory into its own subtree is ErrInvalid.
//   - The same entry, or two names of the same inode, is a no-op.
//   - RenameNoReplace fails with ErrExist if the target exists;
//     RenameExchange swaps the two entries and fails with ErrNotFound if the
//     target is missing. Both together are ErrInvalid.
//   - Parent Nlink counts and Parent fields follow moved directories; the
//     moved inodes get Ctime now, both parents Mtime and Ctime now.
//   - A move between buckets, or into or out of the mount root (renaming a
//     bucket), is ErrCrossBucket.
func (db *DB) Rename(ctx context.Context, oldParent Ino, oldName string, newParent Ino, newName string, flags uint32, now int64) (replaced *Inode, err error) {
	wrap := func(err error) error {
		return fmt.Errorf("meta: rename %q in %d to %q in %d: %w", oldName, oldParent, newName, newParent, err)
	}
	if err := validName(oldName); err != nil {
		return nil, wrap(err)
	}
	if err := validName(newName); err != nil {
		return nil, wrap(err)
	}
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return nil, wrap(fmt.Errorf("flags %#x: %w", flags, ErrInvalid))
	}
	err = db.update(ctx, func(x *tx) error {
		replaced = nil
		var err error
		replaced, err = x.rename(oldParent, oldName, newParent, newName, flags, now)
		return err
	})
	if err != nil {
		return nil, wrap(err)
	}
	return replaced, nil
}

func (x *tx) rename(oldParent Ino, oldName string, newParent Ino, newName string, flags uint32, now int64) (*Inode, error) {
	op, err := x.getDir(oldParent)
	if err != nil {
		return nil, err
	}
	np, err := x.getDir(newParent)
	if err != nil {
		return nil, err
	}
	srcIno, _, err := getDirent(x.t, oldParent, oldName)
	if err != nil {
		return nil, err
	}
	src, err := x.get(srcIno)
	if err != nil {
		return nil, err
	}
	if oldParent == newParent && oldName == newName {
		if flags&RenameNoReplace != 0 {
			return nil, ErrExist
		}
		return nil, nil
	}
	if oldParent == RootIno || newParent == RootIno || op.Bucket != np.Bucket {
		return nil, ErrCrossBucket
	}
	dstIno, _, err := getDirent(x.t, newParent, newName)
	dstExists := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	switch {
	case !dstExists && flags&RenameExchange != 0:
		return nil, err
	case dstExists && flags&RenameNoReplace != 0:
		return nil, ErrExist
	case dstExists && dstIno == srcIno:
		return nil, nil // two names of one inode: rename(2) does nothing
	}
	if src.IsDir() && oldParent != newParent {
		if anc, err := x.isAncestor(src.Ino, newParent); err != nil {
			return nil, err
		} else if anc {
			return nil, fmt.Errorf("directory %d into its own subtree: %w", src.Ino, ErrInvalid)
		}
	}
	oldKey, newKey := direntKey(oldParent, oldName), direntKey(newParent, newName)
	var replaced *Inode
	if flags&RenameExchange != 0 {
		dst, err := x.get(dstIno)
		if err != nil {
			return nil, err
		}
		if dst.IsDir() && oldParent != newParent {
			if anc, err := x.isAncestor(dst.Ino, oldParent); err != nil {
				return nil, err
			} else if anc {
				return nil, fmt.Errorf("directory %d into its own subtree: %w", dst.Ino, ErrInvalid)
			}
		}
		if err := x.t.Set(oldKey, encodeDirent(dst.Ino, dst.Mode)); err != nil {
			return nil, err
		}
		if oldParent != newParent {
			if dst.IsDir() {
				dst.Parent = oldParent
				np.Nlink--
				op.Nlink++
			}
			if src.IsDir() {
				src.Parent = newParent
				op.Nlink--
				np.Nlink++
			}
		}
		dst.Ctime = now
		x.put(dst)
	} else {
		if dstExists {
			dst, err := x.get(dstIno)
			if err != nil {
				return nil, err
			}
			switch {
			case src.IsDir() && !dst.IsDir():
				return nil, ErrNotDir
			case !src.IsDir() && dst.IsDir():
				return nil, ErrIsDir
			case dst.IsDir():
				if err := x.removeDir(np, dst); err != nil {
					return nil, err
				}
				replaced = dst.clone()
				replaced.Nlink = 0
			default:
				if err := x.dropLink(dst, now); err != nil {
					return nil, err
				}
				replaced = dst.clone()
			}
		}
		if err := x.t.Delete(oldKey); err != nil {
			return nil, err
		}
		if src.IsDir() && oldParent != newParent {
			src.Parent = newParent
			op.Nlink--
			np.Nlink++
		}
	}
	if err := x.t.Set(newKey, encodeDirent(src.Ino, src.Mode)); err != nil {
		return nil, err
	}
	src.Ctime = now
	op.Mtime, op.Ctime = now, now
	np.Mtime, np.Ctime = now, now
	x.put(src)
	x.put(op)
	x.put(np)
	return replaced, nil
}

// ReadDir returns the entries of dir sorted by name (bytewise), without "."
// and "..". ErrNotDir if dir is not a directory.
func (db *DB) ReadDir(ctx context.Context, dir Ino) ([]Dirent, error) {
	var ents []Dirent
	err := db.view(ctx, func(t *badger.Txn) error {
		in, err := getInode(t, dir)
		if err != nil {
			return err
		}
		if !in.IsDir() {
			return ErrNotDir
		}
		prefix := direntPrefix(dir)
		it := t.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			name := string(item.Key()[len(prefix):])
			var e Dirent
			if err := item.Value(func(v []byte) error {
				var err error
				e.Ino, e.Mode, err = decodeDirent(v)
				return err
			}); err != nil {
				return fmt.Errorf("entry %q: %w", name, err)
			}
			e.Name = name
			ents = append(ents, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("meta: readdir %d: %w", dir, err)
	}
	// Badger already orders keys bytewise; sorting again is cheap and keeps
	// the contract independent of the key layout.
	if !sort.SliceIsSorted(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name }) {
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	}
	return ents, nil
}

// fnError carries an error returned by a caller's callback through the retry
// loop, so it is returned exactly as the callback gave it.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }
func (e fnError) Unwrap() error { return e.err }

// applyFn runs a caller's fn on a copy of in and copies the result back,
// refusing changes to the fields that meta maintains itself: Ino, Parent,
// Nlink and Bucket (links, renames and the object reference counts depend on
// them) and the file type. A Mode with no type bits keeps in's type, so a
// chmod may pass permission bits only.
func applyFn(in *Inode, fn func(*Inode) error) error {
	c := in.clone()
	if err := fn(c); err != nil {
		return fnError{err}
	}
	if c.Mode&syscall.S_IFMT == 0 {
		c.Mode |= in.Mode & syscall.S_IFMT
	}
	switch {
	case c.Ino != in.Ino:
		return fmt.Errorf("changing Ino: %w", ErrInvalid)
	case c.Parent != in.Parent:
		return fmt.Errorf("changing Parent: %w", ErrInvalid)
	case c.Nlink != in.Nlink:
		return fmt.Errorf("changing Nlink: %w", ErrInvalid)
	case c.Bucket != in.Bucket:
		return fmt.Errorf("changing Bucket: %w", ErrInvalid)
	case c.Mode&syscall.S_IFMT != in.Mode&syscall.S_IFMT:
		return fmt.Errorf("changing the file type: %w", ErrInvalid)
	}
	*in = *c
	return nil
}

// unwrapFn returns a callback's own error unchanged, or wrap(err) for any
// other error.
func unwrapFn(err error, wrap func(error) error) error {
	var fe fnError
	if errors.As(err, &fe) {
		return fe.err
	}
	return wrap(err)
}

// Update reads the inode, calls fn on a copy and writes the result back, in
// one transaction retried on conflict, so fn may run more than once. fn may
// change any field except Ino, Parent, Nlink, Bucket and the file type bits
// of Mode, which meta maintains (ErrInvalid); a Mode without type bits keeps
// the old type. An error from fn aborts the update and is returned as is.
func (db *DB) Update(ctx context.Context, ino Ino, fn func(*Inode) error) (*Inode, error) {
	wrap := func(err error) error { return fmt.Errorf("meta: update %d: %w", ino, err) }
	var out *Inode
	err := db.update(ctx, func(x *tx) error {
		in, err := x.get(ino)
		if err != nil {
			return err
		}
		if err := applyFn(in, fn); err != nil {
			return err
		}
		x.put(in)
		out = in.clone()
		return nil
	})
	if err != nil {
		return nil, unwrapFn(err, wrap)
	}
	return out, nil
}

// NextGen atomically increments and returns the write generation of the
// regular file ino (ErrInvalid for other types). Every flush seals its
// blocks under a fresh generation, so an old copy of a block cannot be
// replayed.
func (db *DB) NextGen(ctx context.Context, ino Ino) (uint64, error) {
	var gen uint64
	err := db.update(ctx, func(x *tx) error {
		in, err := x.get(ino)
		if err != nil {
			return err
		}
		if !in.IsRegular() {
			return fmt.Errorf("not a regular file: %w", ErrInvalid)
		}
		if in.Gen == math.MaxUint64 {
			return fmt.Errorf("generation exhausted: %w", ErrInvalid)
		}
		in.Gen++
		gen = in.Gen
		x.put(in)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("meta: next gen %d: %w", ino, err)
	}
	return gen, nil
}
