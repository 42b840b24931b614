package fs

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"

	"github.com/kmipfs/kmipfs/meta"
)

func TestMergeRanges(t *testing.T) {
	got := mergeRanges([]meta.BlockRange{{Block: 10, Count: 2}, {Block: 0, Count: 3}, {Block: 3, Count: 1}, {Block: 11, Count: 5}, {Block: 30, Count: 1}})
	want := []meta.BlockRange{{Block: 0, Count: 4}, {Block: 10, Count: 6}, {Block: 30, Count: 1}}
	if !slices.Equal(got, want) {
		t.Fatalf("mergeRanges = %v, want %v", got, want)
	}
	if mergeRanges(nil) != nil {
		t.Fatal("mergeRanges(nil) != nil")
	}
}

// TestDataModel applies random writes, truncates, fallocates (all modes), flushes (some of them
// failing in the store), reopens and SEEK_DATA/SEEK_HOLE queries to a file's data state and to a
// byte slice, and checks after every step that the content agrees, that the in-memory extent map
// is the one meta has after every commit, and that what lseek reports as a hole reads as zeros.
func TestDataModel(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run("", func(t *testing.T) { dataModel(t, seed) })
	}
}

func dataModel(t *testing.T, seed uint64) {
	ctx := context.Background()
	tf := newTestFS(t)
	of := tf.newFile(t, "f")
	rng := rand.New(rand.NewPCG(seed, 99))
	var model []byte
	const space = 40 * blockSize
	grow := func(n int) {
		if n > len(model) {
			model = append(model, make([]byte, n-len(model))...)
		}
	}
	storeDown := false
	down := errors.New("store down")
	for step := 0; step < 400; step++ {
		var what string
		switch op := rng.IntN(100); {
		case op < 35:
			off, n := rng.IntN(space), 1+rng.IntN(3*blockSize)
			what = "write"
			d := make([]byte, n)
			for i := range d {
				d[i] = byte(rng.Uint32()) | 1
			}
			of.write(t, int64(off), d)
			grow(off + n)
			copy(model[off:], d)
		case op < 45:
			n := rng.IntN(space)
			what = "truncate"
			if err := of.truncate(ctx, uint64(n)); err != nil && !storeDown {
				t.Fatalf("step %d truncate: %v", step, err)
			}
			if n < len(model) {
				model = model[:n]
			} else {
				grow(n)
			}
		case op < 70:
			modes := []uint32{0, fallocKeepSize, fallocPunchHole | fallocKeepSize, fallocZeroRange, fallocZeroRange | fallocKeepSize}
			mode := modes[rng.IntN(len(modes))]
			off, n := rng.IntN(space), 1+rng.IntN(6*blockSize)
			what = "fallocate"
			of.mu.Lock()
			err := of.allocateLocked(ctx, uint64(off), uint64(off+n), mode)
			of.mu.Unlock()
			if err != nil && !storeDown {
				t.Fatalf("step %d fallocate: %v", step, err)
			}
			end := off + n
			if mode&(fallocPunchHole|fallocZeroRange) != 0 && off < len(model) {
				clear(model[off:min(end, len(model))])
			}
			if mode&fallocKeepSize == 0 {
				grow(end)
			}
		case op < 80:
			what = "flush"
			if err := of.flush(); err != nil && !storeDown {
				t.Fatalf("step %d flush: %v", step, err)
			}
		case op < 85:
			what = "store toggled"
			storeDown = !storeDown
			if storeDown {
				tf.store.SetFault(func(op, bucket, key string) error {
					if op == "put" {
						return down
					}
					return nil
				})
			} else {
				tf.store.SetFault(nil)
			}
		case op < 90:
			if storeDown {
				continue
			}
			what = "reopen"
			of = tf.reopen(t, of)
		default:
			what = "lseek"
			if len(model) == 0 {
				continue
			}
			n := &node{fsys: tf.FS, ino: of.ino}
			off := uint64(rng.IntN(len(model)))
			whence := []uint32{seekData, seekHole}[rng.IntN(2)]
			pos, errno := n.Lseek(ctx, nil, off, whence)
			switch {
			case whence == seekData && errno == syscall.ENXIO:
				pos = uint64(len(model))
			case errno != 0:
				t.Fatalf("step %d lseek(%d, %d): %v", step, off, whence, errno)
			case pos < off || pos > uint64(len(model)):
				t.Fatalf("step %d lseek(%d, %d) = %d outside [%d, %d]", step, off, whence, pos, off, len(model))
			}
			if whence == seekData && !bytes.Equal(model[off:pos], make([]byte, pos-off)) {
				t.Fatalf("step %d: SEEK_DATA from %d skipped data before %d", step, off, pos)
			}
			if whence == seekHole && pos < uint64(len(model)) && model[pos] != 0 {
				t.Fatalf("step %d: SEEK_HOLE from %d found a hole at %d that holds data", step, off, pos)
			}
		}
		got, err := of.readAll(t)
		if err != nil {
			t.Fatalf("step %d (%s): read: %v", step, what, err)
		}
		if !bytes.Equal(got, model) {
			t.Fatalf("step %d (%s): content differs (%d vs %d bytes)", step, what, len(got), len(model))
		}
		of.mu.Lock()
		clean := !of.hasDirtyLocked()
		exts := slices.Clone(of.extents)
		of.mu.Unlock()
		if clean {
			stored, err := tf.meta.Extents(ctx, of.ino)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(exts, stored) {
				t.Fatalf("step %d (%s): in-memory extent map\n %v\ndiffers from meta's\n %v", step, what, exts, stored)
			}
		}
	}
	tf.store.SetFault(nil)
	if err := of.flush(); err != nil {
		t.Fatal(err)
	}
	of = tf.reopen(t, of)
	if got, err := of.readAll(t); err != nil || !bytes.Equal(got, model) {
		t.Fatalf("after the last reopen: %v", err)
	}
	if problems, err := tf.meta.Check(ctx); err != nil || len(problems) > 0 {
		t.Fatalf("meta check: %v %v", problems, err)
	}
}
