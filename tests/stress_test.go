package tests

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/meta"
)

// TestStress runs several processes that create, write, extend, rename, link, unlink, make and
// remove directories and symlinks, and read back files, all at once in one tree. Every file's
// content is a pattern derived from its first 8 bytes, so any reader can check any file whatever
// happened to it. Afterwards the tree is checked against the metadata: meta's own consistency
// check, every name seen through the mount against meta's directory entries, link counts
// against the names found, every file's content, no orphans left, and the objects in the store
// against the objects meta counts. KMIPFS_STRESS_OPS sets the operations per process (1000).
func TestStress(t *testing.T) {
	const procs = 6
	opsPer := 1000
	if s := os.Getenv("KMIPFS_STRESS_OPS"); s != "" {
		var err error
		if opsPer, err = strconv.Atoi(s); err != nil {
			t.Fatalf("KMIPFS_STRESS_OPS: %v", err)
		}
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KMIPFS_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d, %d processes x %d operations (KMIPFS_SEED to replay the choices)", seed, procs, opsPer)
	e := newEnv(t)
	b := e.bucket("stress", keyA)
	root := filepath.Join(b, "tree")
	for i := 0; i < stressDirs; i++ {
		must(t, os.MkdirAll(filepath.Join(root, "d"+strconv.Itoa(i)), 0o755))
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, procs)
	outs := make([]*syncBuffer, procs)
	for w := 0; w < procs; w++ {
		cmd := helperCmd(t, "stress", root, strconv.Itoa(w), strconv.FormatUint(seed+uint64(w), 10), strconv.Itoa(opsPer))
		outs[w] = &syncBuffer{}
		cmd.Stdout, cmd.Stderr = outs[w], outs[w]
		must(t, cmd.Start())
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case errs[w] = <-done:
			case <-time.After(5 * time.Minute):
				cmd.Process.Kill()
				errs[w] = fmt.Errorf("timed out: %v", <-done)
			}
		}()
	}
	wg.Wait()
	for w, err := range errs {
		if err != nil {
			t.Errorf("worker %d: %v\n%s", w, err, outs[w])
		}
	}
	t.Logf("%d processes x %d operations in %v", procs, opsPer, time.Since(start).Round(time.Millisecond))
	if t.Failed() {
		return
	}
	checkTree(t, e, b)
	e.remount()
	checkTree(t, e, b)
}

