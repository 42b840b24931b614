package tests

// The crash test: a real kmipfs process serves a mount while this process runs a mixed workload
// on it (writes at random offsets, appends, truncates, renames, unlinks, fsyncs) and keeps a model
// of what every fsync made durable. At a random moment the kmipfs process is killed with SIGKILL,
// the dead mount is aborted and lazily unmounted, the metadata of the crashed state is checked,
// and kmipfs is started again on the same directories. Every byte that an fsync covered and no
// later operation touched must read back exactly; the tree must be consistent (meta.DB.Check after
// every kill, `kmipfs fsck` at the end).
//
// KMIPFS_CRASH_CYCLES sets the number of kill/restart cycles (default 3), KMIPFS_CRASH_SEED the
// seed of the workload and of the kill times (default: the clock; the seed is logged).

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/meta"
)

// crashEnvInt reads a number from the environment.
func crashEnvInt(t *testing.T, name string, def int64) int64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: expected a number", name, v)
	}
	return n
}

// span is a byte range [off, end) changed since the last fsync; end < 0 means to infinity.
type span struct{ off, end int64 }

// crashFile is the model of one file of the workload.
type crashFile struct {
	name string // path below the bucket
	// oldName is the name before a rename that no directory fsync made durable yet: after a
	// crash the file may be found under either name.
	oldName string
	data    []byte // the content after the last operation that returned success
	// synced is the content at the last fsync that returned 0; valid when isSynced.
	synced   []byte
	isSynced bool
	// touched are the ranges changed (or perhaps changed, by an operation cut short by the
	// kill) since that fsync: their bytes may hold either version.
	touched []span
	// acked is the content at the last fsync or close that returned 0 (valid when isAcked), and
	// ackTouched what changed since: DESIGN.md promises that a crash of the kmipfs process (not
	// of the machine) loses nothing close acknowledged either.
	acked      []byte
	isAcked    bool
	ackTouched []span
	fd         *os.File // open read-write, or nil
}

func (f *crashFile) touch(off, end int64) {
	if f.isSynced {
		f.touched = append(f.touched, span{off, end})
	}
	if f.isAcked {
		f.ackTouched = append(f.ackTouched, span{off, end})
	}
}

// ack records the current content as acknowledged by a close (or an fsync).
func (f *crashFile) ack() { f.acked, f.isAcked, f.ackTouched = bytes.Clone(f.data), true, nil }

// crashStats are the counts the test reports.
type crashStats struct {
	ops, fsyncs, kills     int
	verifiedBytes, lost    int64
	ackedBytes, ackedLost  int64
	verifiedFiles, missing int
	inconsistencies        int
}

// crashRun is the workload and its model.
type crashRun struct {
	t      *testing.T
	rng    *rand.Rand
	bucket string // the bucket's path on the mount
	files  []*crashFile
	nextID int
	stats  crashStats
}

const (
	crashDirs     = 3
	crashMaxFiles = 12
	crashMaxSize  = 1 << 20
)

func (r *crashRun) dir(i int) string { return fmt.Sprintf("d%d", i) }

func (r *crashRun) abs(name string) string { return filepath.Join(r.bucket, name) }

