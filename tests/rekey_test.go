package tests

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// storeSnapshot is the content hash and mtime of every object file in the local store.
func (e *env) storeSnapshot() map[string]string {
	e.t.Helper()
	snap := make(map[string]string)
	for _, p := range e.storeFiles() {
		st, err := os.Stat(p)
		if err != nil {
			e.t.Fatal(err)
		}
		snap[p] = fmt.Sprintf("%x %d", sha256.Sum256(readFile(e.t, p)), st.ModTime().UnixNano())
	}
	return snap
}

// TestRekey moves 1,000 files from one key to another with the real binary, kills it with SIGKILL
// halfway, and runs it again: the second run finishes (skipping what the first did), a third does
// nothing, no object of the store changes, and after a remount every file reads back and shows
// the new key id, while files outside PATH keep the old one.
func TestRekey(t *testing.T) {
	getfattr := requireTool(t, "getfattr")
	e := newEnv(t)
	rk := e.bucket("rkb", keyA)
	other := e.bucket("other", keyA)
	const dirs, perDir = 10, 100
	content := func(d, f int) []byte {
		return []byte(strings.Repeat(fmt.Sprintf("file %d/%d\n", d, f), 1+f%7))
	}
	for d := 0; d < dirs; d++ {
		dir := filepath.Join(rk, fmt.Sprintf("d%02d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := 0; f < perDir; f++ {
			writeFile(t, filepath.Join(dir, fmt.Sprintf("f%03d", f)), content(d, f))
		}
	}
	// A directory of its own key id below the bucket, and a file elsewhere on the old key.
	if err := setxattr(filepath.Join(rk, "d03"), "user.kmipfs.key-id", keyA); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(other, "stays"), []byte("on key-a"))
	e.unmount()
	before := e.storeSnapshot()
	cfg := kConfig(t, e.dir, e.kmsCfg, e.template, "")

	// An unknown new key stops before any change.
	out, code := kRun(t, kmipfsBin, "rekey", "--config", cfg, "--from", keyA, "--to", "no-such-key", "/rkb")
	if code != 2 || !strings.Contains(out, `no active KMIP key named "kmipfs-no-such-key"`) || !strings.Contains(out, "nothing changed") {
		t.Fatalf("rekey to an unknown key: exit %d\n%s", code, out)
	}

	// The first run is killed once its progress shows some files done. On a loaded machine the
	// run may finish before the kill lands; then it is undone (a rekey back) and tried again.
	progress := regexp.MustCompile(`^rekey: (\d+)/1000 files done`)
	killedRun := func() (killedAt int, killed bool) {
		t.Helper()
		cmd := exec.Command(kmipfsBin, "rekey", "--config", cfg, "--from", keyA, "--to", keyB, "/rkb")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		var lines []string
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if m := progress.FindStringSubmatch(sc.Text()); m != nil {
				if killedAt, _ = strconv.Atoi(m[1]); killedAt > 0 {
					if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
						t.Fatal(err)
					}
					break
				}
			}
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return killedAt, true
		}
		if err != nil || !strings.Contains(stdout.String(), "rekey: 1000 files re-wrapped") {
			t.Fatalf("rekey failed (err %v; progress seen at %d); stderr:\n%s\nstdout:\n%s",
				err, killedAt, strings.Join(lines, "\n"), stdout.String())
		}
		return killedAt, false
	}
	killedAt, killed := -1, false
	for attempt := 0; attempt < 3 && !killed; attempt++ {
		if killedAt, killed = killedRun(); !killed {
			t.Logf("rekey finished before the kill landed; moving the files back to try again")
			kMustRun(t, kmipfsBin, "rekey", "--config", cfg, "--from", keyB, "--to", keyA, "/rkb")
		}
	}
	if !killed {
		t.Fatal("rekey finished before a SIGKILL three times")
	}
	if killedAt <= 0 || killedAt >= 1000 {
		t.Fatalf("killed at %d files", killedAt)
	}

	// Some files moved, not all.
	e.mount()
	moved := 0
	for d := 0; d < dirs; d++ {
		for f := 0; f < perDir; f++ {
			id, err := getxattr(filepath.Join(rk, fmt.Sprintf("d%02d", d), fmt.Sprintf("f%03d", f)), "user.kmipfs.key-id")
			if err != nil {
				t.Fatal(err)
			}
			if id == keyB {
				moved++
			}
		}
	}
	e.unmount()
	if moved < killedAt || moved >= 1000 {
		t.Fatalf("after the kill at %d, %d files are on the new key", killedAt, moved)
	}
	t.Logf("killed after %d files reported, %d moved", killedAt, moved)

	out = kMustRun(t, kmipfsBin, "rekey", "--config", cfg, "--from", keyA, "--to", keyB, "/rkb")
	mustContain(t, out, fmt.Sprintf("rekey: %d files re-wrapped from key-a to key-b, %d already on key-b, ", 1000-moved, moved), "0 failed")
	mustContain(t, out, "rekey: 1000/1000 files done")
	out = kMustRun(t, kmipfsBin, "rekey", "--config", cfg, "--from", keyA, "--to", keyB, "/rkb")
	mustContain(t, out, "rekey: 0 files re-wrapped from key-a to key-b, 1000 already on key-b, 0 directories changed, 0 failed")

	after := e.storeSnapshot()
	if len(after) != len(before) {
		t.Fatalf("store had %d objects, now %d", len(before), len(after))
	}
	for p, s := range before {
		if after[p] != s {
			t.Fatalf("object %s changed during rekey: %s -> %s", p, s, after[p])
		}
	}
	runFsck(t, cfg, 0)

	e.mount()
	for d := 0; d < dirs; d++ {
		for f := 0; f < perDir; f++ {
			p := filepath.Join(rk, fmt.Sprintf("d%02d", d), fmt.Sprintf("f%03d", f))
			if got := readFile(t, p); !bytes.Equal(got, content(d, f)) {
				t.Fatalf("%s reads back %q", p, got)
			}
			if id, err := getxattr(p, "user.kmipfs.key-id"); err != nil || id != keyB {
				t.Fatalf("%s: key id %q %v", p, id, err)
			}
		}
	}
	getf := func(name, p string) string {
		t.Helper()
		out, err := run(getfattr, "--absolute-names", "--only-values", "-n", name, p)
		if err != nil {
			t.Fatalf("getfattr %s %s: %v %s", name, p, err, out)
		}
		return out
	}
	for p, want := range map[string]string{
		rk:                               keyB,
		filepath.Join(rk, "d03"):         keyB,
		filepath.Join(rk, "d07", "f042"): keyB,
		filepath.Join(other):             keyA,
		filepath.Join(other, "stays"):    keyA,
		filepath.Join(rk, "d00", "f000"): keyB,
		filepath.Join(rk, "d09", "f099"): keyB,
	} {
		if got := getf("user.kmipfs.key-id", p); got != want {
			t.Errorf("getfattr %s: key id %q, want %q", p, got, want)
		}
	}
	if got := getf("user.kmipfs.key-name", filepath.Join(rk, "d05", "f005")); got != "kmipfs-key-b" {
		t.Errorf("key name %q", got)
	}
	if got := readFile(t, filepath.Join(other, "stays")); string(got) != "on key-a" {
		t.Fatalf("file outside PATH: %q", got)
	}
	// New files below the bucket now get the new key.
	writeFile(t, filepath.Join(rk, "d03", "new"), []byte("new"))
	if id, _ := getxattr(filepath.Join(rk, "d03", "new"), "user.kmipfs.key-id"); id != keyB {
		t.Fatalf("new file key id %q", id)
	}
}
