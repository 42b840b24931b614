package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/crypt"
	"github.com/kmipfs/kmipfs/kms"
)

// opsMount is the real binary mounted with a config of its own (extra is TOML added to it, such
// as a [metrics] or [fs] section), against an embedded KMIP server the test can stop.
type opsMount struct {
	dir, cfg, mnt string
	kms           *kmsServer
	proc          *proc
}

func startOpsMount(t *testing.T, extra string) *opsMount {
	t.Helper()
	dir := t.TempDir()
	k := startKMSServer(t, filepath.Join(dir, "kms"))
	k.createKey(t, kms.KeyName("kmipfs-$keyid", keyA))
	kc := k.clientConfig("")
	kc.Timeout.Duration = 2 * time.Second
	cfg := kConfig(t, dir, kc, "kmipfs-$keyid", extra)
	mnt := filepath.Join(dir, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	p := startProc(t, "mount", "--config", cfg, mnt)
	p.waitMounted(t, mnt)
	return &opsMount{dir: dir, cfg: cfg, mnt: mnt, kms: k, proc: p}
}

// bucket makes a bucket keyed with keyA and returns its path.
func (o *opsMount) bucket(t *testing.T, name string) string {
	t.Helper()
	b := filepath.Join(o.mnt, name)
	must(t, os.Mkdir(b, 0o755))
	must(t, setxattr(b, "user.kmipfs.key-id", keyA))
	return b
}

// statusJSON is the part of the `kmipfs status --json` document the tests check.
type statusJSON struct {
	Mount struct {
		Mountpoint    string  `json:"mountpoint"`
		PID           int     `json:"pid"`
		Version       string  `json:"version"`
		FormatVersion int     `json:"format_version"`
		UptimeSeconds float64 `json:"uptime_seconds"`
	} `json:"mount"`
	Config struct {
		Store struct {
			Backend string `json:"backend"`
			Where   string `json:"where"`
		} `json:"store"`
		Meta struct {
			Path string `json:"path"`
		} `json:"meta"`
		KMS struct {
			Addr        string `json:"addr"`
			KeyTemplate string `json:"key_template"`
		} `json:"kms"`
	} `json:"config"`
	KMS struct {
		Addr      string `json:"addr"`
		Reachable bool   `json:"reachable"`
		Error     string `json:"error"`
	} `json:"kms"`
	Cache struct {
		Keys struct {
			Entries int    `json:"entries"`
			Misses  uint64 `json:"misses"`
		} `json:"keys"`
		Meta struct {
			Hits uint64 `json:"hits"`
		} `json:"meta"`
	} `json:"cache"`
	Dirty struct {
		Bytes     int64  `json:"bytes"`
		Files     int64  `json:"files"`
		OpenFiles int    `json:"open_files"`
		Flushes   uint64 `json:"flushes"`
	} `json:"dirty"`
	Metrics struct {
		Addr string `json:"addr"`
	} `json:"metrics"`
}

// status runs `kmipfs status --json` on the mount and decodes it; raw is the output as printed.
func (o *opsMount) status(t *testing.T) (s statusJSON, raw string) {
	t.Helper()
	out, code := kRun(t, kmipfsBin, "status", "--json", o.mnt)
	if code != 0 {
		t.Fatalf("kmipfs status --json: exit %d\n%s", code, out)
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("kmipfs status --json is not JSON: %v\n%s", err, out)
	}
	return s, out
}

// statusAttr reads the status attribute directly, without starting a process.
func (o *opsMount) statusAttr(t *testing.T) (s statusJSON) {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := syscall.Getxattr(o.mnt, "user.kmipfs.status", buf)
	must(t, err)
	if err := json.Unmarshal(buf[:n], &s); err != nil {
		t.Fatalf("user.kmipfs.status is not JSON: %v\n%s", err, buf[:n])
	}
	return s
}

// TestStatus: kmipfs status reads the running mount: process, config, store, key server (a fresh
// check: reachable, then unreachable with the reason within seconds once the server stops), caches
// and unflushed data; it shows no secret; the status attribute is hidden from listxattr and cannot
// be set; a directory that is not a kmipfs mount point is exit 2.
func TestStatus(t *testing.T) {
	o := startOpsMount(t, "")
	s, raw := o.status(t)
	if s.Mount.Mountpoint != o.mnt || s.Mount.PID != o.proc.cmd.Process.Pid || s.Mount.Version == "" ||
		s.Mount.FormatVersion != crypt.Version || s.Mount.UptimeSeconds <= 0 {
		t.Errorf("mount section %+v; want mountpoint %s, pid %d, format %d", s.Mount, o.mnt, o.proc.cmd.Process.Pid, crypt.Version)
	}
	if s.KMS.Addr != o.kms.addr || !s.KMS.Reachable || s.KMS.Error != "" {
		t.Errorf("kms section %+v; want %s reachable", s.KMS, o.kms.addr)
	}
	if s.Config.KMS.Addr != o.kms.addr || s.Config.KMS.KeyTemplate != "kmipfs-$keyid" || s.Config.Meta.Path != filepath.Join(o.dir, "meta") {
		t.Errorf("config section %+v", s.Config)
	}
	switch s.Config.Store.Backend {
	case "local":
		if s.Config.Store.Where != filepath.Join(o.dir, "objects") {
			t.Errorf("store where %q, want %s", s.Config.Store.Where, filepath.Join(o.dir, "objects"))
		}
	case "s3":
		if !strings.HasPrefix(s.Config.Store.Where, "s3:") {
			t.Errorf("s3 store where %q", s.Config.Store.Where)
		}
	default:
		t.Errorf("store backend %q", s.Config.Store.Backend)
	}
	if s.Metrics.Addr != "" {
		t.Errorf("metrics addr %q without [metrics]", s.Metrics.Addr)
	}
	// No secret: neither the client key (nor its path) nor anything of the KMIP secrets.
	keyPEM, err := os.ReadFile(o.kms.files.ClientKey)
	must(t, err)
	for _, line := range strings.Split(strings.TrimSpace(string(keyPEM)), "\n")[1:2] {
		if strings.Contains(raw, line) {
			t.Errorf("status shows the client key")
		}
	}
	if strings.Contains(raw, o.kms.files.ClientKey) {
		t.Errorf("status shows the client key's path")
	}

	// Unflushed data of an open file, then none after close.
	b := o.bucket(t, "stat")
	f, err := os.Create(filepath.Join(b, "open.bin"))
	must(t, err)
	_, err = f.Write(make([]byte, 1<<20))
	must(t, err)
	// Read in this process: the close-on-exec of f in a child process (kmipfs status) is a close,
	// and the kernel sends FUSE a FLUSH for it, which stores the data.
	s = o.statusAttr(t)
	if s.Dirty.Bytes != 1<<20 || s.Dirty.Files != 1 || s.Dirty.OpenFiles < 1 {
		t.Errorf("with 1 MiB written to an open file: dirty %+v", s.Dirty)
	}
	if s.Cache.Keys.Entries < 1 || s.Cache.Keys.Misses < 1 || s.Cache.Meta.Hits == 0 {
		t.Errorf("caches after creating a file: %+v", s.Cache)
	}
	must(t, f.Close())
	s, _ = o.status(t)
	if s.Dirty.Bytes != 0 || s.Dirty.Files != 0 || s.Dirty.Flushes < 1 {
		t.Errorf("after close: dirty %+v; want nothing dirty and a flush", s.Dirty)
	}

	// The attribute: listed nowhere, settable nowhere, readable by getfattr's size protocol.
	buf := make([]byte, 64<<10)
	n, err := syscall.Listxattr(o.mnt, buf)
	must(t, err)
	if strings.Contains(string(buf[:n]), "status") {
		t.Errorf("listxattr of the root lists %q", buf[:n])
	}
	errnoIs(t, "setxattr status on the root", syscall.Setxattr(o.mnt, "user.kmipfs.status", []byte("{}"), 0), syscall.EPERM)
	errnoIs(t, "setxattr status on a bucket", syscall.Setxattr(b, "user.kmipfs.status", []byte("{}"), 0), syscall.EPERM)
	errnoIs(t, "removexattr status on the root", syscall.Removexattr(o.mnt, "user.kmipfs.status"), syscall.EPERM)
	if _, err := exec.LookPath("getfattr"); err == nil {
		out, code := kRun(t, "getfattr", "--absolute-names", "--only-values", "-n", "user.kmipfs.status", o.mnt)
		var doc statusJSON
		if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.Mount.Mountpoint != o.mnt {
			t.Errorf("getfattr of the status: exit %d\n%s", code, out)
		}
	}

	// The human form.
	out, code := kRun(t, kmipfsBin, "status", o.mnt)
	if code != 0 {
		t.Fatalf("kmipfs status: exit %d\n%s", code, out)
	}
	mustContain(t, out, "kmipfs mounted at "+o.mnt, "key server:  "+o.kms.addr+" reachable: yes", "key cache:", "dirty:", "metrics:     off")

	// The key server goes away: the next status says so, with the reason, within a few seconds.
	o.kms.stop(t)
	start := time.Now()
	s, _ = o.status(t)
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("status with the key server down took %s", took)
	}
	if s.KMS.Reachable || s.KMS.Error == "" {
		t.Errorf("with the key server stopped: kms %+v; want reachable false and a reason", s.KMS)
	}
	out, code = kRun(t, kmipfsBin, "status", o.mnt)
	if code != 0 || !strings.Contains(out, "reachable: no: ") {
		t.Errorf("human status with the key server stopped: exit %d\n%s", code, out)
	}
	o.kms.start(t)
	if s, _ = o.status(t); !s.KMS.Reachable {
		t.Errorf("after the key server came back: kms %+v", s.KMS)
	}

	// Paths that are not a kmipfs mount point: exit 2, saying so.
	for _, p := range []string{t.TempDir(), b, filepath.Join(o.dir, "nonexistent")} {
		out, code := kRun(t, kmipfsBin, "status", p)
		if code != 2 || !strings.Contains(out, p) {
			t.Errorf("kmipfs status %s: exit %d, want 2 naming the path\n%s", p, code, out)
		}
	}
	out, code = kRun(t, kmipfsBin, "status")
	if code != 2 {
		t.Errorf("kmipfs status without a mount point: exit %d, want 2\n%s", code, out)
	}
	o.proc.stop(t)
	if out, code := kRun(t, kmipfsBin, "status", o.mnt); code != 2 || !strings.Contains(out, "not the mount point of a running kmipfs") {
		t.Errorf("kmipfs status after unmount: exit %d, want 2\n%s", code, out)
	}
}
