package repair

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"

	"github.com/kmipfs/kmipfs/crypt"
	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/meta"
	"github.com/kmipfs/kmipfs/objstore"
)

// Kind classifies a Problem.
type Kind string

// The kinds of problem Check reports.
const (
	// KindMeta is a broken invariant of the metadata database (meta.DB.Check).
	KindMeta Kind = "meta"
	// KindKey is a file whose data key cannot be had: its KMIP key is gone, or the wrapped key
	// does not authenticate under it. None of the file's blocks can be read.
	KindKey Kind = "key"
	// KindMissing is an object that the metadata references and the store does not have.
	KindMissing Kind = "missing"
	// KindShort is an object shorter than the slots the metadata uses, or not a whole number of
	// sealed blocks.
	KindShort Kind = "short"
	// KindDamaged is a file with blocks that fail authentication.
	KindDamaged Kind = "damaged"
	// KindOrphan is an object that looks like kmipfs's, is referenced by no file and is not
	// queued for garbage collection (an upload whose commit never happened).
	KindOrphan Kind = "orphan"
)

// Problem is one thing wrong with the filesystem.
type Problem struct {
	Kind Kind
	// Path is a path of the file concerned, relative to the mount root ("/bucket/dir/file");
	// empty for metadata and orphan problems. An unlinked file still open at a crash has no path:
	// it is "(unlinked inode N)".
	Path string
	Ino  meta.Ino
	// Object is the object concerned, if any.
	Object meta.ObjectRef
	// Size is the object's size in bytes, for KindShort and KindOrphan.
	Size int64
	// Blocks are the file blocks affected, sorted.
	Blocks []uint64
	// Detail is the metadata problem, or the cause of a key problem.
	Detail string
	// Removed is set on an orphan that Check deleted.
	Removed bool
}

// String is the problem as one line of fsck output.
func (p Problem) String() string {
	obj := p.Object.Bucket + "/" + p.Object.Key
	switch p.Kind {
	case KindMeta:
		return "meta: " + p.Detail
	case KindKey:
		return fmt.Sprintf("key: %s: the data key cannot be unwrapped, no block is readable: %s", p.Path, p.Detail)
	case KindMissing:
		return fmt.Sprintf("missing: %s: object %s of blocks %s is not in the store", p.Path, obj, blockList(p.Blocks))
	case KindShort:
		return fmt.Sprintf("short: %s: object %s is %d bytes; blocks %s are not whole in it", p.Path, obj, p.Size, blockList(p.Blocks))
	case KindDamaged:
		return fmt.Sprintf("damaged: %s: blocks %s fail authentication (object %s)", p.Path, blockList(p.Blocks), obj)
	case KindOrphan:
		s := fmt.Sprintf("orphan: object %s (%d bytes) belongs to no file", obj, p.Size)
		if p.Removed {
			s += "; removed"
		}
		return s
	}
	return fmt.Sprintf("%s: %s %s", p.Kind, p.Path, p.Detail)
}

// CheckOptions configures Check.
type CheckOptions struct {
	Meta  *meta.DB
	Store objstore.Store
	Keys  Secrets
	// Repair deletes the orphan objects found. Nothing else is ever changed.
	Repair bool
	// Problem, if set, is called for each problem as it is found (for output that streams).
	Problem func(Problem)
	// Progress, if set, is called now and then with the bytes of file data checked so far and
	// the total (the size of all files, from the metadata counters).
	Progress func(done, total uint64)
}

// CheckReport is what Check found.
type CheckReport struct {
	Problems []Problem
	// Files, Blocks and Objects count what was checked: regular files, stored blocks
	// authenticated, and objects read.
	Files, Blocks, Objects int
	// Damaged counts the files with at least one key, missing, short or damaged problem.
	Damaged int
	// Orphans and Removed count orphan objects, found and deleted.
	Orphans, Removed int
	// Meta counts metadata problems.
	Meta int
}

// Clean reports whether nothing is wrong.
func (r *CheckReport) Clean() bool { return len(r.Problems) == 0 }

// objectName matches the keys kmipfs gives objects: "<32 hex file id>/<16 hex generation>". Other
// keys in a bucket are not kmipfs's, and Check never calls them orphans.
var objectName = regexp.MustCompile(`^[0-9a-f]{32}/[0-9a-f]{16}$`)

// readChunk is how many sealed blocks Check fetches with one ranged Get (about 1 MiB).
const readChunk = 256

// Check checks the whole filesystem: the metadata invariants, that every object an extent names
// exists and holds its slots, that every stored block authenticates under its file's data key
// (unwrapped through Keys, as a mount does), and that the store holds no kmipfs objects that no
// file references and GC does not know of. An error means the check could not be completed (the
// store or KMIP server is unavailable); the problems found so far are in the report.
func Check(ctx context.Context, opts CheckOptions) (*CheckReport, error) {
	c := &checker{opts: opts, rep: &CheckReport{}, live: make(map[meta.ObjectRef]bool)}
	err := c.run(ctx)
	return c.rep, err
}

