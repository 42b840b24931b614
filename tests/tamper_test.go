package tests

// The tamper matrix: the object store is untrusted, so every change it can make to the objects of
// a mounted filesystem must read as EIO, never as wrong bytes, with one log line per damaged block
// naming the bucket, the file's path and the block.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/kmipfs/kmipfs/crypt"
)

// tamperBlocks is the size of every victim file, in blocks.
const tamperBlocks = 6

// tamperCase is one change the store makes to the object of a file.
type tamperCase struct {
	name string
	// tamper changes the object file obj of the victim; other is the object of another file of
	// the same size and bucket, old an older object of the victim (for the replay).
	tamper func(t *testing.T, obj, other, old string)
	// bad are the blocks that must read as EIO; the others must read back exactly.
	bad []int
	// overwrite: the victim is written twice, so that old names its first object.
	overwrite bool
}

func tamperMatrix() []tamperCase {
	edit := func(t *testing.T, path string, f func([]byte) []byte) {
		t.Helper()
		writeFile(t, path, f(readFile(t, path)))
	}
	slot := func(b []byte, i int) []byte { return b[i*crypt.CipherBS : (i+1)*crypt.CipherBS] }
	all := []int{0, 1, 2, 3, 4, 5}
	return []tamperCase{
		{name: "flipped-bit", bad: []int{2}, tamper: func(t *testing.T, obj, _, _ string) {
			edit(t, obj, func(b []byte) []byte { slot(b, 2)[crypt.CipherBS/2] ^= 0x10; return b })
		}},
		{name: "flipped-nonce", bad: []int{4}, tamper: func(t *testing.T, obj, _, _ string) {
			edit(t, obj, func(b []byte) []byte { slot(b, 4)[0] ^= 0x01; return b })
		}},
		{name: "flipped-tag", bad: []int{5}, tamper: func(t *testing.T, obj, _, _ string) {
			edit(t, obj, func(b []byte) []byte { slot(b, 5)[crypt.CipherBS-1] ^= 0x80; return b })
		}},
		{name: "blocks-swapped", bad: []int{1, 3}, tamper: func(t *testing.T, obj, _, _ string) {
			edit(t, obj, func(b []byte) []byte {
				s1 := bytes.Clone(slot(b, 1))
				copy(slot(b, 1), slot(b, 3))
				copy(slot(b, 3), s1)
				return b
			})
		}},
		{name: "object-of-another-file", bad: all, tamper: func(t *testing.T, obj, other, _ string) {
			writeFile(t, obj, readFile(t, other))
		}},
		{name: "replayed-old-object", bad: all, overwrite: true, tamper: func(t *testing.T, obj, _, old string) {
			writeFile(t, obj, readFile(t, old))
		}},
		{name: "truncated-object", bad: []int{3, 4, 5}, tamper: func(t *testing.T, obj, _, _ string) {
			edit(t, obj, func(b []byte) []byte { return b[:3*crypt.CipherBS+crypt.CipherBS/2] })
		}},
		{name: "emptied-object", bad: all, tamper: func(t *testing.T, obj, _, _ string) {
			writeFile(t, obj, nil)
		}},
		{name: "deleted-object", bad: all, tamper: func(t *testing.T, obj, _, _ string) {
			if err := os.Remove(obj); err != nil {
				t.Fatal(err)
			}
		}},
	}
}

