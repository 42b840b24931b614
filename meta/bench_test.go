package meta_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/kmipfs/kmipfs/meta"
)

// The benchmarks run on a disk database (Options{} as kmipfs mounts it: no SyncWrites), because
// that is what a mount pays for; Badger's memtable absorbs most of it, so they measure meta's own
// encoding, transaction and iteration work rather than the disk.

// fragExtents is the size of the fragmented extent map: a file written by that many random 4 KiB
// writes, each flushed on its own, about what a SQLite database or a VM image collects before
// compaction.
const fragExtents = 10000

// benchDB opens a fresh disk database for one benchmark, with a bucket directory, and closes it
// when the benchmark ends. Badger warnings fail the benchmark.
func benchDB(b *testing.B) (*meta.DB, *meta.Inode) {
	b.Helper()
	db, err := meta.Open(b.TempDir(), meta.Options{Logger: slog.New(benchHandler{b})})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() {
		if err := db.Close(); err != nil {
			b.Errorf("Close: %v", err)
		}
	})
	bucket, err := db.Create(b.Context(), meta.RootIno, "bench", meta.Inode{Mode: syscall.S_IFDIR | 0o755, Ctime: t0})
	if err != nil {
		b.Fatalf("create bucket: %v", err)
	}
	return db, bucket
}

// benchHandler fails the benchmark on any log record at Warn or above, as failHandler does for
// tests.
type benchHandler struct{ b *testing.B }

var _ slog.Handler = benchHandler{}

func (h benchHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h benchHandler) Handle(_ context.Context, r slog.Record) error {
	h.b.Errorf("unexpected log at %v: %s", r.Level, r.Message)
	return nil
}
func (h benchHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h benchHandler) WithGroup(string) slog.Handler      { return h }

// fileInode is what fs passes to Create for a new regular file: a file id and a wrapped key of the
// real length, so the encoded record has its real size.
func fileInode() meta.Inode {
	return meta.Inode{
		Mode: syscall.S_IFREG | 0o644, Ctime: t0, Mtime: t0, Atime: t0, Uid: 1000, Gid: 1000,
		FileID: [16]byte{1, 2, 3}, KeyID: "mybucketkey", KeyName: "pykmip-mybucketkey",
		WrappedKey: make([]byte, 61),
	}
}

// benchFiles creates n files named f0 .. f(n-1) in dir.
func benchFiles(b *testing.B, db *meta.DB, dir meta.Ino, n int) []*meta.Inode {
	b.Helper()
	out := make([]*meta.Inode, n)
	for i := range n {
		in, err := db.Create(b.Context(), dir, fmt.Sprintf("f%d", i), fileInode())
		if err != nil {
			b.Fatalf("create f%d: %v", i, err)
		}
		out[i] = in
	}
	return out
}

// fragmented creates a file whose extent map has fragExtents one-block extents: the even blocks
// 0, 2, ..., 2*(fragExtents-1), so no two extents merge. It returns the file and its map.
func fragmented(b *testing.B, db *meta.DB, dir meta.Ino) (*meta.Inode, []meta.Extent) {
	b.Helper()
	f := benchFiles(b, db, dir, 1)[0]
	const perCommit = 5000 // below the ErrTooBig limit of one transaction
	for part := 0; part < fragExtents; part += perCommit {
		bl := make([]uint64, 0, perCommit)
		for i := part; i < min(part+perCommit, fragExtents); i++ {
			bl = append(bl, 2*uint64(i))
		}
		w := meta.Write{Object: fmt.Sprintf("frag-%d", part), Gen: uint64(part/perCommit + 1), Blocks: bl}
		if _, _, err := db.CommitWrite(b.Context(), f.Ino, w, nil); err != nil {
			b.Fatalf("CommitWrite: %v", err)
		}
	}
	exts, err := db.Extents(b.Context(), f.Ino)
	if err != nil {
		b.Fatal(err)
	}
	if len(exts) != fragExtents {
		b.Fatalf("fragmented file has %d extents, want %d", len(exts), fragExtents)
	}
	return f, exts
}

// BenchmarkCreate is the meta side of creat(2): one transaction that allocates an inode and adds
// its entry to a growing directory.
func BenchmarkCreate(b *testing.B) {
	db, bucket := benchDB(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := db.Create(b.Context(), bucket.Ino, fmt.Sprintf("f%d", i), fileInode()); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkLookup looks up random names in a directory of 1000 files, as a path walk does.
func BenchmarkLookup(b *testing.B) {
	db, bucket := benchDB(b)
	files := benchFiles(b, db, bucket.Ino, 1000)
	r := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		i := r.IntN(len(files))
		in, err := db.Lookup(b.Context(), bucket.Ino, fmt.Sprintf("f%d", i))
		if err != nil {
			b.Fatal(err)
		}
		if in.Ino != files[i].Ino {
			b.Fatalf("Lookup f%d: ino %d, want %d", i, in.Ino, files[i].Ino)
		}
	}
}

// BenchmarkGet reads random inodes by number, as getattr does.
func BenchmarkGet(b *testing.B) {
	db, bucket := benchDB(b)
	files := benchFiles(b, db, bucket.Ino, 1000)
	r := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		want := files[r.IntN(len(files))]
		in, err := db.Get(b.Context(), want.Ino)
		if err != nil {
			b.Fatal(err)
		}
		if in.Ino != want.Ino {
			b.Fatalf("Get %d: got ino %d", want.Ino, in.Ino)
		}
	}
}

