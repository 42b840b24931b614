package tests

// Helper processes. Some things cannot be done from the test process itself: mapping a file of
// the in-process mount deadlocks (a page fault on it blocks an OS thread that the Go runtime may
// need to serve the fault), POSIX record locks belong to a process, and permission checks need
// another user. For those the test binary runs itself as a helper: with KMIPFS_TEST_HELPER set,
// init runs the helper named there and exits before TestMain mounts anything.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

const helperEnv = "KMIPFS_TEST_HELPER"

func init() {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return
	}
	var err error
	switch mode {
	case "mmap":
		err = mmapHelper(os.Stdin, os.Stdout)
	case "ops":
		err = opsHelper(os.Args[1:], os.Stdout)
	case "lock":
		err = lockHelper(os.Args[1:])
	case "stress":
		err = stressHelper(os.Args[1:])
	default:
		err = fmt.Errorf("unknown helper %q", mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", mode, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// helperCmd returns a command that runs the helper mode of this test binary.
func helperCmd(t *testing.T, mode string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	return cmd
}

// publicHelper copies the test binary to a directory every user can reach and returns its path,
// for helpers that run as another user (go test keeps the binary in a private directory).
func publicHelper(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	makeReachable(t, dir)
	dst := filepath.Join(dir, "helper")
	in, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// makeReachable lets every user search dir and its parents up to the temporary directory root.
func makeReachable(t *testing.T, dir string) {
	t.Helper()
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); strings.HasPrefix(d, tmp+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// ---- ops: one system call per argument, as another user ----

// asUser runs the ops helper as uid/gid and returns one errno per op (0 for success).
func asUser(t *testing.T, bin string, uid, gid uint32, ops ...string) []syscall.Errno {
	t.Helper()
	cmd := exec.Command(bin, ops...)
	cmd.Env = append(os.Environ(), helperEnv+"=ops")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}}
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("ops helper as %d: %v %s", uid, err, stderr)
	}
	fields := strings.Fields(string(out))
	if len(fields) != len(ops) {
		t.Fatalf("ops helper: %d results for %d ops: %q", len(fields), len(ops), out)
	}
	res := make([]syscall.Errno, len(ops))
	for i, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("ops helper output %q", out)
		}
		res[i] = syscall.Errno(n)
	}
	return res
}

// opsHelper runs ops of the form "name\x1farg\x1farg..." and prints each one's errno.
func opsHelper(ops []string, w io.Writer) error {
	for _, op := range ops {
		a := strings.Split(op, "\x1f")
		var err error
		switch a[0] {
		case "read":
			_, err = os.ReadFile(a[1])
		case "write":
			var f *os.File
			if f, err = os.OpenFile(a[1], os.O_WRONLY, 0); err == nil {
				_, err = f.Write([]byte(a[2]))
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
		case "create":
			var fd int
			if fd, err = syscall.Open(a[1], syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY, 0o644); err == nil {
				syscall.Close(fd)
			}
		case "mkdir":
			err = syscall.Mkdir(a[1], 0o755)
		case "rmdir":
			err = syscall.Rmdir(a[1])
		case "unlink":
			err = syscall.Unlink(a[1])
		case "rename":
			err = syscall.Rename(a[1], a[2])
		case "link":
			err = syscall.Link(a[1], a[2])
		case "symlink":
			err = syscall.Symlink(a[1], a[2])
		case "chmod":
			m, _ := strconv.ParseUint(a[2], 8, 32)
			err = syscall.Chmod(a[1], uint32(m))
		case "chown":
			u, _ := strconv.Atoi(a[2])
			g, _ := strconv.Atoi(a[3])
			err = syscall.Chown(a[1], u, g)
		case "utimes-now":
			err = syscall.UtimesNano(a[1], []syscall.Timespec{{Nsec: utimeNow}, {Nsec: utimeNow}})
		case "utimes":
			sec, _ := strconv.ParseInt(a[2], 10, 64)
			err = syscall.UtimesNano(a[1], []syscall.Timespec{{Sec: sec}, {Sec: sec}})
		case "truncate":
			n, _ := strconv.ParseInt(a[2], 10, 64)
			err = syscall.Truncate(a[1], n)
		case "setxattr":
			err = syscall.Setxattr(a[1], a[2], []byte(a[3]), 0)
		case "getxattr":
			_, err = syscall.Getxattr(a[1], a[2], make([]byte, 1024))
		case "removexattr":
			err = syscall.Removexattr(a[1], a[2])
		case "readdir":
			var f *os.File
			if f, err = os.Open(a[1]); err == nil {
				_, err = f.Readdirnames(-1)
				f.Close()
			}
		case "stat":
			var st syscall.Stat_t
			err = syscall.Stat(a[1], &st)
		default:
			return fmt.Errorf("unknown op %q", a[0])
		}
		fmt.Fprintln(w, int(errnoOf(err)))
	}
	return nil
}

// op builds one ops-helper argument.
func op(name string, args ...string) string {
	return strings.Join(append([]string{name}, args...), "\x1f")
}

// utimeNow is UTIME_NOW for utimensat(2).
const utimeNow = (1 << 30) - 1

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return syscall.EIO
}