// checkTree checks the tree below dir through the mount against the metadata, and the store
// against both.
func checkTree(t *testing.T, e *env, dir string) {
	t.Helper()
	ctx := t.Context()
	// Unlinked files go once the kernel has released them.
	waitFor(t, "orphans released", func() bool {
		o, err := e.db.Orphans(ctx)
		return err == nil && len(o) == 0
	})
	checkMeta(t, e)
	names := map[uint64][]string{}
	nlinks := map[uint64]uint64{}
	files := 0
	var walk func(p string, ino meta.Ino)
	walk = func(p string, ino meta.Ino) {
		ents, err := os.ReadDir(p)
		must(t, err)
		dents, err := e.db.ReadDir(ctx, ino)
		must(t, err)
		var mnames, dnames []string
		for _, de := range ents {
			mnames = append(mnames, de.Name())
		}
		byName := map[string]meta.Dirent{}
		for _, de := range dents {
			dnames = append(dnames, de.Name)
			byName[de.Name] = de
		}
		sort.Strings(mnames)
		if !equalStrings(mnames, dnames) {
			t.Errorf("%s: the mount lists %q, meta %q", p, mnames, dnames)
			return
		}
		subdirs := uint64(0)
		for _, name := range mnames {
			cp := filepath.Join(p, name)
			st := lstat(t, cp)
			if st.Ino != uint64(byName[name].Ino) {
				t.Errorf("%s: inode %d, meta says %d", cp, st.Ino, byName[name].Ino)
			}
			names[st.Ino] = append(names[st.Ino], cp)
			nlinks[st.Ino] = st.Nlink
			switch st.Mode & syscall.S_IFMT {
			case syscall.S_IFDIR:
				subdirs++
				walk(cp, meta.Ino(st.Ino))
			case syscall.S_IFREG:
				files++
				data, err := os.ReadFile(cp)
				must(t, err)
				if err := checkPattern(data); err != nil {
					t.Errorf("%s: %v", cp, err)
				}
				in, err := e.db.Get(ctx, meta.Ino(st.Ino))
				must(t, err)
				if in.Size != uint64(len(data)) || in.Size != uint64(st.Size) {
					t.Errorf("%s: %d bytes read, stat %d, meta %d", cp, len(data), st.Size, in.Size)
				}
			case syscall.S_IFLNK:
				if _, err := os.Readlink(cp); err != nil {
					t.Errorf("readlink %s: %v", cp, err)
				}
			}
		}
		if st := lstat(t, p); st.Nlink != 2+subdirs {
			t.Errorf("%s: nlink %d, %d subdirectories", p, st.Nlink, subdirs)
		}
	}
	in, err := e.db.Lookup(ctx, meta.RootIno, filepath.Base(dir))
	must(t, err)
	walk(dir, in.Ino)
	for ino, ns := range names {
		if st := lstat(t, ns[0]); st.Mode&syscall.S_IFMT != syscall.S_IFDIR && nlinks[ino] != uint64(len(ns)) {
			t.Errorf("inode %d: nlink %d, names %q", ino, nlinks[ino], ns)
		}
	}
	// The store holds exactly the objects with live blocks once the GC queue is empty.
	waitFor(t, "GC queue empty", func() bool {
		p, err := e.db.PendingGC(ctx)
		return err == nil && len(p) == 0
	})
	objs, err := e.db.Objects(ctx)
	must(t, err)
	want := map[string]bool{}
	for _, o := range objs {
		want[filepath.Join(e.storeDir, o.Bucket, o.Key)] = true
	}
	have := map[string]bool{}
	for _, f := range e.storeFiles() {
		have[f] = true
		if !want[f] {
			t.Errorf("object %s in the store is not in meta", f)
		}
	}
	for f := range want {
		if !have[f] {
			t.Errorf("object %s of meta is missing from the store", f)
		}
	}
	t.Logf("tree: %d files, %d inodes, %d objects", files, len(names), len(objs))
}

const (
	stressDirs  = 6
	stressFiles = 30
)

// pattern fills b with the content a file tagged tag has at offset off.
func pattern(tag uint64, off int64, b []byte) {
	for i := range b {
		p := off + int64(i)
		if p < 8 {
			b[i] = byte(tag >> (8 * p))
			continue
		}
		b[i] = byte(tag>>(8*(p%8))) ^ byte(p/8*131) ^ byte(p/2048)
	}
}

