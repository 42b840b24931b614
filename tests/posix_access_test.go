package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func withAllowOther() envOption { return func(e *env) { e.fsCfg.AllowOther = true } }

// nobody is the unprivileged user the permission tests act as.
const nobody = 65534

// TestPermissions: with default_permissions the kernel checks mode bits, sticky directories and
// ownership for every user; kmipfs adds the owner check for key ids. The other user is a helper
// process running as nobody (the mount has allow_other so that it may use it at all).
func TestPermissions(t *testing.T) {
	e := newEnv(t, withAllowOther())
	makeReachable(t, e.mnt)
	bin := publicHelper(t)
	b := e.bucket("perm", keyA)
	p := func(n ...string) string { return filepath.Join(append([]string{b}, n...)...) }
	writeFile(t, p("rootfile"), []byte("root's")) // 0644
	must(t, os.WriteFile(p("secret"), []byte("s"), 0o600))
	must(t, os.Chmod(p("secret"), 0o600))
	must(t, os.WriteFile(p("shared"), []byte("w"), 0o666))
	must(t, os.Chmod(p("shared"), 0o666))
	must(t, os.Mkdir(p("closed"), 0o700))
	must(t, os.Mkdir(p("tmp"), 0o777))
	must(t, syscall.Chmod(p("tmp"), 0o1777)) // sticky, like /tmp (os.Chmod would drop the bit)
	must(t, os.Mkdir(p("open"), 0o777))
	must(t, os.Chmod(p("open"), 0o777))
	must(t, os.Mkdir(p("sgid"), 0o777))
	must(t, os.Chown(p("sgid"), 0, 1234))
	must(t, syscall.Chmod(p("sgid"), 0o2777))
	writeFile(t, p("tmp", "roots"), nil)

	ops := []struct {
		op   string
		want syscall.Errno
	}{
		{op("read", p("rootfile")), 0},
		{op("write", p("rootfile"), "x"), syscall.EACCES},
		{op("read", p("secret")), syscall.EACCES},
		{op("write", p("shared"), "by nobody"), 0},
		{op("create", p("new")), syscall.EACCES},
		{op("unlink", p("rootfile")), syscall.EACCES},
		{op("mkdir", p("dir")), syscall.EACCES},
		{op("readdir", p("closed")), syscall.EACCES},
		{op("stat", p("closed", "x")), syscall.EACCES},
		{op("chmod", p("rootfile"), "777"), syscall.EPERM},
		{op("chown", p("shared"), strconv.Itoa(nobody), strconv.Itoa(nobody)), syscall.EPERM},
		{op("truncate", p("rootfile"), "0"), syscall.EACCES},
		{op("utimes-now", p("shared")), 0},                 // write permission is enough for "now"
		{op("utimes", p("shared"), "1000"), syscall.EPERM}, // an explicit time needs the owner
		{op("setxattr", p("rootfile"), "user.x", "1"), syscall.EACCES},
		{op("setxattr", p("shared"), "user.x", "1"), 0},
		{op("setxattr", p("shared"), "trusted.x", "1"), syscall.EPERM},
		{op("setxattr", p("shared"), "security.x", "1"), syscall.EPERM},
		// A key id may be changed by the owner only, even with write permission.
		{op("setxattr", p("open"), "user.kmipfs.key-id", keyB), syscall.EPERM},
		{op("setxattr", p("shared"), "user.kmipfs.key-id", keyB), syscall.EPERM},
		// The sticky directory: nobody's own files come and go, root's stay.
		{op("create", p("tmp", "mine")), 0},
		{op("rename", p("tmp", "mine"), p("tmp", "mine2")), 0},
		{op("unlink", p("tmp", "roots")), syscall.EPERM},
		{op("rename", p("tmp", "roots"), p("tmp", "stolen")), syscall.EPERM},
		{op("unlink", p("tmp", "mine2")), 0},
		{op("create", p("open", "f")), 0},
		{op("chmod", p("open", "f"), "600"), 0},
		{op("symlink", "target", p("open", "l")), 0},
		{op("link", p("rootfile"), p("open", "hl")), 0}, // fs.protected_hardlinks may refuse this
		{op("mkdir", p("open", "d")), 0},
		{op("rmdir", p("open", "d")), 0},
		// A set-group-ID directory gives new entries its group.
		{op("create", p("sgid", "f")), 0},
		{op("mkdir", p("sgid", "d")), 0},
	}
	args := make([]string, len(ops))
	for i, o := range ops {
		args[i] = o.op
	}
	// Whether the kernel lets nobody hard-link root's file depends on fs.protected_hardlinks.
	if v, err := os.ReadFile("/proc/sys/fs/protected_hardlinks"); err == nil && strings.TrimSpace(string(v)) == "1" {
		for i := range ops {
			if strings.HasPrefix(ops[i].op, "link\x1f") {
				ops[i].want = syscall.EPERM
			}
		}
	}
	got := asUser(t, bin, nobody, nobody, args...)
	for i, o := range ops {
		if got[i] != o.want {
			t.Errorf("as nobody: %s: got %v (%d), want %v (%d)", strings.ReplaceAll(o.op, "\x1f", " "), got[i], got[i], o.want, o.want)
		}
	}
	if st := lstat(t, p("open", "f")); st.Uid != nobody || st.Gid != nobody || st.Mode&0o777 != 0o600 {
		t.Errorf("file made by nobody: uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode)
	}
	if st := lstat(t, p("sgid", "f")); st.Gid != 1234 || st.Uid != nobody {
		t.Errorf("file in a set-group-ID directory: uid %d gid %d", st.Uid, st.Gid)
	}
	if st := lstat(t, p("sgid", "d")); st.Gid != 1234 || st.Mode&syscall.S_ISGID == 0 {
		t.Errorf("directory in a set-group-ID directory: gid %d mode %o", st.Gid, st.Mode)
	}
	if got := readFile(t, p("shared")); string(got) != "by nobody" {
		t.Errorf("write by nobody: %q", got)
	}
	// Root may do what nobody may not.
	must(t, os.Chown(p("open", "f"), 0, 0))
	must(t, setxattr(p("shared"), "trusted.x", "1"))
}

// TestLocks: flock(2) and POSIX record locks between processes, open file description locks
// between two descriptors of one process, F_GETLK, F_SETLKW waiting, and release on close.
func TestLocks(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("locks", keyA)
	p := filepath.Join(b, "db")
	writeFile(t, p, make([]byte, 1000))

	// flock: another process holds LOCK_EX.
	h, l := holdLock(t, "flock", p)
	if l != "locked" {
		t.Fatalf("helper flock: %s", l)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	errnoIs(t, "flock held by another process", syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB), syscall.EWOULDBLOCK)
	h.release()
	must(t, syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB))
	h2, l := holdLock(t, "flock", p)
	if l != strconv.Itoa(int(syscall.EWOULDBLOCK)) {
		t.Fatalf("helper flock while we hold it: %s", l)
	}
	h2.release()
	must(t, syscall.Flock(int(f.Fd()), syscall.LOCK_UN))

	// POSIX record locks: the helper write-locks bytes [100, 200).
	h, l = holdLock(t, "posix", p, "100", "100")
	if l != "locked" {
		t.Fatalf("helper fcntl: %s", l)
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Start: 150, Len: 10}
	errnoIs(t, "F_SETLK on a locked range", syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk), syscall.EAGAIN)
	must(t, syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk))
	if lk.Type != syscall.F_WRLCK || lk.Pid != int32(h.cmd.Process.Pid) || lk.Start != 100 || lk.Len != 100 {
		t.Fatalf("F_GETLK: %+v (helper pid %d)", lk, h.cmd.Process.Pid)
	}
	free := syscall.Flock_t{Type: syscall.F_WRLCK, Start: 200, Len: 50}
	must(t, syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &free))
	// A second helper waits in F_SETLKW for the range the first holds, and gets it when the
	// first exits.
	w := startLock(t, "posixw", p, "120", "10")
	select {
	case l := <-w.line:
		t.Fatalf("F_SETLKW did not wait: %s", l)
	case <-time.After(300 * time.Millisecond):
	}
	h.release()
	select {
	case l := <-w.line:
		if l != "locked" {
			t.Fatalf("F_SETLKW: %s", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("F_SETLKW still waiting after the lock was released")
	}
	w.release()
	// Closing any descriptor of the file drops this process's POSIX locks.
	g, err := os.Open(p)
	must(t, err)
	must(t, g.Close())
	h, l = holdLock(t, "posix", p, "200", "50")
	if l != "locked" {
		t.Fatalf("lock after our close: %s", l)
	}
	h.release()

	// Open file description locks conflict between descriptors of one process.
	const ofdSetlk, ofdGetlk = 37, 36
	g, err = os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	defer g.Close()
	must(t, syscall.FcntlFlock(f.Fd(), ofdSetlk, &syscall.Flock_t{Type: syscall.F_WRLCK}))
	errnoIs(t, "OFD lock from another descriptor", syscall.FcntlFlock(g.Fd(), ofdSetlk, &syscall.Flock_t{Type: syscall.F_RDLCK}), syscall.EAGAIN)
	q := syscall.Flock_t{Type: syscall.F_RDLCK}
	must(t, syscall.FcntlFlock(g.Fd(), ofdGetlk, &q))
	if q.Type != syscall.F_WRLCK || q.Pid != -1 {
		t.Fatalf("F_OFD_GETLK: %+v", q)
	}
}

// TestMmap: MAP_SHARED reads and writes are coherent with read(2) and write(2) and with each
// other, dirty pages reach the store on msync, munmap and close, and persist across a remount.
// The mapping is made by a helper process (mapping the in-process mount would deadlock).
func TestMmap(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("mmap", keyA)
	p := filepath.Join(b, "f")
	ref := make([]byte, 5*4096+300)
	copy(ref, randBytes(t, len(ref)))
	writeFile(t, p, ref)
	m := startMmapper(t, p)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	closeAtEnd(t, f)
	check := func(stage string) {
		t.Helper()
		got := make([]byte, len(ref)+10)
		n, _ := f.ReadAt(got, 0)
		if !bytes.Equal(got[:n], ref) {
			t.Fatalf("%s: read(2) differs from what was written", stage)
		}
		mm, err := m.read(0, len(ref))
		if err != nil || !bytes.Equal(mm, ref) {
			t.Fatalf("%s: mmap read differs: %v", stage, err)
		}
	}
	check("initial")
	// write(2) is seen by a mapping.
	d := randBytes(t, 5000)
	_, err = f.WriteAt(d, 3000)
	must(t, err)
	copy(ref[3000:], d)
	check("after write(2)")
	// Mapping writes are seen by read(2), with and without msync, and with the mapping's
	// descriptor closed first.
	for i, flags := range []byte{0, mmapSync, mmapAsync, mmapCloseFd} {
		d := randBytes(t, 3000)
		off := int64(1000 + i*4500)
		must(t, m.write(off, d, flags))
		copy(ref[off:], d)
		check("after mmap write " + strconv.Itoa(i))
	}
	// The last page, past the end of the file within it, does not change the size.
	must(t, m.write(int64(len(ref)-10), []byte("tail end!!"), 0))
	copy(ref[len(ref)-10:], "tail end!!")
	if st := lstat(t, p); st.Size != int64(len(ref)) {
		t.Fatalf("size after a write in the last page: %d", st.Size)
	}
	check("after writing the last page")
	must(t, f.Close())
	m.stop()
	e.remount()
	if got := readFile(t, p); !bytes.Equal(got, ref) {
		t.Fatal("after remount: content differs")
	}
}

// TestXattrs: user.* values up to the kernel's 64 KiB, names up to 255 bytes, trusted.* and
// security.* as root, the XATTR_CREATE/XATTR_REPLACE flags, namespaces kmipfs does not store, and
// the kmipfs control attributes that listxattr leaves out.
func TestXattrs(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("xattr", keyA)
	p := filepath.Join(b, "f")
	writeFile(t, p, []byte("x"))
	must(t, os.Mkdir(filepath.Join(b, "d"), 0o755))
	big := randBytes(t, 65536)
	must(t, syscall.Setxattr(p, "user.big", big, 0))
	got := make([]byte, 65536)
	if n, err := syscall.Getxattr(p, "user.big", got); err != nil || n != len(big) || !bytes.Equal(got, big) {
		t.Fatalf("64 KiB value: %d %v", n, err)
	}
	errnoIs(t, "value over 64 KiB", syscall.Setxattr(p, "user.bigger", make([]byte, 65537), 0), syscall.E2BIG)
	n, err := syscall.Getxattr(p, "user.big", make([]byte, 10))
	errnoIs(t, "small buffer", err, syscall.ERANGE)
	_ = n
	longName := "user." + strings.Repeat("n", 250)
	must(t, syscall.Setxattr(p, longName, []byte("v"), 0))
	errnoIs(t, "name over 255 bytes", syscall.Setxattr(p, longName+"x", []byte("v"), 0), syscall.ERANGE)
	for _, name := range []string{"trusted.t", "security.s"} {
		must(t, syscall.Setxattr(p, name, []byte(name), 0))
		if v, err := getxattr(p, name); err != nil || v != name {
			t.Fatalf("%s: %q %v", name, v, err)
		}
	}
	must(t, syscall.Setxattr(filepath.Join(b, "d"), "user.on-dir", []byte("dir"), 0))
	const xattrCreate, xattrReplace = 1, 2
	errnoIs(t, "XATTR_CREATE on an existing name", syscall.Setxattr(p, "user.big", []byte("v"), xattrCreate), syscall.EEXIST)
	errnoIs(t, "XATTR_REPLACE on a missing name", syscall.Setxattr(p, "user.none", []byte("v"), xattrReplace), syscall.ENODATA)
	must(t, syscall.Setxattr(p, "user.big", []byte("small"), xattrReplace))
	must(t, syscall.Setxattr(p, "user.empty", nil, 0))
	if v, err := getxattr(p, "user.empty"); err != nil || v != "" {
		t.Fatalf("empty value: %q %v", v, err)
	}
	errnoIs(t, "a namespace kmipfs does not store", syscall.Setxattr(p, "other.x", []byte("v"), 0), syscall.EOPNOTSUPP)
	errnoIs(t, "POSIX ACLs", syscall.Setxattr(p, "system.posix_acl_access", aclWithUser(1000), 0), syscall.EOPNOTSUPP)
	_, err = getxattr(p, "system.posix_acl_access")
	errnoIs(t, "no ACL to read", err, syscall.ENODATA)
	errnoIs(t, "user.* on a symlink", func() error {
		must(t, os.Symlink("f", filepath.Join(b, "l")))
		return lsetxattr(filepath.Join(b, "l"), "user.x", []byte("v"))
	}(), syscall.EPERM)
	// listxattr: the stored names, without the kmipfs control attributes (which getxattr still
	// answers).
	list := listxattr(t, p)
	want := []string{longName, "security.s", "trusted.t", "user.big", "user.empty"}
	sort.Strings(want)
	if !equalStrings(list, want) {
		t.Fatalf("listxattr: %q, want %q", list, want)
	}
	if v, err := getxattr(p, "user.kmipfs.key-id"); err != nil || v != keyA {
		t.Fatalf("key id by name: %q %v", v, err)
	}
	if list := listxattr(t, b); len(list) != 0 {
		t.Fatalf("listxattr of the bucket lists %q", list)
	}
	must(t, syscall.Removexattr(p, "user.empty"))
	errnoIs(t, "remove a missing name", syscall.Removexattr(p, "user.empty"), syscall.ENODATA)
	// Names until the listing would pass the kernel's 64 KiB limit: ENOSPC, and the listing
	// still works.
	many := filepath.Join(b, "many")
	writeFile(t, many, nil)
	var stored int
	for i := 0; ; i++ {
		name := "user." + strings.Repeat("m", 240) + strconv.Itoa(1000+i)
		if err := syscall.Setxattr(many, name, []byte("v"), 0); err != nil {
			errnoIs(t, "setxattr past the listing limit", err, syscall.ENOSPC)
			break
		}
		stored++
	}
	if l := listxattr(t, many); len(l) != stored || stored < 200 {
		t.Fatalf("%d names stored, %d listed", stored, len(l))
	}
	e.remount()
	if v, err := getxattr(p, longName); err != nil || v != "v" {
		t.Fatalf("after remount: %q %v", v, err)
	}
	if v, err := getxattr(filepath.Join(b, "d"), "user.on-dir"); err != nil || v != "dir" {
		t.Fatalf("after remount, directory xattr: %q %v", v, err)
	}
}

// aclWithUser is a system.posix_acl_access value granting uid read access (user::rw-,
// user:uid:r--, group::r--, mask::r--, other::r--).
func aclWithUser(uid uint32) []byte {
	b := []byte{2, 0, 0, 0}
	entry := func(tag, perm uint16, id uint32) {
		b = append(b, byte(tag), byte(tag>>8), byte(perm), byte(perm>>8), byte(id), byte(id>>8), byte(id>>16), byte(id>>24))
	}
	entry(0x01, 6, ^uint32(0))
	entry(0x02, 4, uid)
	entry(0x04, 4, ^uint32(0))
	entry(0x10, 4, ^uint32(0))
	entry(0x20, 4, ^uint32(0))
	return b
}

func lsetxattr(path, name string, value []byte) error {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return err
	}
	n, err := syscall.BytePtrFromString(name)
	if err != nil {
		return err
	}
	var v unsafe.Pointer
	if len(value) > 0 {
		v = unsafe.Pointer(&value[0])
	}
	_, _, e := syscall.Syscall6(syscall.SYS_LSETXATTR, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(n)), uintptr(v), uintptr(len(value)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func listxattr(t *testing.T, p string) []string {
	t.Helper()
	buf := make([]byte, 1<<17)
	n, err := syscall.Listxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var out []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestReaddirChanging: a listing in progress while entries are removed and added returns every
// entry that exists throughout exactly once, "." and ".." with the right inode numbers, and
// rewinddir sees the directory as it is now.
func TestReaddirChanging(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("readdir", keyA)
	d := filepath.Join(b, "d")
	must(t, os.Mkdir(d, 0o755))
	const n = 600
	for i := 0; i < n; i++ {
		writeFile(t, filepath.Join(d, "f"+strconv.Itoa(i)), nil)
	}
	fd, err := syscall.Open(d, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	must(t, err)
	defer syscall.Close(fd)
	seen := map[string]int{}
	inos := map[string]uint64{}
	buf := make([]byte, 1024) // a few entries per call
	read := func() bool {
		nb, err := syscall.ReadDirent(fd, buf)
		must(t, err)
		for _, ent := range parseDirents(buf[:nb]) {
			seen[ent.name]++
			inos[ent.name] = ent.ino
		}
		return nb > 0
	}
	read()
	// Remove every third file not yet seen and add new ones while the listing goes on.
	removed := map[string]bool{}
	for i := 0; i < n; i += 3 {
		name := "f" + strconv.Itoa(i)
		if seen[name] == 0 {
			must(t, os.Remove(filepath.Join(d, name)))
			removed[name] = true
		}
		if i%30 == 0 {
			writeFile(t, filepath.Join(d, "new"+strconv.Itoa(i)), nil)
			read()
		}
	}
	for read() {
	}
	for i := 0; i < n; i++ {
		name := "f" + strconv.Itoa(i)
		if !removed[name] && seen[name] != 1 {
			t.Errorf("%s listed %d times", name, seen[name])
		}
		if seen[name] > 1 {
			t.Errorf("%s listed %d times", name, seen[name])
		}
	}
	if seen["."] != 1 || seen[".."] != 1 || inos["."] != lstat(t, d).Ino || inos[".."] != lstat(t, b).Ino {
		t.Errorf(". and ..: seen %d %d, inos %d %d", seen["."], seen[".."], inos["."], inos[".."])
	}
	// rewinddir: the removed files are gone, the new ones are there.
	_, err = syscall.Seek(fd, 0, 0)
	must(t, err)
	seen = map[string]int{}
	for read() {
	}
	for name := range removed {
		if seen[name] != 0 {
			t.Errorf("removed %s listed after rewinddir", name)
		}
	}
	if seen["new0"] != 1 || seen["f1"] != 1 {
		t.Errorf("after rewinddir: new0 %d f1 %d", seen["new0"], seen["f1"])
	}
	if want := n - len(removed) + n/30 + 2; len(seen) != want {
		t.Errorf("after rewinddir: %d names, want %d", len(seen), want)
	}
}

type dirent struct {
	name string
	ino  uint64
}

// parseDirents decodes linux_dirent64 records.
func parseDirents(b []byte) []dirent {
	var out []dirent
	for len(b) >= 19 {
		ino := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 | uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
		reclen := int(b[16]) | int(b[17])<<8
		name := b[19:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		out = append(out, dirent{string(name), ino})
		b = b[reclen:]
	}
	return out
}