// ---- mmap: a server that reads and writes a file through shared mappings ----

// mmapper drives an mmap helper process that serves requests for one file.
type mmapper struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	errb *syncBuffer
}

// mmap request flags.
const (
	mmapSync    = 1 << iota // msync(MS_SYNC) before munmap
	mmapAsync               // msync(MS_ASYNC) before munmap
	mmapCloseFd             // close the file before touching the mapping
)

func startMmapper(t *testing.T, path string) *mmapper {
	t.Helper()
	cmd := helperCmd(t, "mmap", path)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	m := &mmapper{t: t, cmd: cmd, in: in, out: bufio.NewReader(out), errb: &syncBuffer{}}
	cmd.Stderr = m.errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.stop)
	return m
}

func (m *mmapper) stop() {
	if m.cmd == nil {
		return
	}
	m.in.Close()
	done := make(chan struct{})
	go func() { m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-done
	}
	m.cmd = nil
}

func (m *mmapper) request(kind byte, flags byte, off int64, n int, data []byte) ([]byte, error) {
	hdr := make([]byte, 14)
	hdr[0], hdr[1] = kind, flags
	binary.LittleEndian.PutUint64(hdr[2:], uint64(off))
	binary.LittleEndian.PutUint32(hdr[10:], uint32(n))
	if _, err := m.in.Write(append(hdr, data...)); err != nil {
		return nil, fmt.Errorf("mmap helper: %v (stderr: %s)", err, m.errb)
	}
	var st [8]byte
	if _, err := io.ReadFull(m.out, st[:]); err != nil {
		return nil, fmt.Errorf("mmap helper: %v (stderr: %s)", err, m.errb)
	}
	if errno := binary.LittleEndian.Uint32(st[:4]); errno != 0 {
		return nil, syscall.Errno(errno)
	}
	got := make([]byte, binary.LittleEndian.Uint32(st[4:]))
	if _, err := io.ReadFull(m.out, got); err != nil {
		return nil, fmt.Errorf("mmap helper: %v (stderr: %s)", err, m.errb)
	}
	return got, nil
}

// read returns n bytes at off read through a shared read-only mapping.
func (m *mmapper) read(off int64, n int) ([]byte, error) { return m.request('R', 0, off, n, nil) }

// write stores data at off through a shared writable mapping, then unmaps it.
func (m *mmapper) write(off int64, data []byte, flags byte) error {
	_, err := m.request('W', flags, off, len(data), data)
	return err
}

