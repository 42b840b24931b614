package meta

import (
	"encoding/binary"
	"fmt"
	"math"
	"syscall"
)

// Key prefixes, one byte per table (see doc.go, "Key schema").
const (
	prefixFormat   = 'V'
	prefixInode    = 'I'
	prefixDirent   = 'D'
	prefixXattr    = 'X'
	prefixExtent   = 'E'
	prefixRefcount = 'R'
	prefixGC       = 'G'
	prefixOrphan   = 'O'
	prefixCounter  = 'C'
	prefixSequence = 'S'
)

// Counter sub-keys.
const (
	counterBase    = 0x00
	counterDelta   = 0x01
	counterSession = 0x02
)

// formatVersion is the schema version this code reads and writes.
const formatVersion = 1

// recordVersion is the version byte that starts every encoded record.
const recordVersion = 1

// formatMagic starts the format record, so that a foreign Badger database is
// recognized as such rather than misread.
const formatMagic = "kmipfs-meta"

var (
	formatKey      = []byte{prefixFormat}
	seqKey         = []byte{prefixSequence, 'i', 'n', 'o'}
	counterBaseKey = []byte{prefixCounter, counterBase}
	sessionKey     = []byte{prefixCounter, counterSession}
	deltaPrefix    = []byte{prefixCounter, counterDelta}
)

func inoKey(prefix byte, ino Ino) []byte {
	k := make([]byte, 9, 9+32)
	k[0] = prefix
	binary.BigEndian.PutUint64(k[1:], uint64(ino))
	return k
}

func inodeKey(ino Ino) []byte  { return inoKey(prefixInode, ino) }
func orphanKey(ino Ino) []byte { return inoKey(prefixOrphan, ino) }

// direntPrefix is the prefix of every entry of directory parent.
func direntPrefix(parent Ino) []byte { return inoKey(prefixDirent, parent) }

func direntKey(parent Ino, name string) []byte {
	return append(direntPrefix(parent), name...)
}

func xattrPrefix(ino Ino) []byte { return inoKey(prefixXattr, ino) }

func xattrKey(ino Ino, name string) []byte { return append(xattrPrefix(ino), name...) }

func extentPrefix(ino Ino) []byte { return inoKey(prefixExtent, ino) }

func extentKey(ino Ino, block uint64) []byte {
	return binary.BigEndian.AppendUint64(extentPrefix(ino), block)
}

// objectKey is the refcount or GC-queue key of ref: the prefix, the bucket
// name's length as 2 bytes, the bucket name, then the object key.
func objectKey(prefix byte, ref ObjectRef) []byte {
	k := make([]byte, 0, 3+len(ref.Bucket)+len(ref.Key))
	k = append(k, prefix)
	k = binary.BigEndian.AppendUint16(k, uint16(len(ref.Bucket)))
	k = append(k, ref.Bucket...)
	return append(k, ref.Key...)
}

func refcountKey(ref ObjectRef) []byte { return objectKey(prefixRefcount, ref) }
func gcKey(ref ObjectRef) []byte       { return objectKey(prefixGC, ref) }

func deltaKey(session, n uint64) []byte {
	k := append([]byte(nil), deltaPrefix...)
	k = binary.BigEndian.AppendUint64(k, session)
	return binary.BigEndian.AppendUint64(k, n)
}

// decodeInoKey returns the inode number of a 9-byte key with the given prefix.
func decodeInoKey(prefix byte, k []byte) (Ino, error) {
	if len(k) != 9 || k[0] != prefix {
		return 0, fmt.Errorf("key %x: %w", k, ErrFormat)
	}
	return Ino(binary.BigEndian.Uint64(k[1:])), nil
}

// decodeExtentKey returns the inode and first block of an extent key.
func decodeExtentKey(k []byte) (Ino, uint64, error) {
	if len(k) != 17 || k[0] != prefixExtent {
		return 0, 0, fmt.Errorf("extent key %x: %w", k, ErrFormat)
	}
	return Ino(binary.BigEndian.Uint64(k[1:9])), binary.BigEndian.Uint64(k[9:]), nil
}

// decodeObjectKey parses a refcount or GC-queue key.
func decodeObjectKey(prefix byte, k []byte) (ObjectRef, error) {
	if len(k) < 3 || k[0] != prefix {
		return ObjectRef{}, fmt.Errorf("object key %x: %w", k, ErrFormat)
	}
	n := int(binary.BigEndian.Uint16(k[1:3]))
	if len(k)-3 < n {
		return ObjectRef{}, fmt.Errorf("object key %x: bucket length %d: %w", k, n, ErrFormat)
	}
	return ObjectRef{Bucket: string(k[3 : 3+n]), Key: string(k[3+n:])}, nil
}

