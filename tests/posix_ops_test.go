package tests

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// The POSIX operation set inside a bucket, one test per feature of docs/POSIX.md.

// Linux constants that package syscall lacks.
const (
	renameNoReplace = 1 << 0
	renameExchange  = 1 << 1
	atFdCwd         = -100
	atSymlinkFollow = 0x400
	oTmpfile        = 0x410000 // O_TMPFILE (with O_DIRECTORY)
	seekData        = 3
	seekHole        = 4
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
	fallocCollapse  = 0x08
	fallocZeroRange = 0x10
	fuseSuperMagic  = 0x65735546
)

func renameat2(t *testing.T, from, to string, flags uint) error {
	t.Helper()
	nr := map[string]uintptr{"amd64": 316, "arm64": 276, "386": 353, "riscv64": 276, "ppc64le": 357, "s390x": 347}[runtime.GOARCH]
	if nr == 0 {
		t.Skipf("renameat2 number unknown on %s", runtime.GOARCH)
	}
	f, err := syscall.BytePtrFromString(from)
	if err != nil {
		return err
	}
	g, err := syscall.BytePtrFromString(to)
	if err != nil {
		return err
	}
	fd := atFdCwd
	_, _, e := syscall.Syscall6(nr, uintptr(fd), uintptr(unsafe.Pointer(f)), uintptr(fd), uintptr(unsafe.Pointer(g)), uintptr(flags), 0)
	if e != 0 {
		return e
	}
	return nil
}

func linkat(from, to string, flags int) error {
	f, err := syscall.BytePtrFromString(from)
	if err != nil {
		return err
	}
	g, err := syscall.BytePtrFromString(to)
	if err != nil {
		return err
	}
	fd := atFdCwd
	_, _, e := syscall.Syscall6(syscall.SYS_LINKAT, uintptr(fd), uintptr(unsafe.Pointer(f)), uintptr(fd), uintptr(unsafe.Pointer(g)), uintptr(flags), 0)
	if e != 0 {
		return e
	}
	return nil
}

// closeAtEnd closes f when the test ends, also when it fails, and before the mount goes (cleanups
// run last-registered first): a descriptor left open on the in-process mount makes the unmount
// fail, and closing it after the server stopped hangs the test binary.
func closeAtEnd(t *testing.T, f *os.File) *os.File {
	t.Cleanup(func() { f.Close() })
	return f
}