func mmapHelper(stdin io.Reader, stdout io.Writer) error {
	path := os.Args[1]
	r := bufio.NewReader(stdin)
	w := bufio.NewWriter(stdout)
	hdr := make([]byte, 14)
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		kind, flags := hdr[0], hdr[1]
		off := int64(binary.LittleEndian.Uint64(hdr[2:]))
		n := int(binary.LittleEndian.Uint32(hdr[10:]))
		var data []byte
		if kind == 'W' {
			data = make([]byte, n)
			if _, err := io.ReadFull(r, data); err != nil {
				return err
			}
		}
		out, err := mmapOp(path, kind, flags, off, n, data)
		var st [8]byte
		binary.LittleEndian.PutUint32(st[:4], uint32(errnoOf(err)))
		binary.LittleEndian.PutUint32(st[4:], uint32(len(out)))
		w.Write(st[:])
		w.Write(out)
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

func mmapOp(path string, kind, flags byte, off int64, n int, data []byte) ([]byte, error) {
	mode, prot := os.O_RDONLY, syscall.PROT_READ
	if kind == 'W' {
		mode, prot = os.O_RDWR, syscall.PROT_READ|syscall.PROT_WRITE
	}
	f, err := os.OpenFile(path, mode, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if n == 0 {
		return nil, nil
	}
	page := int64(os.Getpagesize())
	start := off &^ (page - 1)
	mem, err := syscall.Mmap(int(f.Fd()), start, int(off-start)+n, prot, syscall.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	if flags&mmapCloseFd != 0 {
		f.Close()
	}
	defer syscall.Munmap(mem)
	region := mem[off-start:]
	if kind == 'R' {
		return append([]byte(nil), region...), nil
	}
	copy(region, data)
	switch {
	case flags&mmapSync != 0:
		err = msync(mem, syscall.MS_SYNC)
	case flags&mmapAsync != 0:
		err = msync(mem, syscall.MS_ASYNC)
	}
	return nil, err
}

func msync(b []byte, flags int) error {
	_, _, e := syscall.Syscall(syscall.SYS_MSYNC, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(flags))
	if e != 0 {
		return e
	}
	return nil
}

// ---- lock: a process that holds a lock until its stdin closes ----

// lockHelper takes a lock on args[1] and prints "locked" (or the errno), then waits for stdin to
// close. args[0] is "flock" (LOCK_EX), "posix" (F_SETLK F_WRLCK on bytes [args[2], +args[3]))
// or "posixw" (the same with F_SETLKW).
func lockHelper(args []string) error {
	f, err := os.OpenFile(args[1], os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	switch args[0] {
	case "flock":
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	case "posix", "posixw":
		start, _ := strconv.ParseInt(args[2], 10, 64)
		n, _ := strconv.ParseInt(args[3], 10, 64)
		cmd := syscall.F_SETLK
		if args[0] == "posixw" {
			cmd = syscall.F_SETLKW
		}
		err = syscall.FcntlFlock(f.Fd(), cmd, &syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: start, Len: n})
	default:
		return fmt.Errorf("unknown lock %q", args[0])
	}
	if err != nil {
		fmt.Println(int(errnoOf(err)))
	} else {
		fmt.Println("locked")
	}
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// lockHolder is a running lock helper.
type lockHolder struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	line chan string
	once sync.Once
}

// holdLock starts a lock helper and returns once it reported its result (see lockHelper).
func holdLock(t *testing.T, args ...string) (*lockHolder, string) {
	t.Helper()
	h := startLock(t, args...)
	select {
	case l := <-h.line:
		return h, l
	case <-time.After(20 * time.Second):
		t.Fatalf("lock helper %v did not answer", args)
		return nil, ""
	}
}

func startLock(t *testing.T, args ...string) *lockHolder {
	t.Helper()
	cmd := helperCmd(t, "lock", args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &lockHolder{cmd: cmd, in: in, line: make(chan string, 1)}
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		h.line <- strings.TrimSpace(l)
	}()
	t.Cleanup(h.release)
	return h
}

// release ends the helper, which drops its lock.
func (h *lockHolder) release() {
	h.once.Do(func() {
		h.in.Close()
		h.cmd.Wait()
	})
}
