package meta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"syscall"
	"testing"
)

var sampleInodes = []*Inode{
	{Ino: RootIno, Mode: syscall.S_IFDIR | 0o755, Nlink: 2},
	{Ino: 2, Parent: RootIno, Mode: syscall.S_IFDIR | 0o700, Uid: 1000, Gid: 1000, Nlink: 3, Size: 4096,
		Atime: -1, Mtime: 1 << 62, Ctime: 1_700_000_000_000_000_000, Bucket: "mybucket"},
	{Ino: 1 << 40, Mode: syscall.S_IFREG | 0o644, Uid: 1<<32 - 1, Gid: 5, Nlink: 1, Size: 1<<64 - 1,
		Bucket: "b", FileID: [16]byte{0xde, 0xad, 15: 0xff}, KeyID: "mybucketkey", KeyName: "pykmip-mybucketkey",
		WrappedKey: bytes.Repeat([]byte{0xab}, 60), Gen: 12345},
	{Ino: 7, Mode: syscall.S_IFREG | 0o600, Nlink: 0, Bucket: "b"},
	{Ino: 8, Mode: syscall.S_IFLNK | 0o777, Nlink: 1, Size: 9, Bucket: "b", Target: "../target"},
	{Ino: 9, Mode: syscall.S_IFCHR | 0o600, Nlink: 1, Rdev: 0x0103, Bucket: "b"},
}

func TestInodeRoundTrip(t *testing.T) {
	for _, in := range sampleInodes {
		got, err := decodeInode(encodeInode(in))
		if err != nil {
			t.Fatalf("decode %+v: %v", in, err)
		}
		if !reflect.DeepEqual(got, in) {
			t.Errorf("round trip\n got %+v\nwant %+v", got, in)
		}
	}
}

