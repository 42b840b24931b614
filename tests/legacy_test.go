package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Real programs that know nothing of kmipfs, on a real mount: SQLite, git, tar, rsync, editors.
// They run as subprocesses of the test (which serves the mount), never with a working directory
// or inherited descriptors on the mount.

// tool runs a program with a timeout and fails the test with its output if it fails.
func tool(t *testing.T, timeout time.Duration, stdin string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sqliteScript returns n transactions, each inserting a row and updating a counter.
func sqliteScript(first, n int) string {
	var b strings.Builder
	for i := first; i < first+n; i++ {
		fmt.Fprintf(&b, "BEGIN; INSERT INTO t(k, v) VALUES (%d, printf('%%.*c', %d, 'x')); UPDATE c SET n = n + 1; COMMIT;\n", i, 10+i%500)
	}
	return b.String()
}

// TestSQLite runs SQLite in rollback-journal mode and in WAL mode: thousands of transactions,
// two processes writing one database at once (POSIX locks, and in WAL mode the shared-memory
// index mapped by both), PRAGMA integrity_check before and after a remount. The WAL run does
// KMIPFS_SQLITE_WAL_TXNS transactions (10,000 by default).
func TestSQLite(t *testing.T) {
	sqlite := requireTool(t, "sqlite3")
	walTxns := 10000
	if s := os.Getenv("KMIPFS_SQLITE_WAL_TXNS"); s != "" {
		var err error
		if walTxns, err = strconv.Atoi(s); err != nil {
			t.Fatalf("KMIPFS_SQLITE_WAL_TXNS: %v", err)
		}
	}
	e := newEnv(t)
	b := e.bucket("sqlite", keyA)
	modes := []struct {
		name   string
		pragma string
		txns   int
	}{
		{"rollback", "PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;", 1500},
		{"wal", "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", walTxns},
	}
	for _, m := range modes {
		db := filepath.Join(b, m.name+".db")
		q := func(sql string) string {
			t.Helper()
			return strings.TrimSpace(tool(t, 10*time.Minute, sql, nil, sqlite, "-bail", "-batch", db))
		}
		q(m.pragma + "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT); CREATE TABLE c(n INTEGER); INSERT INTO c VALUES (0); CREATE INDEX tv ON t(v);")
		start := time.Now()
		q(m.pragma + sqliteScript(0, m.txns))
		elapsed := time.Since(start)
		t.Logf("%s: %d transactions in %v (%.0f/s)", m.name, m.txns, elapsed.Round(time.Millisecond), float64(m.txns)/elapsed.Seconds())
		// Two writers at once.
		const each = 150
		start = time.Now()
		errs := make(chan error, 2)
		for w := 0; w < 2; w++ {
			go func() {
				cmd := exec.Command(sqlite, "-bail", "-batch", db)
				cmd.Stdin = strings.NewReader("PRAGMA busy_timeout=30000;" + m.pragma + sqliteScript(1_000_000*(w+1), each))
				out, err := cmd.CombinedOutput()
				if err != nil {
					err = fmt.Errorf("%v: %s", err, out)
				}
				errs <- err
			}()
		}
		for w := 0; w < 2; w++ {
			if err := <-errs; err != nil {
				t.Fatalf("%s: concurrent writer: %v", m.name, err)
			}
		}
		t.Logf("%s: 2 processes x %d transactions at once in %v", m.name, each, time.Since(start).Round(time.Millisecond))
		want := strconv.Itoa(m.txns+2*each) + "|" + strconv.Itoa(m.txns+2*each)
		check := func(stage string) {
			t.Helper()
			if got := q("PRAGMA integrity_check;"); got != "ok" {
				t.Fatalf("%s %s: integrity_check: %s", m.name, stage, got)
			}
			if got := q("SELECT count(*), (SELECT n FROM c) FROM t;"); got != want {
				t.Fatalf("%s %s: rows|counter = %s, want %s", m.name, stage, got, want)
			}
		}
		check("before remount")
		if m.name == "wal" {
			q("PRAGMA wal_checkpoint(TRUNCATE);")
		}
		e.remount()
		check("after remount")
	}
	checkMeta(t, e)
}

// gitEnv makes git independent of the machine's configuration.
func gitEnv(t *testing.T) []string {
	home := t.TempDir()
	return []string{"HOME=" + home, "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=kmipfs", "GIT_AUTHOR_EMAIL=kmipfs@example.com",
		"GIT_COMMITTER_NAME=kmipfs", "GIT_COMMITTER_EMAIL=kmipfs@example.com", "GIT_AUTHOR_DATE=2024-01-01T00:00:00Z",
		"GIT_COMMITTER_DATE=2024-01-01T00:00:00Z"}
}

// TestGit clones a local repository (packed and loose objects, a symlink, an executable) into
// kmipfs twice (git's local copy and the pack protocol), runs git fsck, commits and repacks
// there (git reads packs through mmap), and clones it back out.
func TestGit(t *testing.T) {
	git := requireTool(t, "git")
	env := gitEnv(t)
	g := func(dir string, args ...string) string {
		t.Helper()
		return tool(t, 5*time.Minute, "", env, git, append([]string{"-C", dir}, args...)...)
	}
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.Mkdir(src, 0o755))
	g(src, "init", "-q", "-b", "main")
	for c := 0; c < 12; c++ {
		for i := 0; i < 25; i++ {
			p := filepath.Join(src, "dir"+strconv.Itoa(i%5), "file"+strconv.Itoa(i)+".txt")
			must(t, os.MkdirAll(filepath.Dir(p), 0o755))
			content := strings.Repeat(fmt.Sprintf("commit %d line of file %d\n", c, i), 1+(i*c)%200)
			must(t, os.WriteFile(p, []byte(content), 0o644))
		}
		writeFile(t, filepath.Join(src, "blob.bin"), randBytes(t, 100000))
		if c == 0 {
			must(t, os.Symlink("dir0/file0.txt", filepath.Join(src, "link")))
			must(t, os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
		}
		g(src, "add", "-A")
		g(src, "commit", "-q", "-m", "commit "+strconv.Itoa(c))
		if c == 6 {
			g(src, "gc", "-q") // half the history packed, half loose
		}
	}
	head := strings.TrimSpace(g(src, "rev-parse", "HEAD"))

	e := newEnv(t)
	b := e.bucket("git", keyA)
	local, wire := filepath.Join(b, "clone"), filepath.Join(b, "clone-wire")
	tool(t, 5*time.Minute, "", env, git, "clone", "-q", src, local)
	tool(t, 5*time.Minute, "", env, git, "clone", "-q", "--no-local", "file://"+src, wire)
	for _, c := range []string{local, wire} {
		g(c, "fsck", "--full", "--strict", "--no-progress")
		if got := strings.TrimSpace(g(c, "rev-parse", "HEAD")); got != head {
			t.Fatalf("%s: HEAD %s, want %s", c, got, head)
		}
		if st := g(c, "status", "--porcelain"); st != "" {
			t.Fatalf("%s: status not clean:\n%s", c, st)
		}
	}
	if st := lstat(t, filepath.Join(local, "run.sh")); st.Mode&0o111 == 0 {
		t.Fatal("executable bit lost")
	}
	if got, _ := os.Readlink(filepath.Join(local, "link")); got != "dir0/file0.txt" {
		t.Fatalf("symlink in the clone: %q", got)
	}
	// Work in the clone on kmipfs: edit, commit, repack everything.
	writeFile(t, filepath.Join(local, "dir1", "new.txt"), []byte("made on kmipfs\n"))
	must(t, os.Remove(filepath.Join(local, "dir2", "file2.txt")))
	g(local, "add", "-A")
	g(local, "commit", "-q", "-m", "on kmipfs")
	g(local, "gc", "-q", "--aggressive", "--prune=now")
	g(local, "fsck", "--full", "--strict", "--no-progress")
	e.remount()
	g(local, "fsck", "--full", "--strict", "--no-progress")
	back := filepath.Join(t.TempDir(), "back")
	tool(t, 5*time.Minute, "", env, git, "clone", "-q", "--no-local", "file://"+local, back)
	g(back, "fsck", "--full", "--strict", "--no-progress")
	if out, err := run("diff", "-r", "--no-dereference", "-x", ".git", local, back); err != nil {
		t.Fatalf("clone of the clone differs: %v\n%s", err, out)
	}
	checkMeta(t, e)
}

// makeTree builds a source tree with what archivers must keep: nested directories, files of
// awkward sizes (empty, one byte, a block, a sparse one), symlinks (relative, absolute,
// dangling), hard links across directories, user.* xattrs on files and directories, odd modes,
// a FIFO, and nanosecond modification times.
func makeTree(t *testing.T, root string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(root, "a", "b", "c"), 0o755))
	must(t, os.Mkdir(filepath.Join(root, "private"), 0o700))
	files := map[string][]byte{
		"empty":          nil,
		"one":            []byte("1"),
		"block":          randBytes(t, 4096),
		"a/odd":          randBytes(t, 12345),
		"a/b/big":        randBytes(t, 3<<20+77),
		"a/b/c/deep":     []byte("deep\n"),
		"private/secret": []byte("s3cret"),
	}
	for p, d := range files {
		writeFile(t, filepath.Join(root, p), d)
	}
	f, err := os.Create(filepath.Join(root, "sparse"))
	must(t, err)
	_, err = f.WriteAt([]byte("end of a sparse file"), 20<<20)
	must(t, err)
	must(t, f.Close())
	must(t, os.Chmod(filepath.Join(root, "one"), 0o600))
	must(t, syscall.Chmod(filepath.Join(root, "a", "odd"), 0o4751))
	must(t, os.Symlink("a/b/c/deep", filepath.Join(root, "rel-link")))
	must(t, os.Symlink("/etc/hostname", filepath.Join(root, "abs-link")))
	must(t, os.Symlink("missing", filepath.Join(root, "a", "dangling")))
	must(t, os.Link(filepath.Join(root, "block"), filepath.Join(root, "a", "b", "block-link")))
	must(t, os.Link(filepath.Join(root, "block"), filepath.Join(root, "a", "block-link2")))
	must(t, syscall.Mkfifo(filepath.Join(root, "a", "fifo"), 0o640))
	for p, kv := range map[string][2]string{
		"one": {"user.comment", "a comment"}, "a/odd": {"user.mime_type", "application/octet-stream"},
		"a": {"user.dir-attr", "on a directory"}, "block": {"user.shared", "seen through every link"},
	} {
		must(t, setxattr(filepath.Join(root, p), kv[0], kv[1]))
	}
	must(t, syscall.Setxattr(filepath.Join(root, "a", "b", "big"), "user.binary", randBytes(t, 3000), 0))
	// Times last, directories after their contents.
	var paths []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	})
	for i := len(paths) - 1; i >= 0; i-- {
		ts := []syscall.Timespec{{Sec: 1_600_000_000 + int64(i), Nsec: 123456789}, {Sec: 1_600_000_000 + int64(i), Nsec: 987654321}}
		must(t, utimensatNoFollow(paths[i], ts))
	}
}

