package tests

import (
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kmipfs/kmipfs/kms"
)

// TestKeyCreatedAfterFailedSetfattr: a person sets a key id that KMIP does not have yet (ENOKEY),
// creates the key, and sets it again at once. The mount must look again instead of serving the
// "not found" it remembered (the cache's negative TTL is 10 s), for a directory and for a file.
func TestKeyCreatedAfterFailedSetfattr(t *testing.T) {
	e := newEnv(t)
	e.logs.expect(`key not found in KMIP`)
	b := e.bucket("later", keyA)
	f := filepath.Join(b, "f")
	writeFile(t, f, []byte("data"))
	for _, target := range []struct{ path, keyID string }{{b, "made-later-dir"}, {f, "made-later-file"}} {
		expectErrno(t, setxattr(target.path, "user.kmipfs.key-id", target.keyID), syscall.ENOKEY, "setfattr of a key KMIP lacks")
		e.kms.createKey(t, kms.KeyName(e.template, target.keyID))
		if err := setxattr(target.path, "user.kmipfs.key-id", target.keyID); err != nil {
			t.Fatalf("setfattr %s right after the key was created: %v", target.path, err)
		}
		if got, _ := getxattr(target.path, "user.kmipfs.key-id"); got != target.keyID {
			t.Fatalf("key id of %s: %q", target.path, got)
		}
	}
	if got := readFile(t, f); string(got) != "data" {
		t.Fatalf("re-keyed file reads %q", got)
	}
}
