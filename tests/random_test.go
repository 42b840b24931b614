package tests

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRandomOps is the randomized operation checker (in the spirit of fsx): it applies the same
// random operations to a file on kmipfs and to a reference file on the plain disk and compares
// every read. Operations: writes and reads at random offsets and lengths (some block-aligned),
// O_APPEND writes, truncate and ftruncate, the four fallocate modes, reads and writes through a
// shared mapping (made by a helper process), SEEK_DATA/SEEK_HOLE, fsync, reads through a second
// descriptor, close and reopen, and remounts of the whole filesystem. The size is checked after
// every operation and the whole content every 500 operations and at the end.
//
// The seed is printed; KMIPFS_SEED replays a run and KMIPFS_OPS sets the number of operations
// (3000 by default; make fsx-long runs 100,000). On failure the test prints the seed and the last
// operations, and writes the whole operation log to a file it names.
func TestRandomOps(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KMIPFS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("KMIPFS_SEED: %v", err)
		}
	}
	ops := 3000
	if s := os.Getenv("KMIPFS_OPS"); s != "" {
		var err error
		if ops, err = strconv.Atoi(s); err != nil {
			t.Fatalf("KMIPFS_OPS: %v", err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	t.Logf("seed %d, %d operations (KMIPFS_SEED=%d KMIPFS_OPS=%d to replay)", seed, ops, seed, ops)

	e := newEnv(t)
	b := e.bucket("fsx", keyA)
	path := filepath.Join(b, "file")
	refPath := filepath.Join(t.TempDir(), "reference")
	var log []string
	logf := func(format string, args ...any) { log = append(log, fmt.Sprintf(format, args...)) }
	fail := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		full := filepath.Join(os.TempDir(), fmt.Sprintf("kmipfs-fsx-%d.log", seed))
		os.WriteFile(full, []byte(strings.Join(log, "\n")+"\n"), 0o644)
		start := max(0, len(log)-40)
		t.Fatalf("seed %d: %s\nlast operations (all %d in %s):\n%s", seed, msg, len(log), full, strings.Join(log[start:], "\n"))
	}
	open := func() (*os.File, *os.File) {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			fail("open: %v", err)
		}
		r, err := os.OpenFile(refPath, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			fail("open reference: %v", err)
		}
		return f, r
	}
	f, ref := open()
	defer func() { f.Close(); ref.Close() }() // f and ref change at every reopen
	m := startMmapper(t, path)
	const maxSize = 600 << 10
	size := int64(0)
	randData := func(n int) []byte {
		d := make([]byte, n)
		for j := 0; j+8 <= n; j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8; k++ {
				d[j+k] = byte(v >> (8 * k))
			}
		}
		for j := n &^ 7; j < n; j++ {
			d[j] = byte(rng.Uint32())
		}
		return d
	}
	// compare checks got, what kmipfs returned for n bytes at off, against the reference.
	compare := func(what string, off int64, n int, got []byte, gerr error) {
		t.Helper()
		want := make([]byte, n)
		wn, _ := ref.ReadAt(want, off)
		want = want[:wn]
		if gerr != nil && len(got) != len(want) {
			fail("%s off=%d len=%d: %v", what, off, n, gerr)
		}
		if !bytes.Equal(got, want) {
			i := 0
			for i < min(len(got), len(want)) && got[i] == want[i] {
				i++
			}
			fail("%s off=%d: got %d bytes, want %d; first difference at %d", what, off, len(got), len(want), off+int64(i))
		}
	}
	fullCompare := func(stage string) {
		t.Helper()
		got, err := os.ReadFile(path)
		if err != nil {
			fail("%s: read whole file: %v", stage, err)
		}
		want, _ := os.ReadFile(refPath)
		if !bytes.Equal(got, want) {
			fail("%s: whole content differs (%d vs %d bytes)", stage, len(got), len(want))
		}
	}
	start := time.Now()
	counts := map[string]int{}
	for i := 0; i < ops; i++ {
		var name string
		switch op := rng.IntN(100); {
		case op < 30: // write
			name = "write"
			off := rng.Int64N(maxSize)
			n := 1 + rng.IntN(20000)
			if rng.IntN(4) == 0 {
				off -= off % 4096
				n = 4096 * (1 + rng.IntN(8))
			}
			d := randData(n)
			logf("%d write off=%d len=%d", i, off, n)
			if _, err := f.WriteAt(d, off); err != nil {
				fail("write: %v", err)
			}
			ref.WriteAt(d, off)
			size = max(size, off+int64(n))
		case op < 33: // O_APPEND write through its own descriptor
			name = "append"
			n := 1 + rng.IntN(9000)
			d := randData(n)
			logf("%d append len=%d", i, n)
			a, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				fail("open O_APPEND: %v", err)
			}
			if _, err := a.Write(d); err != nil {
				fail("append: %v", err)
			}
			if err := a.Close(); err != nil {
				fail("close after append: %v", err)
			}
			ref.WriteAt(d, size)
			size += int64(n)
		case op < 53: // read
			name = "read"
			off := rng.Int64N(maxSize)
			n := 1 + rng.IntN(70000)
			logf("%d read off=%d len=%d", i, off, n)
			got := make([]byte, n)
			gn, err := f.ReadAt(got, off)
			compare("read", off, n, got[:gn], err)
		case op < 57: // read through a second descriptor
			name = "read2"
			off := rng.Int64N(max(size, 1))
			n := 1 + rng.IntN(70000)
			logf("%d read-other-fd off=%d len=%d", i, off, n)
			g, err := os.Open(path)
			if err != nil {
				fail("open second descriptor: %v", err)
			}
			got := make([]byte, n)
			gn, err := g.ReadAt(got, off)
			g.Close()
			compare("read through a second descriptor", off, n, got[:gn], err)
		case op < 64: // truncate
			name = "truncate"
			n := rng.Int64N(maxSize)
			byPath := rng.IntN(3) == 0
			logf("%d truncate %d (by path %v)", i, n, byPath)
			var err error
			if byPath {
				err = os.Truncate(path, n)
			} else {
				err = f.Truncate(n)
			}
			if err != nil {
				fail("truncate: %v", err)
			}
			ref.Truncate(n)
			size = n
		case op < 72: // fallocate
			modes := []uint32{0, fallocKeepSize, fallocPunchHole | fallocKeepSize, fallocZeroRange, fallocZeroRange | fallocKeepSize}
			mode := modes[rng.IntN(len(modes))]
			name = "fallocate-" + strconv.Itoa(int(mode))
			off := rng.Int64N(maxSize)
			n := 1 + rng.Int64N(40000)
			if rng.IntN(3) == 0 {
				off -= off % 4096
				n = 4096 * (1 + rng.Int64N(8))
			}
			logf("%d fallocate mode=%#x off=%d len=%d", i, mode, off, n)
			if err := syscall.Fallocate(int(f.Fd()), mode, off, n); err != nil {
				fail("fallocate: %v", err)
			}
			if err := syscall.Fallocate(int(ref.Fd()), mode, off, n); err != nil {
				fail("fallocate on the reference: %v", err)
			}
			if mode&fallocKeepSize == 0 {
				size = max(size, off+n)
			}
		case op < 78: // mmap read
			name = "mmap-read"
			if size == 0 {
				continue
			}
			off := rng.Int64N(size)
			n := 1 + rng.IntN(int(min(size-off, 70000)))
			logf("%d mmap-read off=%d len=%d", i, off, n)
			got, err := m.read(off, n)
			if err != nil {
				fail("mmap read: %v", err)
			}
			compare("mmap read", off, n, got, nil)
		case op < 85: // mmap write
			if size == 0 {
				continue
			}
			flags := []byte{0, mmapSync, mmapAsync, mmapCloseFd}[rng.IntN(4)]
			name = "mmap-write-" + strconv.Itoa(int(flags))
			off := rng.Int64N(size)
			n := 1 + rng.IntN(int(min(size-off, 20000)))
			d := randData(n)
			logf("%d mmap-write off=%d len=%d flags=%d", i, off, n, flags)
			if err := m.write(off, d, flags); err != nil {
				fail("mmap write: %v", err)
			}
			ref.WriteAt(d, off)
		case op < 88: // SEEK_DATA / SEEK_HOLE: what they report must agree with the content
			name = "seek"
			if size == 0 {
				continue
			}
			off := rng.Int64N(size)
			whence := []int{seekData, seekHole}[rng.IntN(2)]
			logf("%d lseek off=%d whence=%d", i, off, whence)
			pos, err := syscall.Seek(int(f.Fd()), off, whence)
			switch {
			case whence == seekData && err == syscall.ENXIO:
				pos = size
			case err != nil:
				fail("lseek: %v", err)
			case pos < off || pos > size:
				fail("lseek(%d, %d) = %d outside [%d, %d]", off, whence, pos, off, size)
			}
			if whence == seekData {
				// Everything skipped over is a hole.
				compare("bytes skipped by SEEK_DATA", off, int(pos-off), make([]byte, pos-off), nil)
			} else if pos < size {
				// A hole starts at pos: at least up to the next block boundary it is zeros.
				end := min(size, (pos/4096+1)*4096)
				compare("hole found by SEEK_HOLE", pos, int(end-pos), make([]byte, end-pos), nil)
			}
		case op < 92: // fsync
			name = "fsync"
			logf("%d fsync", i)
			if err := f.Sync(); err != nil {
				fail("fsync: %v", err)
			}
		case op < 98: // close and reopen
			name = "reopen"
			logf("%d reopen", i)
			if err := f.Close(); err != nil {
				fail("close: %v", err)
			}
			ref.Close()
			f, ref = open()
		default: // remount
			name = "remount"
			logf("%d remount", i)
			if err := f.Close(); err != nil {
				fail("close: %v", err)
			}
			ref.Close()
			e.remount()
			f, ref = open()
		}
		counts[name]++
		st, err := f.Stat()
		if err != nil {
			fail("stat: %v", err)
		}
		if st.Size() != size {
			fail("size: got %d, want %d", st.Size(), size)
		}
		if i%500 == 499 {
			fullCompare(fmt.Sprintf("after operation %d", i))
		}
	}
	f.Close()
	ref.Close()
	fullCompare("at the end")
	m.stop()
	e.remount()
	fullCompare("after the final remount")
	checkMeta(t, e)
	elapsed := time.Since(start)
	t.Logf("%d operations in %v (%.0f/s): %v", ops, elapsed.Round(time.Millisecond), float64(ops)/elapsed.Seconds(), counts)
}