// treeEntry is what a copy of a tree must keep of one path.
type treeEntry struct {
	Mode   uint32
	Size   int64
	Sum    string
	Target string
	Xattrs string
	Mtime  int64
	Link   string // the first path of its hard-link group
}

// snapshot describes every path below root. mtimeNs keeps nanoseconds, else seconds.
func snapshot(t *testing.T, root string, mtimeNs bool) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	groups := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		e := treeEntry{Mode: st.Mode, Mtime: st.Mtim.Sec}
		if mtimeNs {
			e.Mtime = st.Mtim.Sec*1e9 + st.Mtim.Nsec
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.Size = st.Size
			e.Sum = fmt.Sprintf("%x", sha256.Sum256(data))
			if st.Nlink > 1 {
				if first, ok := groups[st.Ino]; ok {
					e.Link = first
				} else {
					groups[st.Ino] = rel
					e.Link = rel
				}
			}
		case syscall.S_IFLNK:
			e.Target, _ = os.Readlink(p)
		}
		if rel == "." {
			e.Mtime = 0 // the copy's root directory is the copy's own
		}
		if st.Mode&syscall.S_IFMT == syscall.S_IFREG || st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			e.Xattrs = userXattrs(t, p)
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Hard-link groups are compared by their members, not by which path came first.
	return out
}