func lstat(t *testing.T, p string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// errnoIs fails unless err is want.
func errnoIs(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if got := errnoOf(err); got != want {
		t.Errorf("%s: got %v (%d), want %v (%d)", what, err, got, want, want)
	}
}

// TestHardLinks: nlink counts across directories, one inode and one content under every name,
// links surviving the removal of the first name and a remount.
func TestHardLinks(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("links", keyA)
	must(t, os.MkdirAll(filepath.Join(b, "d1", "sub"), 0o755))
	must(t, os.Mkdir(filepath.Join(b, "d2"), 0o755))
	orig := filepath.Join(b, "d1", "f")
	writeFile(t, orig, []byte("first"))
	names := []string{orig, filepath.Join(b, "d2", "g"), filepath.Join(b, "d1", "sub", "h")}
	for i, n := range names[1:] {
		must(t, os.Link(orig, n))
		if got := lstat(t, orig).Nlink; got != uint64(i+2) {
			t.Fatalf("nlink after %d links: %d", i+1, got)
		}
	}
	ino := lstat(t, orig).Ino
	for _, n := range names {
		if st := lstat(t, n); st.Ino != ino || st.Nlink != 3 {
			t.Fatalf("%s: ino %d nlink %d, want %d and 3", n, st.Ino, st.Nlink, ino)
		}
	}
	// Writes through one name are read through the others, while open and after close.
	f, err := os.OpenFile(names[1], os.O_RDWR, 0)
	must(t, err)
	closeAtEnd(t, f)
	_, err = f.WriteAt([]byte("FIRST and more"), 0)
	must(t, err)
	if got := readFile(t, names[2]); string(got) != "FIRST and more" {
		t.Fatalf("through another name while open: %q", got)
	}
	must(t, f.Close())
	must(t, os.Remove(orig))
	if got := lstat(t, names[1]).Nlink; got != 2 {
		t.Fatalf("nlink after unlink: %d", got)
	}
	// Directories: a hard link to one is EPERM; a link onto an existing name is EEXIST.
	errnoIs(t, "link to a directory", os.Link(filepath.Join(b, "d1"), filepath.Join(b, "d3")), syscall.EPERM)
	errnoIs(t, "link onto an existing name", os.Link(names[1], names[2]), syscall.EEXIST)
	if got := lstat(t, filepath.Join(b, "d1")).Nlink; got != 3 {
		t.Fatalf("directory nlink (., .., sub): %d", got)
	}
	e.remount()
	for _, n := range names[1:] {
		if st := lstat(t, n); st.Ino != ino || st.Nlink != 2 {
			t.Fatalf("after remount %s: ino %d nlink %d", n, st.Ino, st.Nlink)
		}
		if got := readFile(t, n); string(got) != "FIRST and more" {
			t.Fatalf("after remount %s: %q", n, got)
		}
	}
	checkMeta(t, e)
}

// TestSymlinks: symlink and readlink, relative and absolute targets, dangling links, loops
// (ELOOP), O_NOFOLLOW, lchown/utimes on the link itself.
func TestSymlinks(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("symlinks", keyA)
	writeFile(t, filepath.Join(b, "target"), []byte("pointed at"))
	must(t, os.Symlink("target", filepath.Join(b, "rel")))
	must(t, os.Symlink(filepath.Join(b, "target"), filepath.Join(b, "abs")))
	must(t, os.Symlink("nowhere", filepath.Join(b, "dangling")))
	long := strings.Repeat("x/", 2000) + "end" // 4003 bytes, below PATH_MAX
	must(t, os.Symlink(long, filepath.Join(b, "long")))
	for name, want := range map[string]string{"rel": "target", "abs": filepath.Join(b, "target"), "dangling": "nowhere", "long": long} {
		got, err := os.Readlink(filepath.Join(b, name))
		if err != nil || got != want {
			t.Fatalf("readlink %s: %q %v", name, got, err)
		}
		if st := lstat(t, filepath.Join(b, name)); st.Mode&syscall.S_IFMT != syscall.S_IFLNK || st.Size != int64(len(want)) {
			t.Fatalf("lstat %s: mode %o size %d", name, st.Mode, st.Size)
		}
	}
	for _, name := range []string{"rel", "abs"} {
		if got := readFile(t, filepath.Join(b, name)); string(got) != "pointed at" {
			t.Fatalf("read through %s: %q", name, got)
		}
	}
	_, err := os.ReadFile(filepath.Join(b, "dangling"))
	errnoIs(t, "read dangling", err, syscall.ENOENT)
	must(t, os.Symlink("loop2", filepath.Join(b, "loop1")))
	must(t, os.Symlink("loop1", filepath.Join(b, "loop2")))
	_, err = os.Stat(filepath.Join(b, "loop1"))
	errnoIs(t, "stat a loop", err, syscall.ELOOP)
	_, err = syscall.Open(filepath.Join(b, "rel"), syscall.O_RDONLY|syscall.O_NOFOLLOW, 0)
	errnoIs(t, "O_NOFOLLOW on a symlink", err, syscall.ELOOP)
	_, err = os.Readlink(filepath.Join(b, "target"))
	errnoIs(t, "readlink of a file", err, syscall.EINVAL)
	// O_CREAT through a dangling symlink creates its target.
	writeFile(t, filepath.Join(b, "dangling"), []byte("now here"))
	if got := readFile(t, filepath.Join(b, "nowhere")); string(got) != "now here" {
		t.Fatalf("create through dangling symlink: %q", got)
	}
	// O_EXCL does not follow.
	_, err = os.OpenFile(filepath.Join(b, "rel"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	errnoIs(t, "O_EXCL on a symlink", err, syscall.EEXIST)
	// Times and owner of the link itself.
	ts := []syscall.Timespec{{Sec: 1000, Nsec: 5}, {Sec: 2000, Nsec: 7}}
	must(t, utimensatNoFollow(filepath.Join(b, "rel"), ts))
	must(t, os.Lchown(filepath.Join(b, "rel"), 123, 456))
	if st := lstat(t, filepath.Join(b, "rel")); st.Mtim.Sec != 2000 || st.Mtim.Nsec != 7 || st.Uid != 123 || st.Gid != 456 {
		t.Fatalf("link after lutimes/lchown: mtime %v uid %d gid %d", st.Mtim, st.Uid, st.Gid)
	}
	if st := lstat(t, filepath.Join(b, "target")); st.Uid == 123 {
		t.Fatal("lchown changed the target")
	}
	e.remount()
	if got, _ := os.Readlink(filepath.Join(b, "long")); got != long {
		t.Fatal("long symlink target lost at remount")
	}
}

func utimensatNoFollow(path string, ts []syscall.Timespec) error {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return err
	}
	const atSymlinkNoFollow = 0x100
	fd := atFdCwd
	_, _, e := syscall.Syscall6(syscall.SYS_UTIMENSAT, uintptr(fd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&ts[0])), atSymlinkNoFollow, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// TestRename: over files and empty directories, the errors rename(2) gives, RENAME_NOREPLACE and
// RENAME_EXCHANGE, and directory link counts that follow the moves. (syscall.Rename, because
// os.Rename itself refuses to replace a directory.)
func TestRename(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("rename", keyA)
	p := func(names ...string) string { return filepath.Join(append([]string{b}, names...)...) }
	writeFile(t, p("a"), []byte("A"))
	writeFile(t, p("b"), []byte("B"))
	must(t, os.MkdirAll(p("d1", "inner"), 0o755))
	must(t, os.Mkdir(p("d2"), 0o755))
	must(t, os.Mkdir(p("empty"), 0o755))
	writeFile(t, p("d2", "x"), []byte("X"))

	// Over an existing file: atomic replace, the old inode goes.
	inoA := lstat(t, p("a")).Ino
	must(t, syscall.Rename(p("a"), p("b")))
	if st := lstat(t, p("b")); st.Ino != inoA || string(readFile(t, p("b"))) != "A" {
		t.Fatal("rename over a file")
	}
	_, err := os.Lstat(p("a"))
	errnoIs(t, "old name after rename", err, syscall.ENOENT)
	// Over an empty directory; not over a non-empty one.
	must(t, syscall.Rename(p("d1"), p("empty")))
	if _, err := os.Stat(p("empty", "inner")); err != nil {
		t.Fatalf("rename over an empty directory: %v", err)
	}
	errnoIs(t, "rename over a non-empty directory", syscall.Rename(p("empty"), p("d2")), syscall.ENOTEMPTY)
	errnoIs(t, "file over a directory", syscall.Rename(p("b"), p("d2")), syscall.EISDIR)
	errnoIs(t, "directory over a file", syscall.Rename(p("d2"), p("b")), syscall.ENOTDIR)
	errnoIs(t, "directory into itself", syscall.Rename(p("empty"), p("empty", "inner", "loop")), syscall.EINVAL)
	errnoIs(t, "missing source", syscall.Rename(p("nope"), p("other")), syscall.ENOENT)
	// Two names of one inode: rename does nothing and both stay.
	must(t, os.Link(p("b"), p("b2")))
	must(t, syscall.Rename(p("b"), p("b2")))
	if _, err := os.Lstat(p("b")); err != nil {
		t.Fatalf("rename between hard links removed the source: %v", err)
	}

	// RENAME_NOREPLACE.
	errnoIs(t, "RENAME_NOREPLACE onto an existing name", renameat2(t, p("b"), p("d2", "x"), renameNoReplace), syscall.EEXIST)
	must(t, renameat2(t, p("b2"), p("fresh"), renameNoReplace))
	if got := readFile(t, p("fresh")); string(got) != "A" {
		t.Fatalf("RENAME_NOREPLACE to a new name: %q", got)
	}
	// RENAME_EXCHANGE: two files, a file and a directory across parents.
	writeFile(t, p("c"), []byte("C"))
	must(t, renameat2(t, p("c"), p("fresh"), renameExchange))
	if string(readFile(t, p("c"))) != "A" || string(readFile(t, p("fresh"))) != "C" {
		t.Fatal("RENAME_EXCHANGE of two files")
	}
	nlinkRoot, nlinkD2 := lstat(t, b).Nlink, lstat(t, p("d2")).Nlink
	must(t, renameat2(t, p("empty"), p("d2", "x"), renameExchange))
	if st := lstat(t, p("empty")); st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		t.Fatal("exchange: file not in the directory's place")
	}
	if _, err := os.Stat(p("d2", "x", "inner")); err != nil {
		t.Fatalf("exchange: directory not in the file's place: %v", err)
	}
	if got := lstat(t, b).Nlink; got != nlinkRoot-1 {
		t.Errorf("exchange: source parent nlink %d, want %d", got, nlinkRoot-1)
	}
	if got := lstat(t, p("d2")).Nlink; got != nlinkD2+1 {
		t.Errorf("exchange: target parent nlink %d, want %d", got, nlinkD2+1)
	}
	errnoIs(t, "RENAME_EXCHANGE with a missing target", renameat2(t, p("c"), p("missing"), renameExchange), syscall.ENOENT)
	errnoIs(t, "RENAME_EXCHANGE|RENAME_NOREPLACE", renameat2(t, p("c"), p("fresh"), renameExchange|renameNoReplace), syscall.EINVAL)
	const renameWhiteout = 1 << 2
	errnoIs(t, "RENAME_WHITEOUT", renameat2(t, p("c"), p("white"), renameWhiteout), syscall.EINVAL)
	e.remount()
	if string(readFile(t, p("c"))) != "A" {
		t.Fatal("after remount")
	}
	checkMeta(t, e)
}

// TestUnlinkedOpen: a file stays readable and writable after its last name goes (unlink, and a
// rename over it), fstat shows nlink 0, and its objects leave the store after the last close.
// O_TMPFILE files behave the same and linkat gives them a name.
func TestUnlinkedOpen(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("unlinked", keyA)
	p := filepath.Join(b, "f")
	data := randBytes(t, 50000)
	writeFile(t, p, data)
	before := len(e.storeFiles())
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	closeAtEnd(t, f)
	must(t, os.Remove(p))
	more := randBytes(t, 9000)
	_, err = f.WriteAt(more, 45000)
	must(t, err)
	must(t, f.Sync())
	got := make([]byte, 54000)
	n, err := f.ReadAt(got, 0)
	if n != 54000 || !bytes.Equal(got[:45000], data[:45000]) || !bytes.Equal(got[45000:], more) {
		t.Fatalf("read of an unlinked file: %d %v", n, err)
	}
	var st syscall.Stat_t
	must(t, syscall.Fstat(int(f.Fd()), &st))
	if st.Nlink != 0 || st.Size != 54000 {
		t.Fatalf("fstat of an unlinked file: nlink %d size %d", st.Nlink, st.Size)
	}
	must(t, f.Truncate(100))
	must(t, f.Close())
	waitFor(t, "objects of the unlinked file deleted", func() bool { return len(e.storeFiles()) < before })

	// A rename over an open file keeps the open one readable.
	writeFile(t, p, []byte("old content"))
	g, err := os.Open(p)
	must(t, err)
	closeAtEnd(t, g)
	writeFile(t, p+".new", []byte("new content"))
	must(t, os.Rename(p+".new", p))
	old, err := io.ReadAll(g)
	must(t, err)
	if string(old) != "old content" || string(readFile(t, p)) != "new content" {
		t.Fatalf("rename over an open file: %q / %q", old, readFile(t, p))
	}
	must(t, g.Close())

	// O_TMPFILE, then linkat through /proc/self/fd.
	fd, err := syscall.Open(b, oTmpfile|syscall.O_RDWR, 0o640)
	must(t, err)
	tmp := closeAtEnd(t, os.NewFile(uintptr(fd), "tmpfile"))
	_, err = tmp.Write([]byte("anonymous"))
	must(t, err)
	must(t, syscall.Fstat(fd, &st))
	if st.Nlink != 0 || st.Mode&0o777 != 0o640 {
		t.Fatalf("O_TMPFILE: nlink %d mode %o", st.Nlink, st.Mode)
	}
	must(t, linkat("/proc/self/fd/"+strconv.Itoa(fd), filepath.Join(b, "named"), atSymlinkFollow))
	must(t, tmp.Close())
	if got := readFile(t, filepath.Join(b, "named")); string(got) != "anonymous" {
		t.Fatalf("linked O_TMPFILE: %q", got)
	}
	// One that is never linked leaves nothing behind.
	fd, err = syscall.Open(b, oTmpfile|syscall.O_RDWR, 0o600)
	must(t, err)
	tmp2 := closeAtEnd(t, os.NewFile(uintptr(fd), "tmpfile2"))
	_, err = tmp2.Write(randBytes(t, 20000))
	must(t, err)
	must(t, tmp2.Close())
	waitFor(t, "orphans released", func() bool {
		o, err := e.db.Orphans(t.Context())
		return err == nil && len(o) == 0
	})
	e.remount()
	if got := readFile(t, filepath.Join(b, "named")); string(got) != "anonymous" {
		t.Fatalf("linked O_TMPFILE after remount: %q", got)
	}
	checkMeta(t, e)
}

// TestTruncateHoles: truncate and ftruncate up and down, with bytes past the old end reading as
// zeros; sparse files whose holes cost nothing in the store and that SEEK_HOLE/SEEK_DATA find.
func TestTruncateHoles(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("holes", keyA)
	p := filepath.Join(b, "f")
	data := randBytes(t, 3*4096+100)
	writeFile(t, p, data)
	for _, n := range []int64{5000, 4096, 1, 0} {
		must(t, os.Truncate(p, n))
		must(t, os.Truncate(p, 20000))
		got := readFile(t, p)
		want := append(append([]byte(nil), data[:n]...), make([]byte, 20000-n)...)
		if !bytes.Equal(got, want) {
			t.Fatalf("truncate to %d then up: bytes past %d are not zeros", n, n)
		}
		writeFile(t, p, data)
	}
	// Sparse: three written blocks far apart.
	s := filepath.Join(b, "sparse")
	f, err := os.Create(s)
	must(t, err)
	closeAtEnd(t, f)
	for _, off := range []int64{0, 10 << 20, 100 << 20} {
		_, err := f.WriteAt([]byte("data"), off)
		must(t, err)
	}
	must(t, f.Close())
	if stored := storeBytes(t, e); stored > 100000 {
		t.Fatalf("a 100 MiB sparse file takes %d bytes in the store", stored)
	}
	f, err = os.Open(s)
	must(t, err)
	defer f.Close()
	fd := int(f.Fd())
	for _, c := range []struct {
		off    int64
		whence int
		want   int64
	}{
		{0, seekHole, 4096}, {1, seekData, 1}, {4096, seekData, 10 << 20}, {10<<20 + 5, seekHole, 10<<20 + 4096},
		{10<<20 + 4096, seekData, 100 << 20}, {100 << 20, seekHole, 100<<20 + 4},
	} {
		got, err := syscall.Seek(fd, c.off, c.whence)
		if err != nil || got != c.want {
			t.Errorf("lseek(%d, %d) = %d %v, want %d", c.off, c.whence, got, err, c.want)
		}
	}
	_, err = syscall.Seek(fd, 100<<20+4, seekData)
	errnoIs(t, "SEEK_DATA at the end", err, syscall.ENXIO)
	buf := make([]byte, 8192)
	n, err := f.ReadAt(buf, 50<<20)
	if n != len(buf) || !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Fatalf("hole reads %d bytes %v, not zeros", n, err)
	}
}

// TestFallocate: the default mode and KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE; the others are
// EOPNOTSUPP.
func TestFallocate(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("falloc", keyA)
	p := filepath.Join(b, "f")
	ref := filepath.Join(t.TempDir(), "ref")
	data := randBytes(t, 10*4096+123)
	writeFile(t, p, data)
	writeFile(t, ref, data)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	r, err := os.OpenFile(ref, os.O_RDWR, 0)
	must(t, err)
	defer r.Close()
	steps := []struct {
		mode      uint32
		off, size int64
	}{
		{0, 0, 100},                                        // inside: nothing changes
		{0, 50000, 10000},                                  // extends the size
		{fallocKeepSize, 70000, 5000},                      // past the end, size kept
		{fallocPunchHole | fallocKeepSize, 100, 50},        // inside one block
		{fallocPunchHole | fallocKeepSize, 4000, 3 * 4096}, // partial, whole, whole, partial
		{fallocZeroRange, 9 * 4096, 4096},                  // a whole block
		{fallocZeroRange, 55000, 10000},                    // past the end: grows
		{fallocZeroRange | fallocKeepSize, 64000, 10000},   // past the end, size kept
		{fallocPunchHole | fallocKeepSize, 0, 1 << 20},     // everything
	}
	for i, s := range steps {
		if err := syscall.Fallocate(int(f.Fd()), s.mode, s.off, s.size); err != nil {
			t.Fatalf("step %d fallocate(%#x, %d, %d): %v", i, s.mode, s.off, s.size, err)
		}
		must(t, syscall.Fallocate(int(r.Fd()), s.mode, s.off, s.size))
		got, want := readFile(t, p), readFile(t, ref)
		if !bytes.Equal(got, want) {
			t.Fatalf("step %d fallocate(%#x, %d, %d): content differs from ext4 (size %d vs %d)", i, s.mode, s.off, s.size, len(got), len(want))
		}
		if i == 4 {
			if off, err := syscall.Seek(int(f.Fd()), 4096, seekHole); err != nil || off != 4096 {
				t.Errorf("SEEK_HOLE in the punched range: %d %v", off, err)
			}
		}
	}
	// Everything but the partial last block is punched: the store keeps one sealed block.
	waitFor(t, "punched objects deleted", func() bool { return storeBytes(t, e) <= 4124 })
	for _, mode := range []uint32{fallocCollapse, fallocPunchHole} {
		errnoIs(t, "unsupported fallocate mode", syscall.Fallocate(int(f.Fd()), mode, 0, 4096), syscall.EOPNOTSUPP)
	}
	must(t, f.Close())
	e.remount()
	if !bytes.Equal(readFile(t, p), readFile(t, ref)) {
		t.Fatal("after remount: content differs")
	}
}

// TestOpenFlags: O_APPEND (also from two descriptors), O_TRUNC, O_EXCL, O_DIRECTORY.
func TestOpenFlags(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("flags", keyA)
	p := filepath.Join(b, "log")
	a1, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(t, err)
	closeAtEnd(t, a1)
	a2, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	closeAtEnd(t, a2)
	var want []byte
	for i := 0; i < 50; i++ {
		line := []byte(strings.Repeat(string(rune('a'+i%26)), 1+i*37%5000) + "\n")
		w := a1
		if i%2 == 1 {
			w = a2
		}
		_, err := w.Write(line)
		must(t, err)
		want = append(want, line...)
	}
	must(t, a1.Close())
	must(t, a2.Close())
	if got := readFile(t, p); !bytes.Equal(got, want) {
		t.Fatalf("O_APPEND from two descriptors: %d bytes, want %d", len(got), len(want))
	}
	before := lstat(t, p)
	time.Sleep(10 * time.Millisecond)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	must(t, err)
	must(t, f.Close())
	if st := lstat(t, p); st.Size != 0 || !later(st.Mtim, before.Mtim) || !later(st.Ctim, before.Ctim) {
		t.Fatalf("O_TRUNC: size %d, mtime %v -> %v", st.Size, before.Mtim, st.Mtim)
	}
	_, err = os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	errnoIs(t, "O_EXCL on an existing file", err, syscall.EEXIST)
	_, err = syscall.Open(p, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	errnoIs(t, "O_DIRECTORY on a file", err, syscall.ENOTDIR)
	_, err = syscall.Open(b, syscall.O_WRONLY, 0)
	errnoIs(t, "a directory opened for writing", err, syscall.EISDIR)
}

// storeBytes is the size of all objects in the local store.
func storeBytes(t *testing.T, e *env) int64 {
	t.Helper()
	var n int64
	for _, o := range e.storeFiles() {
		if st, err := os.Stat(o); err == nil {
			n += st.Size()
		}
	}
	return n
}

func later(a, b syscall.Timespec) bool {
	return a.Sec > b.Sec || (a.Sec == b.Sec && a.Nsec > b.Nsec)
}

// TestLargeOffsets: writes around and far past 4 GiB, truncate there, and reads back after a
// remount.
func TestLargeOffsets(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("large", keyA)
	p := filepath.Join(b, "big")
	f, err := os.Create(p)
	must(t, err)
	closeAtEnd(t, f)
	writes := map[int64][]byte{
		1<<32 - 3:    []byte("across 4 GiB"),
		5 << 30:      randBytes(t, 10000),
		1 << 40:      []byte("one tebibyte"),
		1<<50 + 4095: []byte("one pebibyte, across a block"),
	}
	for off, d := range writes {
		_, err := f.WriteAt(d, off)
		must(t, err)
	}
	must(t, f.Close())
	end := int64(1<<50 + 4095 + len("one pebibyte, across a block"))
	check := func(stage string) {
		t.Helper()
		if st := lstat(t, p); st.Size != end {
			t.Fatalf("%s: size %d, want %d", stage, st.Size, end)
		}
		f, err := os.Open(p)
		must(t, err)
		defer f.Close()
		for off, d := range writes {
			got := make([]byte, len(d)+20)
			n, _ := f.ReadAt(got, off-10)
			want := append(append(make([]byte, 10), d...), make([]byte, 10)...)
			if off+int64(len(d)) == end {
				want = want[:len(want)-10]
			}
			if !bytes.Equal(got[:n], want) {
				t.Fatalf("%s: read at %d differs", stage, off)
			}
		}
		if off, err := syscall.Seek(int(f.Fd()), 1<<32+1<<20, seekData); err != nil || off != 5<<30 {
			t.Fatalf("%s: SEEK_DATA from 4 GiB + 1 MiB: %d %v", stage, off, err)
		}
		if off, err := syscall.Seek(int(f.Fd()), 5<<30+20000, seekData); err != nil || off != 1<<40 {
			t.Fatalf("%s: SEEK_DATA from 5 GiB + 20000: %d %v", stage, off, err)
		}
	}
	check("written")
	e.remount()
	check("after remount")
	must(t, os.Truncate(p, 6<<30))
	if got := lstat(t, p).Size; got != 6<<30 {
		t.Fatalf("truncate to 6 GiB: size %d", got)
	}
}

// TestSpecialFiles: mkfifo, mknod of a character device (as root), and a Unix socket bound in a
// bucket; their types and device numbers survive a remount. Device nodes cannot be opened: the
// mount is nodev.
func TestSpecialFiles(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("special", keyA)
	fifo := filepath.Join(b, "fifo")
	must(t, syscall.Mkfifo(fifo, 0o644))
	done := make(chan []byte)
	go func() {
		got, _ := os.ReadFile(fifo)
		done <- got
	}()
	writeFile(t, fifo, []byte("through the pipe"))
	if got := <-done; string(got) != "through the pipe" {
		t.Fatalf("fifo: %q", got)
	}
	dev := filepath.Join(b, "null")
	must(t, syscall.Mknod(dev, syscall.S_IFCHR|0o666, 1<<8|3)) // like /dev/null
	sock := filepath.Join(b, "sock")
	l, err := net.Listen("unix", sock)
	must(t, err)
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("hello over a socket"))
			c.Close()
		}
	}()
	c, err := net.Dial("unix", sock)
	must(t, err)
	got, _ := io.ReadAll(c)
	c.Close()
	l.Close()
	if string(got) != "hello over a socket" {
		t.Fatalf("unix socket: %q", got)
	}
	must(t, syscall.Mknod(sock+"2", syscall.S_IFSOCK|0o600, 0))
	check := func(stage string) {
		t.Helper()
		for p, mode := range map[string]uint32{fifo: syscall.S_IFIFO, dev: syscall.S_IFCHR, sock + "2": syscall.S_IFSOCK} {
			st := lstat(t, p)
			if st.Mode&syscall.S_IFMT != mode {
				t.Fatalf("%s: %s has type %o, want %o", stage, p, st.Mode&syscall.S_IFMT, mode)
			}
			if mode == syscall.S_IFCHR && st.Rdev != 1<<8|3 {
				t.Fatalf("%s: device number %#x", stage, st.Rdev)
			}
		}
	}
	check("created")
	// FUSE mounts are nodev (as fusermount makes them), so a device node is not opened.
	_, err = os.OpenFile(dev, os.O_WRONLY, 0)
	errnoIs(t, "open of a device node on a nodev mount", err, syscall.EACCES)
	e.remount()
	check("after remount")
	errnoIs(t, "mknod at the mount root", syscall.Mknod(e.path("fifo"), syscall.S_IFIFO|0o644, 0), syscall.EPERM)
}

