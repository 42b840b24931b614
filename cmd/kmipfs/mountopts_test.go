package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestParseMountOptions(t *testing.T) {
	mo, skipped, err := parseMountOptions("defaults,rw,noatime,nosuid,allow_other,_netdev,nofail,x-systemd.requires=x,"+
		"comment=hi,log_level=debug,debug,log_file=/var/log/kmipfs.log,default_permissions", false)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"rw", "noatime", "nosuid"}; !slices.Equal(mo.kernel, want) {
		t.Errorf("kernel options %q, want %q", mo.kernel, want)
	}
	if !mo.allowOther || !mo.defaultPermissions || !mo.debug || mo.logLevel != "debug" ||
		mo.logFile != "/var/log/kmipfs.log" || len(skipped) != 0 {
		t.Errorf("parsed %+v, skipped %q", mo, skipped)
	}

	for opts, want := range map[string]string{
		"noatme":           `unknown mount option "noatme"`,
		"uid=1000":         "keeps each file's own owner",
		"log_level=loud":   "log_level=loud",
		"log_file=rel.log": "absolute path",
	} {
		if _, _, err := parseMountOptions(opts, false); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", opts, err, want)
		}
	}
	mo, skipped, err = parseMountOptions("ro,noatme", true)
	if err != nil || !slices.Equal(skipped, []string{"noatme"}) || !slices.Equal(mo.kernel, []string{"ro"}) {
		t.Errorf("sloppy: %+v, skipped %q, %v", mo, skipped, err)
	}
}

// TestMountHelperArgs checks mount(8)'s calling convention with mount -f, which checks the
// options and mounts nothing.
func TestMountHelperArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"/etc/kmipfs/kmipfs.toml", "/mnt/kmip", "-f", "-o", "rw,noatime,_netdev"}, exitOK, ""},
		{[]string{"/etc/kmipfs/kmipfs.toml", "/mnt/kmip", "-fnv", "-ononexistent", "-s"}, exitOK, ""},
		{[]string{"/etc/kmipfs/kmipfs.toml", "/mnt/kmip", "-f", "-o", "bogus"}, exitUsage, `unknown mount option "bogus"`},
		{[]string{"/etc/kmipfs/kmipfs.toml", "/mnt/kmip", "-N", "/proc/1/ns/mnt"}, exitUsage, "not supported"},
		{[]string{"/etc/kmipfs/kmipfs.toml"}, exitUsage, "Usage: mount.fuse.kmipfs CONFIG MOUNTPOINT"},
		{[]string{"/etc/kmipfs/kmipfs.toml", "/mnt/kmip", "-o"}, exitUsage, "-o needs a value"},
	} {
		var stdout, stderr bytes.Buffer
		code := runMountHelper("mount.fuse.kmipfs", c.args, &stdout, &stderr)
		if code != c.code || !strings.Contains(stderr.String(), c.msg) {
			t.Errorf("%q: exit %d, stderr %q; want exit %d and %q", c.args, code, stderr.String(), c.code, c.msg)
		}
	}
}

// TestExampleConfig checks dist/kmipfs.toml.example, which make install puts in /etc/kmipfs: it
// decodes as it is, and with every commented-out option enabled, so each option it names exists
// and its example value has the right type.
func TestExampleConfig(t *testing.T) {
	example := filepath.Join("..", "..", "dist", "kmipfs.toml.example")
	if _, err := decodeConfig(example); err != nil {
		t.Fatalf("the example as installed: %v", err)
	}
	text, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	option := regexp.MustCompile(`(?m)^# ([a-z_]+ = .*)$`)
	enabled := option.ReplaceAllString(string(text), "$1")
	if n := len(option.FindAllString(string(text), -1)); n < 30 {
		t.Fatalf("the example has %d commented options; expected all of them", n)
	}
	all := filepath.Join(t.TempDir(), "all.toml")
	if err := os.WriteFile(all, []byte(enabled), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := decodeConfig(all); err != nil {
		t.Fatalf("the example with every option enabled: %v", err)
	}
}