func userXattrs(t *testing.T, p string) string {
	t.Helper()
	var parts []string
	for _, name := range listxattr(t, p) {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		v, err := getxattr(p, name)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		parts = append(parts, name+"="+fmt.Sprintf("%x", v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// sameTree fails the test where two snapshots differ.
func sameTree(t *testing.T, what string, a, b map[string]treeEntry) {
	t.Helper()
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if a[k] != b[k] {
			t.Errorf("%s: %s differs:\n  %+v\n  %+v", what, k, a[k], b[k])
		}
	}
}

// TestTar archives a tree with GNU tar, extracts it into kmipfs, archives it from kmipfs and
// extracts it on the plain disk, keeping symlinks, hard links, xattrs, modes and times; diff -r
// and a comparison of everything tar keeps find no difference.
func TestTar(t *testing.T) {
	tar := requireTool(t, "tar")
	e := newEnv(t)
	b := e.bucket("tar", keyA)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src)
	arch := filepath.Join(t.TempDir(), "a.tar")
	flags := []string{"--xattrs", "--xattrs-include=user.*", "--format=posix", "--sparse", "--numeric-owner"}
	tool(t, 2*time.Minute, "", nil, tar, append(flags, "-cpf", arch, "-C", src, ".")...)
	in := filepath.Join(b, "extracted")
	must(t, os.Mkdir(in, 0o755))
	tool(t, 2*time.Minute, "", nil, tar, append(flags, "-xpf", arch, "-C", in)...)
	sameTree(t, "extracted into kmipfs", snapshot(t, src, true), snapshot(t, in, true))
	arch2 := filepath.Join(t.TempDir(), "b.tar")
	tool(t, 2*time.Minute, "", nil, tar, append(flags, "-cpf", arch2, "-C", in, ".")...)
	out := filepath.Join(t.TempDir(), "out")
	must(t, os.Mkdir(out, 0o755))
	tool(t, 2*time.Minute, "", nil, tar, append(flags, "-xpf", arch2, "-C", out)...)
	if o, err := run("diff", "-r", "--no-dereference", "-x", "fifo", src, out); err != nil {
		t.Fatalf("diff -r: %v\n%s", err, o)
	}
	sameTree(t, "tar out of kmipfs", snapshot(t, src, true), snapshot(t, out, true))
	e.remount()
	sameTree(t, "in kmipfs after remount", snapshot(t, src, true), snapshot(t, in, true))
	checkMeta(t, e)
}

// TestRsync copies a tree into kmipfs and back out with rsync -aHAX, checks that a second run
// has nothing to do, and that a changed file is brought over again (rsync writes a temporary
// file and renames it into place).
func TestRsync(t *testing.T) {
	rsync := requireTool(t, "rsync")
	e := newEnv(t)
	b := e.bucket("rsync", keyA)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src)
	dst := filepath.Join(b, "copy")
	back := filepath.Join(t.TempDir(), "back")
	rs := func(from, to string) string {
		t.Helper()
		return tool(t, 2*time.Minute, "", nil, rsync, "-aHAX", "--itemize-changes", from+"/", to+"/")
	}
	rs(src, dst)
	sameTree(t, "rsync into kmipfs", snapshot(t, src, true), snapshot(t, dst, true))
	if out := rs(src, dst); strings.TrimSpace(out) != "" {
		t.Fatalf("a second rsync into kmipfs still had work:\n%s", out)
	}
	rs(dst, back)
	sameTree(t, "rsync out of kmipfs", snapshot(t, src, true), snapshot(t, back, true))
	if out, err := run("diff", "-r", "--no-dereference", "-x", "fifo", src, back); err != nil {
		t.Fatalf("diff -r: %v\n%s", err, out)
	}
	// A change on the source side goes over again, in place of the old file.
	f, err := os.OpenFile(filepath.Join(src, "a", "b", "big"), os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt([]byte("changed in the middle"), 1<<20)
	must(t, err)
	must(t, f.Close())
	if out := rs(src, dst); !strings.Contains(out, "a/b/big") {
		t.Fatalf("rsync did not bring the changed file:\n%s", out)
	}
	e.remount()
	sameTree(t, "kmipfs after the update and a remount", snapshot(t, src, false), snapshot(t, dst, false))
	checkMeta(t, e)
}

// TestEditorSave saves files the way editors do: write a temporary file, fsync it, rename it over
// the original (by hand, with vim in both of its write strategies, and with sed -i and perl -i).
// A reader that had the old file open keeps reading the old content; the new one is complete.
func TestEditorSave(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("editor", keyA)
	p := filepath.Join(b, "notes.txt")
	old := bytes.Repeat([]byte("old line\n"), 2000)
	writeFile(t, p, old)
	must(t, setxattr(p, "user.origin", "kept by the editor"))
	reader, err := os.Open(p)
	must(t, err)
	closeAtEnd(t, reader)
	oldIno := lstat(t, p).Ino

	// By hand, as most editors and office programs do.
	next := bytes.Repeat([]byte("new line\n"), 3000)
	tmp := filepath.Join(b, ".notes.txt.tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	must(t, err)
	closeAtEnd(t, f)
	_, err = f.Write(next)
	must(t, err)
	must(t, f.Sync())
	must(t, f.Close())
	v, _ := getxattr(p, "user.origin")
	must(t, setxattr(tmp, "user.origin", v))
	must(t, os.Rename(tmp, p))
	d, err := os.Open(b)
	must(t, err)
	closeAtEnd(t, d)
	must(t, d.Sync())
	must(t, d.Close())
	got := make([]byte, len(old)+10)
	n, _ := reader.ReadAt(got, 0)
	must(t, reader.Close())
	if !bytes.Equal(got[:n], old) {
		t.Fatal("a reader of the replaced file does not see its old content")
	}
	if st := lstat(t, p); st.Ino == oldIno || !bytes.Equal(readFile(t, p), next) {
		t.Fatal("the saved file is not the new one")
	}
	if v, _ := getxattr(p, "user.origin"); v != "kept by the editor" {
		t.Fatalf("xattr after the save: %q", v)
	}

	if vim, err := exec.LookPath("vim"); err == nil {
		for _, strategy := range []string{"no", "yes"} {
			// backupcopy=no: rename the old file away and write a new one; yes: copy a backup
			// and overwrite the original in place. Both fsync (vim's 'fsync' is on).
			tool(t, time.Minute, "", []string{"HOME=" + t.TempDir()}, vim, "-u", "NONE", "-N", "-E", "-s",
				"-c", "set backup backupcopy="+strategy+" fsync", "-c", "%s/^/"+strategy+" /", "-c", "wq", p)
			want := bytes.ReplaceAll(append([]byte("\n"), next...), []byte("\n"), []byte("\n"+strategy+" "))
			want = want[1 : len(want)-len(strategy)-1]
			if !bytes.Equal(readFile(t, p), want) {
				t.Fatalf("vim backupcopy=%s: content differs", strategy)
			}
			next = want
			os.Remove(p + "~")
		}
	}
	if sed, err := exec.LookPath("sed"); err == nil {
		tool(t, time.Minute, "", nil, sed, "-i", "s/line/LINE/", p)
		next = bytes.ReplaceAll(next, []byte("line"), []byte("LINE"))
	}
	if perl, err := exec.LookPath("perl"); err == nil {
		tool(t, time.Minute, "", nil, perl, "-pi", "-e", "s/LINE/row/", p)
		next = bytes.ReplaceAll(next, []byte("LINE"), []byte("row"))
	}
	if !bytes.Equal(readFile(t, p), next) {
		t.Fatal("content after sed -i and perl -i differs")
	}
	e.remount()
	if !bytes.Equal(readFile(t, p), next) {
		t.Fatal("after remount: content differs")
	}
	ents, err := os.ReadDir(b)
	must(t, err)
	if len(ents) != 1 {
		var names []string
		for _, de := range ents {
			names = append(names, de.Name())
		}
		t.Fatalf("editors left files behind: %v", names)
	}
	checkMeta(t, e)
}