// TestTimes: utimensat with nanoseconds, UTIME_NOW and UTIME_OMIT, and which operations change
// mtime and ctime of a file and of its directory. Reading changes neither (and atime is only set
// explicitly, as with the noatime mount option).
func TestTimes(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("times", keyA)
	p := filepath.Join(b, "f")
	writeFile(t, p, []byte("x"))
	ts := []syscall.Timespec{{Sec: 1_000_000_000, Nsec: 123456789}, {Sec: 1_500_000_000, Nsec: 987654321}}
	must(t, syscall.UtimesNano(p, ts))
	st := lstat(t, p)
	if st.Atim != ts[0] || st.Mtim != ts[1] {
		t.Fatalf("utimensat: atime %v mtime %v, want %v %v", st.Atim, st.Mtim, ts[0], ts[1])
	}
	const utimeOmit = (1 << 30) - 2
	must(t, syscall.UtimesNano(p, []syscall.Timespec{{Nsec: utimeOmit}, {Sec: 7, Nsec: 8}}))
	if st := lstat(t, p); st.Atim != ts[0] || st.Mtim != (syscall.Timespec{Sec: 7, Nsec: 8}) {
		t.Fatalf("UTIME_OMIT: atime %v mtime %v", st.Atim, st.Mtim)
	}
	start := time.Now()
	must(t, syscall.UtimesNano(p, []syscall.Timespec{{Nsec: utimeNow}, {Nsec: utimeNow}}))
	if st := lstat(t, p); time.Unix(st.Mtim.Unix()).Before(start.Add(-time.Second)) {
		t.Fatalf("UTIME_NOW: mtime %v", st.Mtim)
	}

	type change struct {
		name               string
		do                 func()
		mtime, ctime, dirM bool
	}
	other := filepath.Join(b, "other")
	writeFile(t, other, []byte("o"))
	changes := []change{
		{"write", func() { writeAt(t, p, []byte("more"), 1) }, true, true, false},
		{"read", func() { readFile(t, p) }, false, false, false},
		{"chmod", func() { must(t, os.Chmod(p, 0o600)) }, false, true, false},
		{"chown", func() { must(t, os.Chown(p, 42, 43)) }, false, true, false},
		{"truncate", func() { must(t, os.Truncate(p, 2)) }, true, true, false},
		{"setxattr", func() { must(t, setxattr(p, "user.x", "1")) }, false, true, false},
		{"link", func() { must(t, os.Link(p, p+".l")) }, false, true, true},
		{"unlink of another name", func() { must(t, os.Remove(p+".l")) }, false, true, true},
		{"rename", func() { must(t, os.Rename(p, p+".r")); p += ".r" }, false, true, true},
		{"create in the directory", func() { writeFile(t, filepath.Join(b, "new"), nil) }, false, false, true},
		{"unlink in the directory", func() { must(t, os.Remove(other)) }, false, false, true},
	}
	for _, c := range changes {
		before, dirBefore := lstat(t, p), lstat(t, b)
		time.Sleep(2 * time.Millisecond)
		c.do()
		after, dirAfter := lstat(t, p), lstat(t, b)
		if got := after.Mtim != before.Mtim; got != c.mtime {
			t.Errorf("%s: mtime changed %v, want %v", c.name, got, c.mtime)
		}
		if got := after.Ctim != before.Ctim; got != c.ctime {
			t.Errorf("%s: ctime changed %v, want %v", c.name, got, c.ctime)
		}
		if got := dirAfter.Mtim != dirBefore.Mtim; got != c.dirM {
			t.Errorf("%s: directory mtime changed %v, want %v", c.name, got, c.dirM)
		}
		if c.ctime && !later(after.Ctim, before.Ctim) {
			t.Errorf("%s: ctime went from %v to %v", c.name, before.Ctim, after.Ctim)
		}
	}
	// Times outside what 64-bit nanoseconds hold are clamped; times before 1970 work.
	must(t, syscall.UtimesNano(p, []syscall.Timespec{{Sec: -1_000_000_000, Nsec: 5}, {Sec: 13_569_465_600}})) // 1938, 2400
	if st := lstat(t, p); st.Atim != (syscall.Timespec{Sec: -1_000_000_000, Nsec: 5}) || st.Mtim.Sec != 9_223_372_036 {
		t.Fatalf("times out of the usual range: atime %v mtime %v", st.Atim, st.Mtim)
	}
	// Nanosecond times survive a remount.
	must(t, syscall.UtimesNano(p, ts))
	e.remount()
	if st := lstat(t, p); st.Atim != ts[0] || st.Mtim != ts[1] {
		t.Fatalf("after remount: atime %v mtime %v", st.Atim, st.Mtim)
	}
}

