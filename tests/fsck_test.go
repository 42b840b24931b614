package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runFsck runs the kmipfs binary's fsck on config and checks its exit code.
func runFsck(t *testing.T, config string, wantCode int, args ...string) string {
	t.Helper()
	out, code := kRun(t, kmipfsBin, append([]string{"fsck", "--config", config}, args...)...)
	if code != wantCode {
		t.Fatalf("fsck %v: exit %d, want %d; output:\n%s", args, code, wantCode, out)
	}
	return out
}

func mustContain(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("output lacks %q:\n%s", w, out)
		}
	}
}

// TestFsck plants a damaged block and an orphan object in the store of an unmounted kmipfs: fsck
// names the file and block and the orphan and exits 1; --repair deletes the orphan and nothing
// else; a clean tree exits 0; a mounted filesystem or a KMIP server that is down exits 2.
func TestFsck(t *testing.T) {
	e := newEnv(t)
	b := e.bucket("fsck", keyA)
	if err := os.Mkdir(filepath.Join(b, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	victim := randBytes(t, 3*4096)
	writeFile(t, filepath.Join(b, "dir", "victim"), victim)
	e.remount()
	victimObjs := e.storeFiles()
	if len(victimObjs) != 1 {
		t.Fatalf("want one object for the victim, have %v", victimObjs)
	}
	writeFile(t, filepath.Join(b, "other"), randBytes(t, 5*4096+17))
	sparse, err := os.Create(filepath.Join(b, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sparse.WriteAt([]byte("tail"), 1<<20); err != nil {
		t.Fatal(err)
	}
	sparse.Close()
	if err := os.Link(filepath.Join(b, "other"), filepath.Join(b, "dir", "other-link")); err != nil {
		t.Fatal(err)
	}
	e.bucket("empty", keyB)
	cfg := kConfig(t, e.dir, e.kmsCfg, e.template, "")

	out := runFsck(t, cfg, 2)
	mustContain(t, out, "in use by a running kmipfs")
	e.unmount()

	out = runFsck(t, cfg, 0)
	mustContain(t, out, "fsck: 3 files, 10 blocks in 3 objects checked: 0 damaged files, 0 metadata problems, 0 orphan objects")

	// One flipped bit inside the ciphertext of block 1 (slot 1: sealed blocks are 4124 bytes).
	obj := readFile(t, victimObjs[0])
	obj[4124+100] ^= 0x01
	writeFile(t, victimObjs[0], obj)
	// An orphan, as a crash between upload and commit leaves one, and a file that is not kmipfs's.
	orphanKey := "0123456789abcdef0123456789abcdef/0000000000000007"
	orphan := filepath.Join(e.storeDir, "fsck", filepath.FromSlash(orphanKey))
	if err := os.MkdirAll(filepath.Dir(orphan), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, orphan, randBytes(t, 4124))
	foreign := filepath.Join(e.storeDir, "fsck", "notes.txt")
	writeFile(t, foreign, []byte("not kmipfs's"))

	out = runFsck(t, cfg, 1)
	victimKey := strings.TrimPrefix(filepath.ToSlash(victimObjs[0]), filepath.ToSlash(e.storeDir)+"/")
	mustContain(t, out,
		"damaged: /fsck/dir/victim: blocks 1 fail authentication (object "+victimKey+")",
		"orphan: object fsck/"+orphanKey+" (4124 bytes) belongs to no file\n",
		"1 damaged files, 0 metadata problems, 1 orphan objects")
	if strings.Contains(out, "notes.txt") || strings.Contains(out, "/fsck/other") {
		t.Fatalf("fsck reported more than the planted problems:\n%s", out)
	}

	out = runFsck(t, cfg, 1, "--repair")
	mustContain(t, out, "orphan: object fsck/"+orphanKey+" (4124 bytes) belongs to no file; removed", "(1 removed)",
		"damaged: /fsck/dir/victim: blocks 1")
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatalf("orphan still in the store after --repair: %v", err)
	}
	if !bytes.Equal(readFile(t, victimObjs[0]), obj) || !bytes.Equal(readFile(t, foreign), []byte("not kmipfs's")) {
		t.Fatal("--repair changed something other than the orphan")
	}
	out = runFsck(t, cfg, 1)
	if strings.Contains(out, "orphan:") {
		t.Fatalf("orphan reported again after --repair:\n%s", out)
	}

	// Put the bit back, but cut the object inside block 2: a short object.
	obj[4124+100] ^= 0x01
	writeFile(t, victimObjs[0], obj[:2*4124+10])
	out = runFsck(t, cfg, 1)
	mustContain(t, out, "short: /fsck/dir/victim: object "+victimKey+" is 8258 bytes; blocks 2 are not whole in it")
	writeFile(t, victimObjs[0], obj)

	// A deleted object: its file is named by its first path (the hard link sorts first).
	var otherObj string
	for _, p := range e.storeFiles() {
		if st, err := os.Stat(p); err == nil && st.Size() == 6*4124 {
			otherObj = p
		}
	}
	if otherObj == "" {
		t.Fatal("no object of 6 blocks for /fsck/other")
	}
	saved := readFile(t, otherObj)
	if err := os.Remove(otherObj); err != nil {
		t.Fatal(err)
	}
	out = runFsck(t, cfg, 1)
	mustContain(t, out, "missing: /fsck/dir/other-link: object fsck/", " of blocks 0-5 is not in the store")
	writeFile(t, otherObj, saved)

	// Everything back: clean again, and the files read back.
	runFsck(t, cfg, 0)

	// A check that cannot run says so with exit code 2.
	e.kms.stop(t)
	out = runFsck(t, cfg, 2)
	mustContain(t, out, "KMIP server")
	e.kms.start(t)

	e.mount()
	if !bytes.Equal(readFile(t, filepath.Join(b, "dir", "victim")), victim) {
		t.Fatal("victim reads back wrong after fsck")
	}
}