// checkPattern checks that data is the pattern of the tag in its first 8 bytes.
func checkPattern(data []byte) error {
	if len(data) < 8 {
		return fmt.Errorf("only %d bytes", len(data))
	}
	want := make([]byte, len(data))
	pattern(binary.LittleEndian.Uint64(data), 0, want)
	if i := firstDiff(data, want); i >= 0 {
		return fmt.Errorf("content differs from its pattern at byte %d of %d", i, len(data))
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// stressHelper is one stress worker: args are the tree, the worker number, the seed and the
// number of operations. Errors a concurrent tree explains (a name that went or came, a directory
// that filled up, a rename into a subtree) are part of the game; any other is a failure.
func stressHelper(args []string) error {
	root := args[0]
	worker := args[1]
	seed, _ := strconv.ParseUint(args[2], 10, 64)
	ops, _ := strconv.Atoi(args[3])
	rng := rand.New(rand.NewPCG(seed, 7))
	var log []string
	expected := func(err error) bool {
		for _, e := range []syscall.Errno{syscall.ENOENT, syscall.EEXIST, syscall.ENOTEMPTY, syscall.EISDIR, syscall.ENOTDIR, syscall.EINVAL} {
			if errors.Is(err, e) {
				return true
			}
		}
		return err == nil
	}
	dirs := func() []string {
		out := []string{root}
		for i := 0; i < stressDirs; i++ {
			d := filepath.Join(root, "d"+strconv.Itoa(i))
			out = append(out, d, filepath.Join(d, "s0"), filepath.Join(d, "s1"), filepath.Join(d, "s0", "s1"))
		}
		return out
	}()
	randDir := func() string { return dirs[rng.IntN(len(dirs))] }
	randFile := func() string { return filepath.Join(randDir(), "f"+strconv.Itoa(rng.IntN(stressFiles))) }
	counts := map[string]int{}
	for i := 0; i < ops; i++ {
		var name string
		var err error
		switch op := rng.IntN(100); {
		case op < 22: // a new file, written under a temporary name and renamed into place
			name = "create"
			tmp := filepath.Join(randDir(), fmt.Sprintf("tmp-%s-%d", worker, i))
			target := randFile()
			n := 8 + rng.IntN(100000)
			data := make([]byte, n)
			pattern(rng.Uint64(), 0, data)
			log = append(log, fmt.Sprintf("%d create %s (%d bytes) -> %s", i, tmp, n, target))
			if err = writeAndRename(tmp, target, data, rng.IntN(4) == 0); err != nil {
				os.Remove(tmp)
			}
		case op < 37: // extend a file with its own pattern
			name = "extend"
			p := randFile()
			n := 1 + rng.IntN(30000)
			log = append(log, fmt.Sprintf("%d extend %s by %d", i, p, n))
			err = extend(p, n)
		case op < 52: // read a file and check it
			name = "verify"
			p := randFile()
			log = append(log, fmt.Sprintf("%d verify %s", i, p))
			var data []byte
			if data, err = os.ReadFile(p); err == nil {
				if perr := checkPattern(data); perr != nil {
					return fmt.Errorf("worker %s: %s: %v\n%s", worker, p, perr, strings.Join(log, "\n"))
				}
			}
		case op < 62:
			name = "link"
			from, to := randFile(), randFile()
			log = append(log, fmt.Sprintf("%d link %s %s", i, from, to))
			err = os.Link(from, to)
		case op < 74:
			name = "unlink"
			p := randFile()
			log = append(log, fmt.Sprintf("%d unlink %s", i, p))
			err = syscall.Unlink(p)
		case op < 80:
			name = "rename"
			from, to := randFile(), randFile()
			log = append(log, fmt.Sprintf("%d rename %s %s", i, from, to))
			err = syscall.Rename(from, to)
		case op < 85:
			name = "mkdir"
			d := randDir()
			log = append(log, fmt.Sprintf("%d mkdir %s", i, d))
			err = syscall.Mkdir(d, 0o755)
		case op < 89:
			name = "rmdir"
			d := randDir()
			log = append(log, fmt.Sprintf("%d rmdir %s", i, d))
			if d != root {
				err = syscall.Rmdir(d)
			}
		case op < 92:
			name = "rename-dir"
			from, to := randDir(), randDir()
			log = append(log, fmt.Sprintf("%d rename-dir %s %s", i, from, to))
			if from != root && to != root {
				err = syscall.Rename(from, to)
			}
		case op < 96:
			name = "symlink"
			p := filepath.Join(randDir(), "l"+strconv.Itoa(rng.IntN(10)))
			log = append(log, fmt.Sprintf("%d symlink %s", i, p))
			if err = syscall.Symlink("f"+strconv.Itoa(rng.IntN(stressFiles)), p); errors.Is(err, syscall.EEXIST) {
				err = syscall.Unlink(p)
			}
		default:
			name = "readdir"
			d := randDir()
			log = append(log, fmt.Sprintf("%d readdir %s", i, d))
			var f *os.File
			if f, err = os.Open(d); err == nil {
				_, err = f.Readdirnames(-1)
				f.Close()
			}
		}
		if !expected(err) {
			return fmt.Errorf("worker %s: %s: %v\n%s", worker, name, err, strings.Join(log, "\n"))
		}
		counts[name]++
	}
	fmt.Printf("worker %s: %v\n", worker, counts)
	return nil
}

func writeAndRename(tmp, target string, data []byte, sync bool) error {
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	// Write in pieces, as programs do.
	for off := 0; off < len(data); off += 16384 {
		if _, err := f.Write(data[off:min(off+16384, len(data))]); err != nil {
			f.Close()
			return err
		}
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syscall.Rename(tmp, target)
}

func extend(p string, n int) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var tag [8]byte
	if _, err := io.ReadFull(f, tag[:]); err != nil {
		return fmt.Errorf("reading the tag: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	d := make([]byte, n)
	pattern(binary.LittleEndian.Uint64(tag[:]), st.Size(), d)
	if _, err := f.WriteAt(d, st.Size()); err != nil {
		return err
	}
	return f.Close()
}