func writeAt(t *testing.T, p string, d []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	must(t, err)
	closeAtEnd(t, f)
	_, err = f.WriteAt(d, off)
	must(t, err)
	must(t, f.Close())
}

// TestStatfs: statfs(2) on the mount and in a bucket.
func TestStatfs(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("statfs", keyA)
	writeFile(t, filepath.Join(b, "f"), randBytes(t, 1<<20))
	var st syscall.Statfs_t
	must(t, syscall.Statfs(b, &st))
	if st.Type != fuseSuperMagic || st.Bsize != 4096 || st.Namelen != 255 || st.Bavail == 0 || st.Bfree < st.Bavail || st.Files == 0 || st.Ffree == 0 {
		t.Fatalf("statfs: %+v", st)
	}
	if used := (st.Blocks - st.Bfree) * uint64(st.Bsize); used < 1<<20 {
		t.Fatalf("statfs: %d bytes used, want at least the 1 MiB written", used)
	}
	if out, err := run("df", "-P", b); err != nil || !strings.Contains(out, e.mnt) {
		t.Fatalf("df: %v %s", err, out)
	}
}

// TestNames: names of 255 bytes work everywhere, longer ones are ENAMETOOLONG.
func TestNames(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("names", keyA)
	ok := strings.Repeat("n", 255)
	long := strings.Repeat("l", 256)
	p := func(n string) string { return filepath.Join(b, n) }
	writeFile(t, p(ok), []byte("max"))
	must(t, os.Mkdir(p(ok[:254]+"d"), 0o755))
	must(t, os.Symlink(ok, p(ok[:254]+"s")))
	must(t, os.Link(p(ok), p(ok[:254]+"h")))
	must(t, os.Rename(p(ok[:254]+"h"), p(ok[:254]+"r")))
	ents, err := os.ReadDir(b)
	must(t, err)
	if len(ents) != 4 {
		t.Fatalf("readdir: %d entries", len(ents))
	}
	for _, n := range []string{ok, ok[:254] + "d", ok[:254] + "s", ok[:254] + "r"} {
		if _, err := os.Lstat(p(n)); err != nil {
			t.Fatalf("lstat of a 255-byte name: %v", err)
		}
	}
	_, err = os.Create(p(long))
	errnoIs(t, "create", err, syscall.ENAMETOOLONG)
	errnoIs(t, "mkdir", os.Mkdir(p(long), 0o755), syscall.ENAMETOOLONG)
	errnoIs(t, "symlink", os.Symlink("x", p(long)), syscall.ENAMETOOLONG)
	errnoIs(t, "link", os.Link(p(ok), p(long)), syscall.ENAMETOOLONG)
	errnoIs(t, "rename", os.Rename(p(ok), p(long)), syscall.ENAMETOOLONG)
	errnoIs(t, "mkfifo", syscall.Mkfifo(p(long), 0o644), syscall.ENAMETOOLONG)
	_, err = os.Lstat(p(long))
	errnoIs(t, "lstat", err, syscall.ENAMETOOLONG)
}

