package tests

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestRandomOps applies the same random writes, truncates, reads, fsyncs and reopens to a file on
// kmipfs and to a reference file on the plain disk, with remounts in between, and compares every
// read. The seed is printed; KMIPFS_SEED replays a run and KMIPFS_OPS sets the number of operations.
func TestRandomOps(t *testing.T) {
	seed := uint64(rand.Int64())
	if s := os.Getenv("KMIPFS_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	ops := 600
	if s := os.Getenv("KMIPFS_OPS"); s != "" {
		ops, _ = strconv.Atoi(s)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	t.Logf("seed %d, %d operations (KMIPFS_SEED=%d to replay)", seed, ops, seed)

	e := newEnv(t)
	b := e.bucket("fsx", keyA)
	path := filepath.Join(b, "file")
	refPath := filepath.Join(t.TempDir(), "reference")
	var log []string
	fail := func(format string, args ...any) {
		t.Helper()
		start := max(0, len(log)-30)
		t.Fatalf("seed %d: %s\nlast operations:\n%s", seed, fmt.Sprintf(format, args...), strings.Join(log[start:], "\n"))
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
	const maxSize = 600 << 10
	size := int64(0)
	for i := 0; i < ops; i++ {
		switch op := rng.IntN(100); {
		case op < 45: // write
			off := rng.Int64N(maxSize)
			n := 1 + rng.IntN(20000)
			if rng.IntN(4) == 0 {
				off -= off % 4096
				n = 4096 * (1 + rng.IntN(8))
			}
			data := make([]byte, n)
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			log = append(log, fmt.Sprintf("%d write off=%d len=%d", i, off, n))
			if _, err := f.WriteAt(data, off); err != nil {
				fail("write: %v", err)
			}
			ref.WriteAt(data, off)
			size = max(size, off+int64(n))
		case op < 75: // read
			off := rng.Int64N(maxSize)
			n := 1 + rng.IntN(70000)
			log = append(log, fmt.Sprintf("%d read off=%d len=%d", i, off, n))
			got, want := make([]byte, n), make([]byte, n)
			gn, _ := f.ReadAt(got, off)
			wn, _ := ref.ReadAt(want, off)
			if gn != wn || !bytes.Equal(got[:gn], want[:wn]) {
				fail("read off=%d len=%d: got %d bytes, want %d, equal=%v", off, n, gn, wn, bytes.Equal(got[:min(gn, wn)], want[:min(gn, wn)]))
			}
		case op < 85: // truncate
			n := rng.Int64N(maxSize)
			log = append(log, fmt.Sprintf("%d truncate %d", i, n))
			if err := f.Truncate(n); err != nil {
				fail("truncate: %v", err)
			}
			ref.Truncate(n)
			size = n
		case op < 90: // fsync
			log = append(log, fmt.Sprintf("%d fsync", i))
			if err := f.Sync(); err != nil {
				fail("fsync: %v", err)
			}
		case op < 97: // close and reopen
			log = append(log, fmt.Sprintf("%d reopen", i))
			if err := f.Close(); err != nil {
				fail("close: %v", err)
			}
			ref.Close()
			f, ref = open()
		default: // remount
			log = append(log, fmt.Sprintf("%d remount", i))
			if err := f.Close(); err != nil {
				fail("close: %v", err)
			}
			ref.Close()
			e.remount()
			f, ref = open()
		}
		st, err := f.Stat()
		if err != nil {
			fail("stat: %v", err)
		}
		if st.Size() != size {
			fail("size: got %d, want %d", st.Size(), size)
		}
	}
	f.Close()
	ref.Close()
	if !bytes.Equal(readFile(t, path), readFile(t, refPath)) {
		fail("final content differs")
	}
}