type checker struct {
	opts CheckOptions
	rep  *CheckReport
	// live is every object referenced by an extent or counted in meta, and every object queued for GC.
	live        map[meta.ObjectRef]bool
	done, total uint64
	// inFile is the part of the current file checked so far, for progress within large files.
	inFile uint64
}

func (c *checker) report(p Problem) {
	c.rep.Problems = append(c.rep.Problems, p)
	switch p.Kind {
	case KindMeta:
		c.rep.Meta++
	case KindOrphan:
		c.rep.Orphans++
		if p.Removed {
			c.rep.Removed++
		}
	}
	if c.opts.Problem != nil {
		c.opts.Problem(p)
	}
}

func (c *checker) run(ctx context.Context) error {
	db := c.opts.Meta
	lines, err := db.Check(ctx)
	if err != nil {
		return fmt.Errorf("check metadata: %w", err)
	}
	for _, l := range lines {
		c.report(Problem{Kind: KindMeta, Detail: l})
	}
	if _, c.total, err = db.Stats(ctx); err != nil {
		return fmt.Errorf("check metadata: %w", err)
	}
	c.progress()

	// Every regular file reachable from the root, once, then the unlinked ones still held.
	seen := make(map[meta.Ino]bool)
	root, err := db.Get(ctx, meta.RootIno)
	if err != nil {
		return err
	}
	err = walk(ctx, db, root, "/", func(p string, in *meta.Inode) error {
		if !in.IsRegular() || seen[in.Ino] {
			return nil
		}
		seen[in.Ino] = true
		return c.file(ctx, p, in)
	})
	if err != nil {
		return err
	}
	orphans, err := db.Orphans(ctx)
	if err != nil {
		return err
	}
	for _, ino := range orphans {
		in, err := db.Get(ctx, ino)
		if err != nil {
			return err
		}
		if in.IsRegular() && !seen[ino] {
			seen[ino] = true
			if err := c.file(ctx, fmt.Sprintf("(unlinked inode %d)", ino), in); err != nil {
				return err
			}
		}
	}
	return c.orphanObjects(ctx)
}

func (c *checker) progress() {
	if c.opts.Progress != nil {
		c.opts.Progress(min(c.done+c.inFile, c.total), c.total)
	}
}

// file checks one regular file: its data key, its objects and every stored block.
func (c *checker) file(ctx context.Context, p string, in *meta.Inode) error {
	c.rep.Files++
	c.inFile = 0
	defer func() { c.done += in.Size; c.inFile = 0; c.progress() }()
	exts, err := c.opts.Meta.Extents(ctx, in.Ino)
	if err != nil {
		return err
	}
	byObject := make(map[string][]meta.Extent)
	var order []string
	for _, e := range exts {
		ref := meta.ObjectRef{Bucket: in.Bucket, Key: e.Object}
		c.live[ref] = true
		if _, ok := byObject[e.Object]; !ok {
			order = append(order, e.Object)
		}
		byObject[e.Object] = append(byObject[e.Object], e)
	}
	// The key is checked even for a file with nothing stored: without it the file cannot be opened.
	cipher, err := c.fileCipher(ctx, in)
	if err != nil {
		var kp *keyProblem
		if !errors.As(err, &kp) {
			return err
		}
		c.rep.Damaged++
		c.report(Problem{Kind: KindKey, Path: p, Ino: in.Ino, Detail: kp.Error()})
		return nil
	}
	defer cipher.Destroy()
	damaged := false
	for _, obj := range order {
		bad, err := c.object(ctx, p, in, obj, byObject[obj], cipher)
		if err != nil {
			return err
		}
		damaged = damaged || bad
	}
	if damaged {
		c.rep.Damaged++
	}
	return nil
}

// keyProblem is a data key that cannot be had for a reason that is the file's (the KMIP key is
// gone or not a usable secret, the wrapped key fails authentication), not an outage.
type keyProblem struct{ err error }

func (k *keyProblem) Error() string { return k.err.Error() }
func (k *keyProblem) Unwrap() error { return k.err }

func (c *checker) fileCipher(ctx context.Context, in *meta.Inode) (*crypt.Cipher, error) {
	kek, err := c.opts.Keys.Secret(ctx, in.KeyName)
	if err != nil {
		if errors.Is(err, kms.ErrKeyNotFound) || errors.Is(err, kms.ErrBadKey) || errors.Is(err, kms.ErrAmbiguous) {
			return nil, &keyProblem{fmt.Errorf("KMIP key %q (key id %q): %w", in.KeyName, in.KeyID, err)}
		}
		return nil, fmt.Errorf("KMIP key %q: %w", in.KeyName, err)
	}
	defer crypt.Zero(kek)
	dek, err := crypt.UnwrapKey(kek, in.WrappedKey, crypt.FileID(in.FileID), in.KeyName)
	if err != nil {
		return nil, &keyProblem{err}
	}
	defer crypt.Zero(dek)
	cipher, err := crypt.NewCipher(dek, crypt.FileID(in.FileID))
	if err != nil {
		return nil, &keyProblem{err}
	}
	return cipher, nil
}