// TestDecodeTruncated cuts every valid record at every length: each prefix
// must fail with ErrFormat, as must a trailing byte or another version.
func TestDecodeTruncated(t *testing.T) {
	type codec struct {
		name   string
		enc    []byte
		decode func([]byte) error
	}
	var codecs []codec
	for _, in := range sampleInodes {
		codecs = append(codecs, codec{"inode", encodeInode(in), func(b []byte) error { _, err := decodeInode(b); return err }})
	}
	ek := extentKey(5, 100)
	codecs = append(codecs,
		codec{"dirent", encodeDirent(5, syscall.S_IFREG|0o644), func(b []byte) error { _, _, err := decodeDirent(b); return err }},
		codec{"extent", encodeExtent(Extent{Count: 3, Object: "0123/0001", Slot: 2, Gen: 9}),
			func(b []byte) error { _, err := decodeExtent(5, ek, b); return err }},
		codec{"refcount", encodeUint(300), func(b []byte) error { _, err := decodeRefcount(b); return err }},
		codec{"counters", encodeCounters(counters{inodes: -5, bytes: 1 << 50}), func(b []byte) error { _, err := decodeCounters(b); return err }},
		codec{"format", encodeFormat(formatVersion), func(b []byte) error { _, err := decodeFormat(b); return err }},
	)
	for _, c := range codecs {
		if err := c.decode(c.enc); err != nil {
			t.Fatalf("%s: valid record rejected: %v", c.name, err)
		}
		for n := 0; n < len(c.enc); n++ {
			if err := c.decode(c.enc[:n]); !errors.Is(err, ErrFormat) {
				t.Errorf("%s cut to %d of %d bytes: %v", c.name, n, len(c.enc), err)
			}
		}
		if err := c.decode(append(append([]byte(nil), c.enc...), 0)); !errors.Is(err, ErrFormat) {
			t.Errorf("%s with a trailing byte: %v", c.name, err)
		}
		if c.name != "format" {
			bad := append([]byte(nil), c.enc...)
			bad[0] = recordVersion + 1
			if err := c.decode(bad); !errors.Is(err, ErrFormat) {
				t.Errorf("%s with version %d: %v", c.name, bad[0], err)
			}
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	reg := encodeInode(sampleInodes[2])
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"inode flags", func() error { b := append([]byte(nil), reg...); b[1] |= 0x80; _, err := decodeInode(b); return err }()},
		{"inode without type", func() error { _, err := decodeInode(encodeInode(&Inode{Ino: 3, Mode: 0o644})); return err }()},
		{"inode number 0", func() error { _, err := decodeInode(encodeInode(&Inode{Mode: syscall.S_IFDIR})); return err }()},
		{"file fields on a directory", func() error {
			b := encodeInode(&Inode{Ino: 3, Mode: syscall.S_IFDIR})
			b[1] = inodeHasFile
			b = append(b, make([]byte, 16+4)...)
			_, err := decodeInode(b)
			return err
		}()},
		{"parent on a file", func() error {
			_, err := decodeInode(encodeInode(&Inode{Ino: 3, Parent: 1, Mode: syscall.S_IFREG}))
			return err
		}()},
		{"mode above 32 bits", func() error {
			// version, flags, ino 3, parent 0, then mode S_IFDIR | 1<<32.
			b := []byte{recordVersion, 0, 3, 0}
			b = binary.AppendUvarint(b, 1<<32|syscall.S_IFDIR)
			b = append(b, encodeInode(&Inode{Ino: 3, Mode: syscall.S_IFDIR})[7:]...)
			if _, err := decodeInode(append(b[:4:4], encodeInode(&Inode{Ino: 3, Mode: syscall.S_IFDIR})[4:]...)); err != nil {
				return fmt.Errorf("control record rejected: %v", err)
			}
			_, err := decodeInode(b)
			return err
		}()},
		{"huge string length", func() error {
			b := encodeInode(&Inode{Ino: 3, Mode: syscall.S_IFDIR})
			b = b[:len(b)-2] // drop the empty bucket and target
			b = append(b, 0xff, 0xff, 0xff, 0xff, 0x0f)
			_, err := decodeInode(b)
			return err
		}()},
		{"dirent ino 0", func() error { _, _, err := decodeDirent(encodeDirent(0, syscall.S_IFREG)); return err }()},
		{"dirent permission bits", func() error {
			_, _, err := decodeDirent([]byte{recordVersion, 5, 0xa4, 0x83, 0x02})
			return err
		}()},
		{"dirent no type", func() error { _, _, err := decodeDirent([]byte{recordVersion, 5, 0}); return err }()},
		{"extent count 0", func() error {
			_, err := decodeExtent(5, extentKey(5, 0), encodeExtent(Extent{Object: "x"}))
			return err
		}()},
		{"extent no object", func() error { _, err := decodeExtent(5, extentKey(5, 0), encodeExtent(Extent{Count: 1})); return err }()},
		{"extent past MaxBlocks", func() error {
			_, err := decodeExtent(5, extentKey(5, MaxBlocks-1), encodeExtent(Extent{Count: 2, Object: "x"}))
			return err
		}()},
		{"extent slot past MaxBlocks", func() error {
			_, err := decodeExtent(5, extentKey(5, 0), encodeExtent(Extent{Count: 2, Object: "x", Slot: MaxBlocks - 1}))
			return err
		}()},
		{"extent of another inode", func() error {
			_, err := decodeExtent(5, extentKey(6, 0), encodeExtent(Extent{Count: 1, Object: "x"}))
			return err
		}()},
		{"extent short key", func() error {
			_, err := decodeExtent(5, []byte{prefixExtent, 1}, encodeExtent(Extent{Count: 1, Object: "x"}))
			return err
		}()},
		{"refcount 0", func() error { _, err := decodeRefcount(encodeUint(0)); return err }()},
		{"format magic", func() error { _, err := decodeFormat([]byte("other-db\x01")); return err }()},
		{"object key short", func() error { _, err := decodeObjectKey(prefixGC, []byte{prefixGC, 0}); return err }()},
		{"object key bucket length", func() error { _, err := decodeObjectKey(prefixGC, []byte{prefixGC, 0, 9, 'a'}); return err }()},
		{"object key prefix", func() error {
			_, err := decodeObjectKey(prefixGC, objectKey(prefixRefcount, ObjectRef{"b", "k"}))
			return err
		}()},
		{"ino key length", func() error { _, err := decodeInoKey(prefixOrphan, []byte{prefixOrphan, 1, 2}); return err }()},
	} {
		if !errors.Is(tc.err, ErrFormat) {
			t.Errorf("%s: got %v, want ErrFormat", tc.name, tc.err)
		}
	}
}

func TestObjectKeyRoundTrip(t *testing.T) {
	for _, ref := range []ObjectRef{{"b", "0011/0002"}, {"", ""}, {"bucket-with-long-name", "k\x00ey"}} {
		for _, p := range []byte{prefixRefcount, prefixGC} {
			got, err := decodeObjectKey(p, objectKey(p, ref))
			if err != nil || got != ref {
				t.Errorf("object key %v: got %v, %v", ref, got, err)
			}
		}
	}
	// Two refs whose concatenation is equal must not share a key.
	if bytes.Equal(gcKey(ObjectRef{"ab", "c"}), gcKey(ObjectRef{"a", "bc"})) {
		t.Error("object keys are ambiguous")
	}
}