// fsyncDir fsyncs the directory holding name.
func (r *crashRun) fsyncDir(name string) error {
	d, err := os.Open(filepath.Dir(r.abs(name)))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (r *crashRun) open(f *crashFile) error {
	if f.fd != nil {
		return nil
	}
	fd, err := os.OpenFile(r.abs(f.name), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	f.fd = fd
	return nil
}

func (r *crashRun) closeAll() {
	for _, f := range r.files {
		if f.fd != nil {
			_ = f.fd.Close()
			f.fd = nil
		}
	}
}

func (r *crashRun) randData(n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// randLen returns a write length: often a few bytes, often whole blocks, up to 64 KiB.
func (r *crashRun) randLen() int {
	switch r.rng.IntN(3) {
	case 0:
		return 1 + r.rng.IntN(100)
	case 1:
		return 4096 * (1 + r.rng.IntN(16))
	default:
		return 1 + r.rng.IntN(64<<10)
	}
}

// step runs one random operation. An error is a failure unless the kill came first.
func (r *crashRun) step() error {
	r.stats.ops++
	if len(r.files) < 3 || (len(r.files) < crashMaxFiles && r.rng.IntN(10) == 0) {
		return r.create()
	}
	f := r.files[r.rng.IntN(len(r.files))]
	if err := r.open(f); err != nil {
		return fmt.Errorf("open %s: %w", f.name, err)
	}
	switch n := r.rng.IntN(100); {
	case n < 30: // write at a random offset, holes included
		off := int64(r.rng.IntN(len(f.data) + 64<<10))
		return r.write(f, off, r.randData(r.randLen()))
	case n < 45: // append
		return r.write(f, int64(len(f.data)), r.randData(r.randLen()))
	case n < 53 || len(f.data) > crashMaxSize: // truncate, shrinking or growing
		size := int64(r.rng.IntN(len(f.data) + 8192))
		if len(f.data) > crashMaxSize {
			size = int64(r.rng.IntN(crashMaxSize / 2))
		}
		f.touch(size, -1)
		if err := f.fd.Truncate(size); err != nil {
			return fmt.Errorf("truncate %s to %d: %w", f.name, size, err)
		}
		if size <= int64(len(f.data)) {
			f.data = f.data[:size]
		} else {
			f.data = append(f.data, make([]byte, size-int64(len(f.data)))...)
		}
		return nil
	case n < 75:
		return r.fsync(f)
	case n < 83:
		return r.rename(f)
	case n < 86 && len(r.files) > 4:
		return r.unlink(f)
	case n < 92: // close (the next operation opens it again)
		err := f.fd.Close()
		f.fd = nil
		if err != nil {
			return fmt.Errorf("close %s: %w", f.name, err)
		}
		f.ack()
		return nil
	default: // read back what this mount says the file holds
		got := make([]byte, len(f.data)+1)
		n, err := f.fd.ReadAt(got, 0)
		if err != nil && err != io.EOF {
			return fmt.Errorf("read %s: %w", f.name, err)
		}
		if !bytes.Equal(got[:n], f.data) {
			r.stats.inconsistencies++
			r.t.Errorf("%s reads back %d bytes that differ from the %d bytes written (before any crash)", f.name, n, len(f.data))
		}
		return nil
	}
}

func (r *crashRun) create() error {
	r.nextID++
	f := &crashFile{name: filepath.Join(r.dir(r.rng.IntN(crashDirs)), fmt.Sprintf("f%04d", r.nextID))}
	fd, err := os.OpenFile(r.abs(f.name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", f.name, err)
	}
	f.fd = fd
	r.files = append(r.files, f)
	return r.write(f, 0, r.randData(r.rng.IntN(200<<10)))
}

func (r *crashRun) write(f *crashFile, off int64, data []byte) error {
	end := off + int64(len(data))
	f.touch(off, end)
	if _, err := f.fd.WriteAt(data, off); err != nil {
		return fmt.Errorf("write %s [%d, %d): %w", f.name, off, end, err)
	}
	if end > int64(len(f.data)) {
		f.data = append(f.data, make([]byte, end-int64(len(f.data)))...)
	}
	copy(f.data[off:], data)
	return nil
}

// fsync makes the file durable; a file fsync'd for the first time also gets its directory
// fsync'd, as POSIX asks for a new name.
func (r *crashRun) fsync(f *crashFile) error {
	if err := f.fd.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", f.name, err)
	}
	if !f.isSynced || f.oldName != "" {
		if err := r.fsyncDir(f.name); err != nil {
			return fmt.Errorf("fsync directory of %s: %w", f.name, err)
		}
		if f.oldName != "" {
			if err := r.fsyncDir(f.oldName); err != nil {
				return fmt.Errorf("fsync directory of %s: %w", f.oldName, err)
			}
			f.oldName = ""
		}
	}
	f.synced, f.isSynced, f.touched = bytes.Clone(f.data), true, nil
	f.ack()
	r.stats.fsyncs++
	return nil
}

// rename moves the file to a new name, in another directory half the time, and fsyncs both
// directories most of the time. A file whose last rename is not durable yet is not renamed again,
// so a crash leaves it under one of two names.
func (r *crashRun) rename(f *crashFile) error {
	if f.oldName != "" {
		return r.fsync(f)
	}
	r.nextID++
	to := filepath.Join(r.dir(r.rng.IntN(crashDirs)), fmt.Sprintf("f%04d", r.nextID))
	from := f.name
	// Both names before the call: a rename cut short by the kill may or may not have happened.
	f.oldName, f.name = from, to
	if err := os.Rename(r.abs(from), r.abs(to)); err != nil {
		return fmt.Errorf("rename %s to %s: %w", from, to, err)
	}
	if r.rng.IntN(10) < 7 {
		if err := r.fsyncDir(to); err != nil {
			return fmt.Errorf("fsync directory of %s: %w", to, err)
		}
		if err := r.fsyncDir(from); err != nil {
			return fmt.Errorf("fsync directory of %s: %w", from, err)
		}
		f.oldName = ""
	}
	return nil
}

// unlink removes the file from the model first: after a crash it may or may not exist.
func (r *crashRun) unlink(f *crashFile) error {
	for i, g := range r.files {
		if g == f {
			r.files = append(r.files[:i], r.files[i+1:]...)
			break
		}
	}
	if f.fd != nil {
		_ = f.fd.Close()
	}
	if err := os.Remove(r.abs(f.name)); err != nil {
		return fmt.Errorf("unlink %s: %w", f.name, err)
	}
	return nil
}

// verify checks every file against the model after a restart, then takes what it read as the new
// model and fsyncs it, so the next cycle starts from a known durable state.
func (r *crashRun) verify() {
	t := r.t
	var kept []*crashFile
	for _, f := range r.files {
		name := f.name
		data, err := os.ReadFile(r.abs(name))
		if errors.Is(err, os.ErrNotExist) && f.oldName != "" {
			name = f.oldName
			data, err = os.ReadFile(r.abs(name))
		}
		if f.oldName != "" && name == f.name {
			if _, err := os.Lstat(r.abs(f.oldName)); err == nil {
				r.stats.inconsistencies++
				t.Errorf("after a crash during the rename of %s to %s, both names exist", f.oldName, f.name)
			}
		}
		switch {
		case errors.Is(err, os.ErrNotExist):
			if f.isSynced {
				r.stats.missing++
				r.stats.lost += int64(len(f.synced))
				t.Errorf("%s (fsync'd with %d bytes) is gone after the crash", f.name, len(f.synced))
			} else if f.isAcked {
				r.stats.ackedLost += int64(len(f.acked))
				t.Errorf("%s (closed with %d bytes) is gone after the crash of kmipfs", f.name, len(f.acked))
			}
			continue
		case err != nil:
			r.stats.inconsistencies++
			t.Errorf("read %s after the crash: %v", name, err)
			continue
		}
		if f.isSynced {
			checked, lost, first := compareSynced(f.synced, data, f.touched)
			r.stats.verifiedBytes += checked
			r.stats.lost += lost
			r.stats.verifiedFiles++
			if lost > 0 {
				t.Errorf("%s: %d of %d fsync'd bytes differ or are missing after the crash (first at offset %d; file has %d bytes, fsync'd %d, %d ranges touched since)",
					name, lost, checked, first, len(data), len(f.synced), len(f.touched))
			}
		}
		if f.isAcked {
			checked, lost, first := compareSynced(f.acked, data, f.ackTouched)
			r.stats.ackedBytes += checked
			r.stats.ackedLost += lost
			if lost > 0 {
				t.Errorf("%s: %d of %d bytes acknowledged by close differ or are missing after the crash of kmipfs (first at offset %d; file has %d bytes, closed with %d)",
					name, lost, checked, first, len(data), len(f.acked))
			}
		}
		f.name, f.oldName, f.data, f.fd = name, "", data, nil
		f.isSynced, f.synced, f.touched = false, nil, nil
		f.isAcked, f.acked, f.ackTouched = false, nil, nil
		kept = append(kept, f)
	}
	r.files = kept
	for _, f := range r.files {
		if err := r.open(f); err != nil {
			t.Fatalf("open %s after restart: %v", f.name, err)
		}
		if err := r.fsync(f); err != nil {
			t.Fatalf("after restart: %v", err)
		}
	}
}

// compareSynced compares the fsync'd content with what was read, skipping bytes touched since the
// fsync. It returns the number of bytes compared, how many of them differ or are missing, and the
// offset of the first bad one (-1 if none).
func compareSynced(synced, got []byte, touched []span) (checked, lost, first int64) {
	mask := make([]bool, len(synced))
	for _, s := range touched {
		end := s.end
		if end < 0 || end > int64(len(synced)) {
			end = int64(len(synced))
		}
		for i := s.off; i < end; i++ {
			mask[i] = true
		}
	}
	first = -1
	for i := range synced {
		if mask[i] {
			continue
		}
		checked++
		if i >= len(got) || got[i] != synced[i] {
			lost++
			if first < 0 {
				first = int64(i)
			}
		}
	}
	return checked, lost, first
}

// fuseConn returns the FUSE connection id (the minor device number) of the mount at mnt.
func fuseConn(t *testing.T, mnt string) int {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	return int(st.Dev&0xff | (st.Dev>>12)&0xfff00)
}

// abortMount aborts the FUSE connection conn of a mount whose server died, and detaches the mount.
// It touches no other mount.
func abortMount(t *testing.T, mnt string, conn int) {
	t.Helper()
	// The kernel aborts the connection itself when the last /dev/fuse descriptor closes; the
	// explicit abort covers a descriptor that something else still holds.
	_ = os.WriteFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", conn), []byte("1"), 0o200)
	if isMounted(mnt) {
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil && isMounted(mnt) {
			t.Fatalf("umount -l %s: %v %s", mnt, err, out)
		}
	}
}

// crashCheckMeta opens the metadata of a stopped (or killed) kmipfs and returns the problems Check finds.
func crashCheckMeta(t *testing.T, dir string) []string {
	t.Helper()
	db, err := meta.Open(dir, meta.Options{})
	if err != nil {
		t.Fatalf("open the metadata after the kill: %v", err)
	}
	defer db.Close()
	problems, err := db.Check(t.Context())
	if err != nil {
		t.Fatalf("meta check: %v", err)
	}
	return problems
}

func TestCrash(t *testing.T) {
	cycles := int(crashEnvInt(t, "KMIPFS_CRASH_CYCLES", 3))
	seed := uint64(crashEnvInt(t, "KMIPFS_CRASH_SEED", time.Now().UnixNano()))
	t.Logf("KMIPFS_CRASH_SEED=%d KMIPFS_CRASH_CYCLES=%d", seed, cycles)
	dir := t.TempDir()
	const template = "kmipfs-$keyid"
	k := startKMSServer(t, filepath.Join(dir, "kms"))
	k.createKey(t, kms.KeyName(template, keyA))
	cfg := kConfig(t, dir, k.clientConfig(""), template, "")
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	start := func() *proc {
		t.Helper()
		p := startProc(t, "mount", "--config", cfg, mnt)
		p.waitMounted(t, mnt)
		return p
	}
	p := start()
	r := &crashRun{t: t, rng: rand.New(rand.NewPCG(seed, 1)), bucket: filepath.Join(mnt, "crash")}
	if err := os.Mkdir(r.bucket, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := setxattr(r.bucket, "user.kmipfs.key-id", keyA); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < crashDirs; i++ {
		if err := os.Mkdir(filepath.Join(r.bucket, r.dir(i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.fsyncDir(r.dir(0)); err != nil {
		t.Fatal(err)
	}
	killRng := rand.New(rand.NewPCG(seed, 2))
	for c := 0; c < cycles && !t.Failed(); c++ {
		conn := fuseConn(t, mnt)
		var killed atomic.Bool
		done := make(chan error, 1)
		go func() {
			for !killed.Load() {
				if err := r.step(); err != nil {
					if killed.Load() {
						done <- nil
					} else {
						done <- err
					}
					return
				}
			}
			done <- nil
		}()
		// Most kills come in the first second, some after a longer run with bigger files.
		delay := time.Duration(50+killRng.IntN(1000)) * time.Millisecond
		if killRng.IntN(5) == 0 {
			delay += time.Duration(killRng.IntN(3000)) * time.Millisecond
		}
		select {
		case err := <-done: // failed before the kill
			t.Fatalf("cycle %d: workload failed before the kill: %v\nkmipfs output:\n%s", c, err, p.out)
		case <-time.After(delay):
		}
		killed.Store(true)
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		r.stats.kills++
		abortMount(t, mnt, conn)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("cycle %d: %v", c, err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("cycle %d: the workload did not stop within 60s of the kill", c)
		}
		r.closeAll()
		if problems := crashCheckMeta(t, filepath.Join(dir, "meta")); len(problems) > 0 {
			r.stats.inconsistencies += len(problems)
			t.Errorf("cycle %d: metadata of the crashed state is inconsistent:\n%s", c, strings.Join(problems, "\n"))
		}
		p = start()
		r.verify()
	}
	r.closeAll()
	p.stop(t)
	if problems := crashCheckMeta(t, filepath.Join(dir, "meta")); len(problems) > 0 {
		r.stats.inconsistencies += len(problems)
		t.Errorf("metadata after the last clean unmount is inconsistent:\n%s", strings.Join(problems, "\n"))
	}
	// fsck authenticates every block; orphan objects of writes cut short are expected, and
	// --repair removes them, after which fsck is clean.
	out, code := kRun(t, kmipfsBin, "fsck", "--config", cfg, "--repair")
	t.Logf("kmipfs fsck --repair (exit %d):\n%s", code, out)
	if code == 2 || strings.Contains(out, "damaged") && !strings.Contains(out, " 0 damaged files, 0 metadata problems") {
		r.stats.inconsistencies++
		t.Errorf("fsck --repair after the crashes: exit %d\n%s", code, out)
	}
	if out, code := kRun(t, kmipfsBin, "fsck", "--config", cfg); code != 0 {
		r.stats.inconsistencies++
		t.Errorf("fsck after --repair: exit %d\n%s", code, out)
	}
	t.Logf("crash test: %d cycles (%d kills), %d operations, %d fsyncs; %d fsync'd bytes in %d files verified, %d lost, %d files missing, %d inconsistencies; %d close-acknowledged bytes verified, %d lost",
		cycles, r.stats.kills, r.stats.ops, r.stats.fsyncs, r.stats.verifiedBytes, r.stats.verifiedFiles, r.stats.lost, r.stats.missing, r.stats.inconsistencies,
		r.stats.ackedBytes, r.stats.ackedLost)
	if r.stats.verifiedBytes == 0 {
		t.Error("no fsync'd byte was verified: the workload did not reach an fsync before the kills")
	}
}