// BenchmarkReadDir1000 lists a directory of 1000 files, as ls does.
func BenchmarkReadDir1000(b *testing.B) {
	db, bucket := benchDB(b)
	benchFiles(b, db, bucket.Ino, 1000)
	b.ReportAllocs()
	for b.Loop() {
		ents, err := db.ReadDir(b.Context(), bucket.Ino)
		if err != nil {
			b.Fatal(err)
		}
		if len(ents) != 1000 {
			b.Fatalf("ReadDir: %d entries, want 1000", len(ents))
		}
	}
}

// BenchmarkCommitWrite commits a flush of 1, 256 (1 MiB) and 4096 (16 MiB) contiguous blocks
// over the same range of a file, so every commit supersedes the previous object and queues it for
// GC (DoneGC runs outside the timer, as fs's background GC would). The fragmented case writes one
// random block of a file with fragExtents extents: the cost of a small write to a large map.
//
// The time per commit grows with the number of commits before it, because Badger's iterators
// step over the old versions of the rewritten extent key that are still in the memtables
// (docs/PERFORMANCE.md), so compare runs only at the same -benchtime.
func BenchmarkCommitWrite(b *testing.B) {
	for _, n := range []uint64{1, 256, 4096} {
		b.Run(fmt.Sprintf("blocks=%d", n), func(b *testing.B) {
			db, bucket := benchDB(b)
			f := benchFiles(b, db, bucket.Ino, 1)[0]
			bl := blocks(0, n)
			b.SetBytes(int64(n) * meta.BlockSize)
			b.ReportAllocs()
			gen := uint64(0)
			for b.Loop() {
				gen++
				w := meta.Write{Object: fmt.Sprintf("%x/%d", f.FileID, gen), Gen: gen, Blocks: bl}
				_, freed, err := db.CommitWrite(b.Context(), f.Ino, w, setSize(n*meta.BlockSize))
				if err != nil {
					b.Fatal(err)
				}
				if gen > 1 && len(freed) != 1 {
					b.Fatalf("commit %d freed %v, want the previous object", gen, freed)
				}
				b.StopTimer()
				if err := db.DoneGC(b.Context(), freed); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
	b.Run("fragmented", func(b *testing.B) {
		db, bucket := benchDB(b)
		f, _ := fragmented(b, db, bucket.Ino)
		r := rand.New(rand.NewPCG(1, 2))
		b.SetBytes(meta.BlockSize)
		b.ReportAllocs()
		gen := uint64(100)
		for b.Loop() {
			gen++
			w := meta.Write{Object: fmt.Sprintf("%x/%d", f.FileID, gen), Gen: gen, Blocks: []uint64{r.Uint64N(2 * fragExtents)}}
			if _, _, err := db.CommitWrite(b.Context(), f.Ino, w, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// setSize is the fn of a CommitWrite that grows the file to size, as fs's flush does.
func setSize(size uint64) func(*meta.Inode) error {
	return func(in *meta.Inode) error {
		in.Size = max(in.Size, size)
		in.Mtime, in.Ctime = t0, t0
		return nil
	}
}

// BenchmarkExtentsIn looks up the extents of a read of 1, 32 (128 KiB) and 256 (1 MiB) blocks at
// random offsets of a file with fragExtents extents, as the read path does for every cache miss.
func BenchmarkExtentsIn(b *testing.B) {
	db, bucket := benchDB(b)
	f, _ := fragmented(b, db, bucket.Ino)
	for _, n := range []uint64{1, 32, 256} {
		b.Run(fmt.Sprintf("blocks=%d", n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			b.ReportAllocs()
			for b.Loop() {
				start := r.Uint64N(2*fragExtents - n)
				exts, err := db.ExtentsIn(b.Context(), f.Ino, start, n)
				if err != nil {
					b.Fatal(err)
				}
				// Even blocks are mapped, odd ones are holes: n blocks from start overlap
				// about n/2 extents.
				if want := (n + 1 - start%2) / 2; uint64(len(exts)) != want {
					b.Fatalf("ExtentsIn(%d, %d): %d extents, want %d", start, n, len(exts), want)
				}
			}
		})
	}
}

// BenchmarkApplyWrite updates an in-memory map of fragExtents extents with a write of 1 or 256
// blocks at a random offset, as fs does after each commit instead of reloading the map.
func BenchmarkApplyWrite(b *testing.B) {
	db, bucket := benchDB(b)
	_, exts := fragmented(b, db, bucket.Ino)
	for _, n := range []uint64{1, 256} {
		b.Run(fmt.Sprintf("blocks=%d", n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			b.ReportAllocs()
			for b.Loop() {
				start := r.Uint64N(2*fragExtents - n)
				// ApplyWrite may change its input in place, as it does for fs: each write lands
				// on the map the previous ones left.
				exts = meta.ApplyWrite(exts, meta.Write{Object: "new", Gen: 1000, Blocks: blocks(start, start+n)})
				out := exts
				if len(out) == 0 {
					b.Fatal("ApplyWrite returned an empty map")
				}
			}
		})
	}
}
