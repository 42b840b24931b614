package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmipfs/kmipfs/kms"
)

// TestMetaEncryption mounts with [meta] encryption_key_id: bucket and file names do not appear in
// the Badger files (while they do without the option), the files read back after a restart, and
// a mount with no key, another key or a key KMIP lacks is refused with a message and exit code
// that say which.
func TestMetaEncryption(t *testing.T) {
	dir := t.TempDir()
	k := startKMSServer(t, filepath.Join(dir, "kms"))
	const tmpl = "kmipfs-$keyid"
	for _, id := range []string{keyA, "metakey", "otherkey"} {
		k.createKey(t, kms.KeyName(tmpl, id))
	}
	const bucketName, fileName = "secretbucket", "confidential-report-name.txt"
	data := []byte("the data of the confidential report\n")

	// populate mounts the tree of config with the real binary and writes one file into it.
	populate := func(config, mnt string) {
		t.Helper()
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		m := startProc(t, "mount", "--config", config, mnt)
		m.waitMounted(t, mnt)
		b := filepath.Join(mnt, bucketName)
		if err := os.Mkdir(b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := setxattr(b, "user.kmipfs.key-id", keyA); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(b, fileName), data)
		m.stop(t)
	}
	// inMeta reports whether s occurs in any file of the metadata directory under root.
	inMeta := func(root, s string) bool {
		t.Helper()
		out, err := run("grep", "-r", "-l", "-a", "-F", s, filepath.Join(root, "meta"))
		if err != nil && out != "" {
			t.Fatalf("grep: %v %s", err, out)
		}
		return err == nil
	}

	// Without the option the names are there for anyone who can read the disk ...
	plainDir := filepath.Join(dir, "plain")
	if err := os.Mkdir(plainDir, 0o700); err != nil {
		t.Fatal(err)
	}
	populate(kConfig(t, plainDir, k.clientConfig(tmpl), tmpl, ""), filepath.Join(plainDir, "mnt"))
	if !inMeta(plainDir, fileName) || !inMeta(plainDir, bucketName) {
		t.Fatal("control: the names are not in the plain metadata files, so the check below proves nothing")
	}

	// ... and with it they are not.
	base := kConfig(t, dir, k.clientConfig(tmpl), tmpl, "")
	withKey := func(id string) string {
		t.Helper()
		p := filepath.Join(dir, "with-"+strings.ReplaceAll(id, "/", "_")+".toml")
		writeFile(t, p, append(readFile(t, base), fmt.Sprintf("encryption_key_id = %q\n", id)...))
		return p
	}
	mnt := filepath.Join(dir, "mnt")
	populate(withKey("metakey"), mnt)
	for _, s := range []string{fileName, bucketName, keyA} {
		if inMeta(dir, s) {
			t.Errorf("%q appears in the encrypted metadata files", s)
		}
	}

	for _, c := range []struct {
		name, config, want string
		code               int
	}{
		{"no key", base, "is encrypted: set meta.encryption_key_id", 4},
		{"other key", withKey("otherkey"), `was not created with key id "otherkey"`, 4},
		{"key not in KMIP", withKey("nokey"), `meta.encryption_key_id "nokey"`, 3},
		{"bad key id", withKey("a/b"), "meta.encryption_key_id: expected a key id", 2},
	} {
		out, code := kRun(t, kmipfsBin, "mount", "--config", c.config, mnt)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d, want %d and %q; output:\n%s", c.name, code, c.code, c.want, out)
		}
		if isMounted(mnt) {
			t.Fatalf("%s: mounted despite the error", c.name)
		}
	}
	out, code := kRun(t, kmipfsBin, "fsck", "--config", base)
	if code != 2 || !strings.Contains(out, "is encrypted") {
		t.Errorf("fsck without the key: exit %d\n%s", code, out)
	}
	runFsck(t, withKey("metakey"), 0)

	m := startProc(t, "mount", "--config", withKey("metakey"), mnt)
	m.waitMounted(t, mnt)
	if got := readFile(t, filepath.Join(mnt, bucketName, fileName)); !bytes.Equal(got, data) {
		t.Fatalf("read back %q", got)
	}
	m.stop(t)
}