// TestErrnos: the errno a local filesystem gives, for the cases not covered above.
func TestErrnos(t *testing.T) {
	e := newEnv(t)
	e.logs.expect(`bucket name refused`)
	b := e.bucket("errnos", keyA)
	other := e.bucket("errnos-other", keyA)
	p := func(n ...string) string { return filepath.Join(append([]string{b}, n...)...) }
	writeFile(t, p("file"), []byte("f"))
	must(t, os.MkdirAll(p("dir", "sub"), 0o755))
	_, statErr := os.Stat(p("file", "below"))
	_, readErr := os.ReadFile(p("dir"))
	cases := []struct {
		what string
		err  error
		want syscall.Errno
	}{
		{"rmdir of a non-empty directory", syscall.Rmdir(p("dir")), syscall.ENOTEMPTY},
		{"rmdir of a file", syscall.Rmdir(p("file")), syscall.ENOTDIR},
		{"unlink of a directory", syscall.Unlink(p("dir")), syscall.EISDIR},
		{"read of a directory", readErr, syscall.EISDIR},
		{"a file as a directory", statErr, syscall.ENOTDIR},
		{"mkdir of an existing name", syscall.Mkdir(p("file"), 0o755), syscall.EEXIST},
		{"symlink onto an existing name", syscall.Symlink("x", p("dir")), syscall.EEXIST},
		{"mkfifo onto an existing name", syscall.Mkfifo(p("file"), 0o644), syscall.EEXIST},
		{"rename across buckets", syscall.Rename(p("file"), filepath.Join(other, "file")), syscall.EXDEV},
		{"link across buckets", syscall.Link(p("file"), filepath.Join(other, "file")), syscall.EXDEV},
		{"rename a directory across buckets", syscall.Rename(p("dir"), filepath.Join(other, "dir")), syscall.EXDEV},
		{"rename of a bucket", syscall.Rename(b, e.path("renamed")), syscall.EPERM},
		{"rmdir of '.'", syscall.Rmdir(p("dir") + "/."), syscall.EINVAL},
		{"bucket name S3 refuses", syscall.Mkdir(e.path("Bad_Name"), 0o755), syscall.EINVAL},
		{"file at the mount root", syscall.Mkfifo(e.path("fifo"), 0o644), syscall.EPERM},
		{"symlink at the mount root", syscall.Symlink("x", e.path("link")), syscall.EPERM},
		{"unlink of a missing name", syscall.Unlink(p("missing")), syscall.ENOENT},
		{"truncate to a negative size", syscall.Truncate(p("file"), -1), syscall.EINVAL},
	}
	for _, c := range cases {
		errnoIs(t, c.what, c.err, c.want)
	}
}