func TestExtentKeysSortByBlock(t *testing.T) {
	prev := extentKey(3, 0)
	for _, b := range []uint64{1, 255, 256, 1 << 20, MaxBlocks - 1} {
		k := extentKey(3, b)
		if bytes.Compare(prev, k) >= 0 {
			t.Errorf("extent key of block %d does not sort after its predecessor", b)
		}
		prev = k
	}
	if bytes.Compare(extentKey(3, MaxBlocks-1), extentKey(4, 0)) >= 0 {
		t.Error("extent keys of inode 3 sort after inode 4")
	}
}

// The fuzz targets feed arbitrary bytes to every decoder: each must return
// an error or a value that survives a round trip, and never panic. Seeds
// are in testdata/fuzz/ and below.

func FuzzDecodeInode(f *testing.F) {
	for _, in := range sampleInodes {
		f.Add(encodeInode(in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := decodeInode(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v is not ErrFormat", err)
			}
			return
		}
		again, err := decodeInode(encodeInode(in))
		if err != nil {
			t.Fatalf("re-encoded inode rejected: %v", err)
		}
		if !reflect.DeepEqual(again, in) {
			t.Fatalf("round trip changed %+v to %+v", in, again)
		}
	})
}

func FuzzDecodeDirent(f *testing.F) {
	f.Add(encodeDirent(2, syscall.S_IFDIR))
	f.Add(encodeDirent(1<<60, syscall.S_IFSOCK))
	f.Fuzz(func(t *testing.T, b []byte) {
		ino, mode, err := decodeDirent(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v is not ErrFormat", err)
			}
			return
		}
		ino2, mode2, err := decodeDirent(encodeDirent(ino, mode))
		if err != nil || ino2 != ino || mode2 != mode {
			t.Fatalf("round trip of %d %#o: %d %#o %v", ino, mode, ino2, mode2, err)
		}
	})
}

func FuzzDecodeExtent(f *testing.F) {
	f.Add(extentKey(5, 0), encodeExtent(Extent{Count: 10, Object: "00ff/0001", Gen: 1}))
	f.Add(extentKey(5, 1<<40), encodeExtent(Extent{Count: 1, Object: "x", Slot: 7, Gen: 1 << 63}))
	f.Fuzz(func(t *testing.T, key, val []byte) {
		e, err := decodeExtent(5, key, val)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v is not ErrFormat", err)
			}
			return
		}
		if e.Count == 0 || e.Block+e.Count > MaxBlocks || e.Slot+e.Count > MaxBlocks {
			t.Fatalf("accepted bad extent %+v", e)
		}
		again, err := decodeExtent(5, extentKey(5, e.Block), encodeExtent(e))
		if err != nil || again != e {
			t.Fatalf("round trip of %+v: %+v, %v", e, again, err)
		}
	})
}

func FuzzDecodeCounters(f *testing.F) {
	f.Add(encodeCounters(counters{inodes: 1}))
	f.Add(encodeCounters(counters{inodes: -3, bytes: -1 << 62}))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCounters(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v is not ErrFormat", err)
			}
			return
		}
		if again, err := decodeCounters(encodeCounters(c)); err != nil || again != c {
			t.Fatalf("round trip of %+v: %+v, %v", c, again, err)
		}
	})
}

func FuzzDecodeRefcount(f *testing.F) {
	f.Add(encodeUint(1))
	f.Add(encodeUint(MaxBlocks))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := decodeRefcount(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v is not ErrFormat", err)
			}
			return
		}
		if n == 0 || n > MaxBlocks {
			t.Fatalf("accepted refcount %d", n)
		}
	})
}

func FuzzDecodeObjectKey(f *testing.F) {
	f.Add(gcKey(ObjectRef{"bucket", "00112233/0000000000000001"}))
	f.Add(gcKey(ObjectRef{}))
	f.Fuzz(func(t *testing.T, k []byte) {
		ref, err := decodeObjectKey(prefixGC, k)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v is not ErrFormat", err)
			}
			return
		}
		if !bytes.Equal(gcKey(ref), k) {
			t.Fatalf("key %x decoded to %v, which encodes differently", k, ref)
		}
	})
}

func FuzzDecodeFormat(f *testing.F) {
	f.Add(encodeFormat(formatVersion))
	f.Add(encodeFormat(1 << 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeFormat(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v is not ErrFormat", err)
			}
			return
		}
		if again, err := decodeFormat(encodeFormat(v)); err != nil || again != v {
			t.Fatalf("round trip of %d: %d, %v", v, again, err)
		}
	})
}
