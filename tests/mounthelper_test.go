package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMountHelperFstab mounts through mount(8): an /etc/fstab line of type fuse.kmipfs and
// "mount -t fuse.kmipfs -o ro", each unmounted with umount. mount(8) finds the helper as
// /sbin/mount.fuse.kmipfs, a link to the kmipfs under test, as make install puts it. The test runs
// in private mount and PID namespaces: /usr/sbin (where /sbin points) and /etc are overlays, so
// the helper and the fstab line exist only there, and every process it starts dies with it.
func TestMountHelperFstab(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("KMIPFS_TEST_DISALLOW_SKIP") != "" {
			t.Fatal("mount(8) with an fstab line needs root")
		}
		t.Skip("mount(8) with an fstab line needs root")
	}
	requireTool(t, "unshare")
	dir := t.TempDir()
	k := startKMSServer(t, filepath.Join(dir, "kms"))
	k.createKey(t, keyA)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "kmipfs.toml")
	writeFile(t, cfg, []byte("[kms]\naddr = \""+k.addr+"\"\nca_path = \""+k.files.CA+"\"\nclient_cert = \""+
		k.files.ClientCert+"\"\nclient_key = \""+k.files.ClientKey+"\"\n[store]\npath = \""+
		filepath.Join(dir, "objects")+"\"\n[meta]\npath = \""+filepath.Join(dir, "meta")+
		"\"\n[fs]\ndefault_key_id = \""+keyA+"\"\n"))

	script := `set -euxo pipefail
for d in /usr/sbin /etc; do
	o=$T/overlay$(echo $d | tr / -); mkdir -p $o/upper $o/work
	mount -t overlay overlay -o lowerdir=$d,upperdir=$o/upper,workdir=$o/work $d
done
ln -s "$KMIPFS" /sbin/mount.fuse.kmipfs
echo "$CFG $MNT fuse.kmipfs defaults,noatime,allow_other,_netdev,nofail,log_file=$T/kmipfs.log 0 0" >> /etc/fstab

mount "$MNT"
grep " $MNT " /proc/mounts > $T/fstab-mount
mkdir "$MNT/bucket"
printf 'written through an fstab mount\n' > "$MNT/bucket/file"
umount "$MNT"
if grep -q " $MNT " /proc/mounts; then echo "still mounted after umount"; exit 1; fi

mount -t fuse.kmipfs -o ro "$CFG" "$MNT"
grep " $MNT " /proc/mounts > $T/ro-mount
cat "$MNT/bucket/file" > $T/ro-read
if touch "$MNT/bucket/new" 2> $T/ro-write; then echo "a write to a ro mount succeeded"; exit 1; fi
umount "$MNT"

if mount -t fuse.kmipfs -o noatme "$CFG" "$MNT" 2> $T/bad-option; then echo "a bad option mounted"; exit 1; fi
if mount -t fuse.kmipfs "$T/missing.toml" "$MNT" 2> $T/bad-config; then echo "a missing config mounted"; exit 1; fi
if grep -q " $MNT " /proc/mounts; then echo "mounted despite the errors"; exit 1; fi
"$KMIPFS" fsck --config "$CFG" > $T/fsck
echo SCRIPT-DONE
`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
		"bash", "-c", script)
	cmd.Env = append(os.Environ(), "T="+dir, "KMIPFS="+kmipfsBin, "CFG="+cfg, "MNT="+mnt)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SCRIPT-DONE") {
		t.Fatalf("%v; the trace:\n%s", err, tail(string(out), 60))
	}
	read := func(name string) string { return readString(t, filepath.Join(dir, name)) }
	// The fstab line's options reached the kernel: noatime and allow_other; _netdev, nofail and
	// defaults were for mount(8) and are not an error.
	fstabMount := read("fstab-mount")
	mustContain(t, fstabMount, " fuse.kmipfs ", "noatime", "allow_other", "kmipfs:"+filepath.Join(dir, "objects"))
	mustContain(t, read("kmipfs.log"), "msg=mounted")
	roMount := read("ro-mount")
	if !strings.Contains(" "+strings.Fields(roMount)[3]+",", " ro,") {
		t.Errorf("the -o ro mount is not read-only: %s", roMount)
	}
	if got := read("ro-read"); got != "written through an fstab mount\n" {
		t.Errorf("after umount and mount, the file reads %q", got)
	}
	mustContain(t, read("ro-write"), "Read-only file system")
	mustContain(t, read("bad-option"), `unknown mount option "noatme"`)
	mustContain(t, read("bad-config"), "missing.toml")
	mustContain(t, read("fsck"), "1 files", "0 damaged files, 0 metadata problems, 0 orphan objects")
}