// TestCopyFileRange: copy_file_range(2) between kmipfs files works (the kernel copies by reading
// and writing, since each file has its own key), and cp works within kmipfs and from and to the
// plain disk (where the kernel refuses copy_file_range between filesystems, EXDEV, and cp falls
// back, as for any two filesystems).
func TestCopyFileRange(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("copy", keyA)
	data := randBytes(t, 3<<20+1234)
	src := filepath.Join(b, "src")
	writeFile(t, src, data)
	local := filepath.Join(t.TempDir(), "local")
	writeFile(t, local, data)
	for _, c := range []struct{ from, to string }{{src, filepath.Join(b, "dst")}, {filepath.Join(b, "dst"), filepath.Join(b, "sub-dst")}} {
		in, err := os.Open(c.from)
		must(t, err)
		closeAtEnd(t, in)
		out, err := os.Create(c.to)
		must(t, err)
		closeAtEnd(t, out)
		var offIn, offOut int64 = 1000, 0
		for {
			n, err := copyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, len(data))
			if err != nil {
				t.Fatalf("copy_file_range %s -> %s: %v", c.from, c.to, err)
			}
			if n == 0 {
				break
			}
		}
		must(t, out.Close())
		want := data[1000:]
		if c.from != src {
			want = data[2000:]
		}
		if got := readFile(t, c.to); !bytes.Equal(got, want) {
			t.Fatalf("copy_file_range %s -> %s: content differs", c.from, c.to)
		}
	}
	for _, c := range []struct{ from, to string }{
		{src, filepath.Join(b, "by-cp")}, {local, filepath.Join(b, "from-disk")}, {src, filepath.Join(t.TempDir(), "to-disk")},
	} {
		if out, err := run("cp", c.from, c.to); err != nil {
			t.Fatalf("cp %s %s: %v %s", c.from, c.to, err, out)
		}
		if got := readFile(t, c.to); !bytes.Equal(got, data) {
			t.Fatalf("cp %s %s: content differs", c.from, c.to)
		}
	}
}

func copyFileRange(in int, offIn *int64, out int, offOut *int64, n int) (int, error) {
	nr := map[string]uintptr{"amd64": 326, "arm64": 285, "386": 377, "riscv64": 285, "ppc64le": 379, "s390x": 375}[runtime.GOARCH]
	if nr == 0 {
		return 0, syscall.ENOSYS
	}
	r, _, e := syscall.Syscall6(nr, uintptr(in), uintptr(unsafe.Pointer(offIn)), uintptr(out), uintptr(unsafe.Pointer(offOut)), uintptr(n), 0)
	if e != 0 {
		return int(r), e
	}
	return int(r), nil
}