// decoder reads a record; the first failure sticks, so decoders check err
// once at the end and never index past the input.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%s: %w", what, ErrFormat)
	}
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32(what string) uint32 {
	v := d.uvarint(what)
	if v > math.MaxUint32 {
		d.fail(what)
		return 0
	}
	return uint32(v)
}

func (d *decoder) bytes(what string) []byte {
	n := d.uvarint(what)
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(what)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) fixed(what string, dst []byte) {
	if d.err != nil {
		return
	}
	if len(d.b) < len(dst) {
		d.fail(what)
		return
	}
	copy(dst, d.b)
	d.b = d.b[len(dst):]
}

func (d *decoder) version(what string) {
	if v := d.byte(what + " version"); d.err == nil && v != recordVersion {
		d.fail(fmt.Sprintf("%s version %d", what, v))
	}
}

// done fails on trailing bytes and returns the first error.
func (d *decoder) done(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(what + " trailing bytes")
	}
	return d.err
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// Inode record flags.
const (
	inodeHasFile = 1 << 0 // the regular-file fields follow
	inodeFlags   = inodeHasFile
)

// validType reports whether mode's type bits name a file type.
func validType(mode uint32) bool {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFLNK, syscall.S_IFCHR,
		syscall.S_IFBLK, syscall.S_IFIFO, syscall.S_IFSOCK:
		return true
	}
	return false
}

// encodeInode encodes in as version 1: version, flags, then uvarints ino,
// parent, mode, uid, gid, nlink, size, rdev, zigzag varints atime, mtime,
// ctime, length-prefixed bucket and target, and for regular files the 16-byte
// file id, length-prefixed key id, key name and wrapped key, and uvarint gen.
func encodeInode(in *Inode) []byte {
	b := make([]byte, 0, 64+len(in.Bucket)+len(in.Target)+len(in.KeyID)+len(in.KeyName)+len(in.WrappedKey))
	b = append(b, recordVersion)
	var flags byte
	if in.IsRegular() {
		flags |= inodeHasFile
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(in.Ino))
	b = binary.AppendUvarint(b, uint64(in.Parent))
	b = binary.AppendUvarint(b, uint64(in.Mode))
	b = binary.AppendUvarint(b, uint64(in.Uid))
	b = binary.AppendUvarint(b, uint64(in.Gid))
	b = binary.AppendUvarint(b, uint64(in.Nlink))
	b = binary.AppendUvarint(b, in.Size)
	b = binary.AppendUvarint(b, uint64(in.Rdev))
	b = binary.AppendVarint(b, in.Atime)
	b = binary.AppendVarint(b, in.Mtime)
	b = binary.AppendVarint(b, in.Ctime)
	b = appendString(b, in.Bucket)
	b = appendString(b, in.Target)
	if flags&inodeHasFile != 0 {
		b = append(b, in.FileID[:]...)
		b = appendString(b, in.KeyID)
		b = appendString(b, in.KeyName)
		b = appendBytes(b, in.WrappedKey)
		b = binary.AppendUvarint(b, in.Gen)
	}
	return b
}

// decodeInode decodes a record written by encodeInode. It returns ErrFormat
// for anything malformed, including an unknown version or flag, a mode with
// no valid type, file fields on a non-file, or trailing bytes.
func decodeInode(b []byte) (*Inode, error) {
	d := decoder{b: b}
	d.version("inode")
	flags := d.byte("inode flags")
	in := &Inode{}
	in.Ino = Ino(d.uvarint("inode ino"))
	in.Parent = Ino(d.uvarint("inode parent"))
	in.Mode = d.uint32("inode mode")
	in.Uid = d.uint32("inode uid")
	in.Gid = d.uint32("inode gid")
	in.Nlink = d.uint32("inode nlink")
	in.Size = d.uvarint("inode size")
	in.Rdev = d.uint32("inode rdev")
	in.Atime = d.varint("inode atime")
	in.Mtime = d.varint("inode mtime")
	in.Ctime = d.varint("inode ctime")
	in.Bucket = string(d.bytes("inode bucket"))
	in.Target = string(d.bytes("inode target"))
	if d.err == nil {
		switch {
		case flags&^inodeFlags != 0:
			d.fail(fmt.Sprintf("inode flags %#x", flags))
		case in.Ino == 0:
			d.fail("inode number 0")
		case !validType(in.Mode):
			d.fail(fmt.Sprintf("inode mode %#o", in.Mode))
		case (flags&inodeHasFile != 0) != in.IsRegular():
			d.fail("inode file fields")
		case in.Parent != 0 && !in.IsDir():
			d.fail("inode parent on a non-directory")
		}
	}
	if flags&inodeHasFile != 0 {
		d.fixed("inode file id", in.FileID[:])
		in.KeyID = string(d.bytes("inode key id"))
		in.KeyName = string(d.bytes("inode key name"))
		if wk := d.bytes("inode wrapped key"); len(wk) > 0 {
			in.WrappedKey = append([]byte(nil), wk...)
		}
		in.Gen = d.uvarint("inode gen")
	}
	if err := d.done("inode"); err != nil {
		return nil, err
	}
	return in, nil
}

