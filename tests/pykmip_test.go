package tests

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/kms/kmstest"
)

// The tests in this file run kmipfs against a real PyKMIP 0.10 server (Debian package python3-pykmip,
// under /usr/bin/python3), which each test starts on a free loopback port with a fresh database and a
// PKI of its own, and stops (SIGINT, then no process of its group left) in t.Cleanup, also on failure.
// Without PyKMIP they skip, unless KMIPFS_TEST_DISALLOW_SKIP is set (CI), where they fail.

// TestPyKMIP runs the flows against one PyKMIP server: the Ceph documentation flow on a mount,
// 1000 files with one Locate and one Get (counted by the real binary), the key commands, a key revoked
// from PyKMIP's own client, and start-ups refused for bad certificates or a wrong port.
func TestPyKMIP(t *testing.T) {
	p := kmstest.RunPyKMIP(t, kmstest.PyKMIPOptions{Timeout: 5 * time.Second})
	b := pykmipBackend(p)
	t.Run("ceph flow", func(t *testing.T) { testCephFlow(t, b) })
	t.Run("1000 files", func(t *testing.T) {
		if l, g := testThousandFiles(t, b, false); l != 1 || g != 1 {
			t.Errorf("1000 files made %d Locate and %d Get requests, want 1 and 1", l, g)
		}
	})
	t.Run("key commands", func(t *testing.T) { testKeyCommands(t, b) })
	t.Run("revoked in PyKMIP", func(t *testing.T) {
		testRevokedKey(t, b, func(t *testing.T, name string) {
			out, err := p.Python(t.Context(), pyRevokeScript, name)
			if err != nil || !strings.Contains(string(out), "REVOKED") {
				t.Fatalf("revoke %s with PyKMIP's client: %v\n%s", name, err, out)
			}
		})
	})
	t.Run("refused at start", func(t *testing.T) { testRefusedAtStart(t, b) })
	if !p.Running() {
		t.Fatalf("PyKMIP died during the test:\n%s", p.Log())
	}
}

// TestPyKMIPOutage stops PyKMIP with SIGINT and starts it again on the same port and database, then
// freezes it with SIGSTOP (a hung key manager) and resumes it, all under one mount.
//
// PyKMIP's SIGINT shutdown first waits up to 10 s for each open session, answering nothing meanwhile
// (a hang, which the freeze phase tests on its own), so before stopping it the test closes the mount's
// idle pooled connections, as a minute of idleness would; the stop then takes about 2 s.
func TestPyKMIPOutage(t *testing.T) {
	p := kmstest.RunPyKMIP(t, kmstest.PyKMIPOptions{})
	testOutage(t, pykmipBackend(p), outageServer{name: "PyKMIP",
		down: func(t *testing.T, e *env) {
			e.client.CloseIdle()
			pgid := p.Pgid()
			start := time.Now()
			if err := p.Stop(); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Fatalf("processes of PyKMIP's group %d are left after Stop: %v", pgid, err)
			}
			t.Logf("PyKMIP stopped with SIGINT in %v, no process of its group left", time.Since(start).Round(time.Millisecond))
		},
		up: func(t *testing.T, _ *env) {
			start := time.Now()
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
			t.Logf("PyKMIP restarted on %s in %v", p.Addr, time.Since(start).Round(time.Millisecond))
		},
		freeze: func(t *testing.T, _ *env) {
			if err := p.Freeze(); err != nil {
				t.Fatal(err)
			}
		},
		thaw: func(t *testing.T, _ *env) {
			if err := p.Thaw(); err != nil {
				t.Fatal(err)
			}
		},
	})
}