// TestTamperMatrix runs every case of tamperMatrix on its own file of one mount: write the files,
// unmount, change the objects, mount again (so no cache holds the plaintext), read every block.
func TestTamperMatrix(t *testing.T) {
	requireLocalStore(t)
	e := newEnv(t)
	e.logs.expect(`authentication failed`)
	b := e.bucket("tamper", keyA)
	cases := tamperMatrix()
	type victim struct {
		data            []byte
		obj, other, old string
	}
	victims := make([]victim, len(cases))
	// newObject writes data as name and returns the one object file the write added.
	newObject := func(name string, data []byte) string {
		t.Helper()
		before := e.storeFiles()
		writeFile(t, filepath.Join(b, name), data)
		var added []string
		for _, f := range e.storeFiles() {
			if !slices.Contains(before, f) {
				added = append(added, f)
			}
		}
		if len(added) != 1 {
			t.Fatalf("writing %s added %d objects, want 1: %v", name, len(added), added)
		}
		return added[0]
	}
	for i, c := range cases {
		v := &victims[i]
		v.data = randBytes(t, tamperBlocks*4096)
		v.obj = newObject(c.name, v.data)
		v.other = newObject(c.name+"-other", randBytes(t, tamperBlocks*4096))
		if c.overwrite {
			v.old = filepath.Join(t.TempDir(), "old-object")
			writeFile(t, v.old, readFile(t, v.obj)) // GC may delete the original once it is superseded
			v.data = randBytes(t, tamperBlocks*4096)
			v.obj = newObject(c.name, v.data)
		}
	}
	e.unmount()
	for i, c := range cases {
		c.tamper(t, victims[i].obj, victims[i].other, victims[i].old)
	}
	e.mount()

	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := c.name
			v := victims[i]
			// Twice: the second read must fail the same way, and must not log again.
			for pass := 0; pass < 2; pass++ {
				f, err := os.Open(filepath.Join(b, name))
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				buf := make([]byte, 4096)
				for blk := 0; blk < tamperBlocks; blk++ {
					n, err := f.ReadAt(buf, int64(blk)*4096)
					want := v.data[blk*4096 : (blk+1)*4096]
					switch {
					case slices.Contains(c.bad, blk):
						if !errors.Is(err, syscall.EIO) {
							t.Errorf("pass %d, block %d: read gave %d bytes, err %v; want EIO", pass, blk, n, err)
						}
					case err != nil || !bytes.Equal(buf[:n], want):
						t.Errorf("pass %d, block %d (not tampered with): %d bytes, err %v, equal %v", pass, blk, n, err, bytes.Equal(buf[:n], want))
					}
				}
				// One read of the whole file: it fails, it never returns wrong bytes.
				whole := make([]byte, len(v.data))
				n, err := f.ReadAt(whole, 0)
				if err == nil {
					t.Errorf("pass %d: a read of the whole file succeeded", pass)
				}
				for blk := 0; blk*4096 < n; blk++ {
					end := min((blk+1)*4096, n)
					if !bytes.Equal(whole[blk*4096:end], v.data[blk*4096:end]) {
						t.Errorf("pass %d: the whole-file read returned wrong bytes in block %d", pass, blk)
					}
				}
				f.Close()
			}
			// The log: one line per damaged block, each naming the bucket, the path and the block.
			lines := e.logs.find(`authentication failed.* path=/tamper/` + regexp.QuoteMeta(name) + `( |$)`)
			if len(lines) == 0 {
				t.Fatalf("no log line names /tamper/%s", name)
			}
			seen := map[string]bool{}
			blockRe := regexp.MustCompile(`block (\d+)`)
			for _, l := range lines {
				if !strings.Contains(l, "bucket=tamper") {
					t.Errorf("log line does not name the bucket: %s", l)
				}
				m := blockRe.FindStringSubmatch(l)
				if m == nil {
					t.Errorf("log line does not name the block: %s", l)
					continue
				}
				if seen[m[1]] {
					t.Errorf("block %s is logged more than once: %v", m[1], lines)
				}
				seen[m[1]] = true
				if !slices.Contains(c.bad, atoi(t, m[1])) {
					t.Errorf("log line names block %s, which was not tampered with: %s", m[1], l)
				}
			}
			if !seen[fmt.Sprint(c.bad[0])] {
				t.Errorf("no log line names block %d, the first damaged one: %v", c.bad[0], lines)
			}
		})
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
