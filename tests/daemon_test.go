package tests

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMountBackground checks kmipfs mount --background: it returns 0 only once the mount serves
// requests, the detached process logs to --log-file and unmounts cleanly, and a start that fails
// returns the detached process's exit code and reason instead of 0.
func TestMountBackground(t *testing.T) {
	dir, cfg, mnt := badinputBinary(t)
	logFile := filepath.Join(dir, "kmipfs.log")
	out, err := exec.Command(kmipfsBin, "mount", "--background", "--log-file", logFile, "--config", cfg, mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("kmipfs mount --background: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("fusermount3", "-u", mnt).Run() })
	// No waiting: the mount must be there when the command returns.
	if !isMounted(mnt) {
		t.Fatalf("kmipfs mount --background returned before %s was mounted; output:\n%s", mnt, out)
	}
	bucket := filepath.Join(mnt, "bucket")
	must(t, os.Mkdir(bucket, 0o755))
	kSetKeyID(t, bucket, keyA)
	writeFile(t, filepath.Join(bucket, "f"), []byte("background\n"))
	// The detached process left the caller's session and writes its log to the file.
	mustContain(t, readString(t, logFile), "msg=mounted")
	if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v\n%s", err, out)
	}
	waitLog(t, logFile, "unmounted from outside")
	waitLog(t, logFile, "kms: requests made") // logged as the detached process closes

	// KMIP unreachable: the exit code and reason of the detached process, and no mount.
	bad := filepath.Join(dir, "bad.toml")
	good, err := os.ReadFile(cfg)
	must(t, err)
	addr := configValue(t, cfg, "addr")
	writeFile(t, bad, []byte(strings.Replace(string(good), addr, "127.0.0.1:1", 1)))
	start := time.Now()
	out, err = exec.Command(kmipfsBin, "mount", "--background", "--log-file", logFile, "--config", bad, mnt).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("kmipfs mount --background with KMIP down: %v, want exit 3; output:\n%s", err, out)
	}
	mustContain(t, string(out), "127.0.0.1:1", "KMIP")
	if isMounted(mnt) {
		t.Fatal("mounted although the start failed")
	}
	mustContain(t, readString(t, logFile), `msg="mount failed"`, "127.0.0.1:1") // the log keeps the reason too
	t.Logf("a failed background start took %v and said: %s", time.Since(start).Round(time.Millisecond), out)
}

// TestMountSystemdNotify runs a foreground mount the way a Type=notify unit does: with
// NOTIFY_SOCKET set, kmipfs sends READY=1 (with its pid) once mounted and STOPPING=1 on SIGTERM.
func TestMountSystemdNotify(t *testing.T) {
	dir, cfg, mnt := badinputBinary(t)
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	must(t, err)
	defer conn.Close()
	cmd := exec.Command(kmipfsBin, "mount", "--config", cfg, mnt)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = exec.Command("fusermount3", "-u", mnt).Run()
	})
	recv := func(want string) string {
		t.Helper()
		buf := make([]byte, 4096)
		must(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no %s notification: %v; output:\n%s", want, err, out.String())
		}
		return string(buf[:n])
	}
	msg := recv("READY=1")
	if !strings.Contains(msg, "READY=1") || !strings.Contains(msg, "MAINPID="+strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("first notification %q, want READY=1 and MAINPID=%d", msg, cmd.Process.Pid)
	}
	if !isMounted(mnt) {
		t.Fatal("READY=1 came before the mount")
	}
	must(t, cmd.Process.Signal(syscall.SIGTERM))
	if msg := recv("STOPPING=1"); !strings.Contains(msg, "STOPPING=1") {
		t.Fatalf("notification after SIGTERM %q, want STOPPING=1", msg)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("kmipfs exited with %v after SIGTERM; output:\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("kmipfs did not exit after SIGTERM")
	}
	if isMounted(mnt) {
		t.Fatal("still mounted after kmipfs exited")
	}
}

// waitLog waits up to 10 s for the log file to contain substr.
func waitLog(t *testing.T, path, substr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(readString(t, path), substr) {
			return
		}
	}
	t.Fatalf("%s has no %q after 10s:\n%s", path, substr, readString(t, path))
}