// object checks the extents of one file that live in object obj. It reports whether it found a
// problem; an error is a store failure.
func (c *checker) object(ctx context.Context, p string, in *meta.Inode, obj string, exts []meta.Extent, cipher *crypt.Cipher) (bool, error) {
	ref := meta.ObjectRef{Bucket: in.Bucket, Key: obj}
	info, err := c.opts.Store.Stat(ctx, in.Bucket, obj)
	if errors.Is(err, objstore.ErrNotFound) || errors.Is(err, objstore.ErrBucketNotFound) {
		var blocks []uint64
		for _, e := range exts {
			for b := e.Block; b < e.Block+e.Count; b++ {
				blocks = append(blocks, b)
			}
		}
		c.report(Problem{Kind: KindMissing, Path: p, Ino: in.Ino, Object: ref, Blocks: blocks})
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat object %s/%s: %w", in.Bucket, obj, err)
	}
	c.rep.Objects++
	slots := uint64(info.Size) / crypt.CipherBS
	var short, bad []uint64
	for _, e := range exts {
		for off := uint64(0); off < e.Count; off += readChunk {
			n := min(readChunk, e.Count-off)
			slot := e.Slot + off
			var sealed []byte
			if slot < slots {
				have := min(n, slots-slot)
				if sealed, err = c.opts.Store.Get(ctx, in.Bucket, obj, int64(slot*crypt.CipherBS), int64(have*crypt.CipherBS)); err != nil {
					if errors.Is(err, objstore.ErrNotFound) {
						// Gone between Stat and Get: as good as missing.
						sealed = nil
					} else {
						return false, fmt.Errorf("get object %s/%s: %w", in.Bucket, obj, err)
					}
				}
			}
			c.inFile += n * crypt.PlainBS
			c.progress()
			for i := uint64(0); i < n; i++ {
				b := e.Block + off + i
				if (i+1)*crypt.CipherBS > uint64(len(sealed)) {
					short = append(short, b)
					continue
				}
				c.rep.Blocks++
				if _, err := cipher.OpenBlock(nil, sealed[i*crypt.CipherBS:(i+1)*crypt.CipherBS], b, e.Gen); err != nil {
					bad = append(bad, b)
				}
			}
		}
	}
	if info.Size%crypt.CipherBS != 0 && len(short) == 0 {
		// Every slot in use is whole, but the object is not a sequence of sealed blocks.
		c.report(Problem{Kind: KindShort, Path: p, Ino: in.Ino, Object: ref, Size: info.Size})
	}
	if len(short) > 0 {
		slices.Sort(short)
		c.report(Problem{Kind: KindShort, Path: p, Ino: in.Ino, Object: ref, Size: info.Size, Blocks: short})
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		c.report(Problem{Kind: KindDamaged, Path: p, Ino: in.Ino, Object: ref, Blocks: bad})
	}
	return len(short) > 0 || len(bad) > 0 || info.Size%crypt.CipherBS != 0, nil
}

// orphanObjects lists every bucket and reports (and with Repair deletes) the kmipfs objects that
// no file references and the GC queue does not hold.
func (c *checker) orphanObjects(ctx context.Context) error {
	db := c.opts.Meta
	refs, err := db.Objects(ctx)
	if err != nil {
		return err
	}
	gc, err := db.PendingGC(ctx)
	if err != nil {
		return err
	}
	for _, r := range append(refs, gc...) {
		c.live[r] = true
	}
	buckets, err := c.buckets(ctx)
	if err != nil {
		return err
	}
	for _, b := range buckets {
		var found []objstore.Info
		err := c.opts.Store.List(ctx, b, "", func(info objstore.Info) error {
			if objectName.MatchString(info.Key) && !c.live[meta.ObjectRef{Bucket: b, Key: info.Key}] {
				found = append(found, info)
			}
			return nil
		})
		if errors.Is(err, objstore.ErrBucketNotFound) {
			continue // a bucket of the metadata that the store lacks: its files report their objects
		}
		if err != nil {
			return fmt.Errorf("list bucket %s: %w", b, err)
		}
		for _, info := range found {
			p := Problem{Kind: KindOrphan, Object: meta.ObjectRef{Bucket: b, Key: info.Key}, Size: info.Size}
			if c.opts.Repair {
				if err := c.opts.Store.Delete(ctx, b, info.Key); err != nil {
					return fmt.Errorf("delete orphan %s/%s: %w", b, info.Key, err)
				}
				p.Removed = true
			}
			c.report(p)
		}
	}
	return nil
}

// buckets returns the buckets to look for orphans in: those of the metadata (the entries of the
// mount root), and those of the store if it can list them (a bucket whose metadata is gone holds
// only orphans).
func (c *checker) buckets(ctx context.Context) ([]string, error) {
	ents, err := c.opts.Meta.ReadDir(ctx, meta.RootIno)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, d := range ents {
		names = append(names, d.Name)
	}
	if bl, ok := c.opts.Store.(objstore.BucketLister); ok {
		more, err := bl.Buckets(ctx)
		if err != nil {
			return nil, fmt.Errorf("list buckets: %w", err)
		}
		names = append(names, more...)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}