// encodeDirent encodes a directory entry value: version, uvarint ino and
// uvarint type bits.
func encodeDirent(ino Ino, mode uint32) []byte {
	b := make([]byte, 0, 16)
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, uint64(ino))
	return binary.AppendUvarint(b, uint64(mode&syscall.S_IFMT))
}

// decodeDirent decodes a value written by encodeDirent.
func decodeDirent(b []byte) (Ino, uint32, error) {
	d := decoder{b: b}
	d.version("dirent")
	ino := Ino(d.uvarint("dirent ino"))
	mode := d.uint32("dirent mode")
	if d.err == nil && (ino == 0 || mode&^syscall.S_IFMT != 0 || !validType(mode)) {
		d.fail("dirent value")
	}
	if err := d.done("dirent"); err != nil {
		return 0, 0, err
	}
	return ino, mode, nil
}

// encodeExtent encodes an extent value (the first block is in the key):
// version, uvarint count, length-prefixed object, uvarint slot and gen.
func encodeExtent(e Extent) []byte {
	b := make([]byte, 0, 16+len(e.Object))
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, e.Count)
	b = appendString(b, e.Object)
	b = binary.AppendUvarint(b, e.Slot)
	return binary.AppendUvarint(b, e.Gen)
}

// decodeExtent decodes an extent from its key and value, rejecting empty or
// out-of-range runs and extents of another inode.
func decodeExtent(ino Ino, key, val []byte) (Extent, error) {
	kino, block, err := decodeExtentKey(key)
	if err != nil {
		return Extent{}, err
	}
	if kino != ino {
		return Extent{}, fmt.Errorf("extent key of inode %d under %d: %w", kino, ino, ErrFormat)
	}
	d := decoder{b: val}
	d.version("extent")
	e := Extent{Block: block}
	e.Count = d.uvarint("extent count")
	e.Object = string(d.bytes("extent object"))
	e.Slot = d.uvarint("extent slot")
	e.Gen = d.uvarint("extent gen")
	if d.err == nil && (e.Count == 0 || e.Object == "" || e.Block >= MaxBlocks || e.Count > MaxBlocks-e.Block ||
		e.Slot >= MaxBlocks || e.Count > MaxBlocks-e.Slot) {
		d.fail("extent range")
	}
	if err := d.done("extent"); err != nil {
		return Extent{}, err
	}
	return e, nil
}

// encodeUint encodes a version byte and one uvarint (refcounts, the session
// number).
func encodeUint(v uint64) []byte {
	return binary.AppendUvarint([]byte{recordVersion}, v)
}

func decodeUint(b []byte) (uint64, error) {
	d := decoder{b: b}
	d.version("number")
	v := d.uvarint("number")
	if err := d.done("number"); err != nil {
		return 0, err
	}
	return v, nil
}

// decodeRefcount decodes a live-block count, which is never 0: an object
// whose count drops to 0 loses its key.
func decodeRefcount(b []byte) (uint64, error) {
	n, err := decodeUint(b)
	if err == nil && (n == 0 || n > MaxBlocks) {
		err = fmt.Errorf("refcount %d: %w", n, ErrFormat)
	}
	return n, err
}

// counters are the Stats totals, or a change to them.
type counters struct {
	inodes, bytes int64
}

func (c counters) isZero() bool { return c == counters{} }

// encodeCounters encodes the base or a delta: version, zigzag varint inodes,
// zigzag varint bytes.
func encodeCounters(c counters) []byte {
	b := []byte{recordVersion}
	b = binary.AppendVarint(b, c.inodes)
	return binary.AppendVarint(b, c.bytes)
}

func decodeCounters(b []byte) (counters, error) {
	d := decoder{b: b}
	d.version("counters")
	c := counters{inodes: d.varint("counters inodes"), bytes: d.varint("counters bytes")}
	if err := d.done("counters"); err != nil {
		return counters{}, err
	}
	return c, nil
}

// encodeFormat encodes the format record: the magic, then a uvarint version.
func encodeFormat(version uint64) []byte {
	return binary.AppendUvarint([]byte(formatMagic), version)
}

func decodeFormat(b []byte) (uint64, error) {
	if len(b) < len(formatMagic) || string(b[:len(formatMagic)]) != formatMagic {
		return 0, fmt.Errorf("format record: not a kmipfs metadata database: %w", ErrFormat)
	}
	d := decoder{b: b[len(formatMagic):]}
	v := d.uvarint("format version")
	if err := d.done("format"); err != nil {
		return 0, err
	}
	return v, nil
}
