package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/syslog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// How a mount tells whoever started it that it is ready, or why it is not:
//   - kmipfs mount --background re-runs itself detached (startDetached) and waits on a pipe for a
//     line "ready" or "fail CODE MESSAGE" from the detached process (readyFDEnv names the pipe);
//   - under systemd (Type=notify) the foreground mount sends READY=1 and, when it unmounts,
//     STOPPING=1 to $NOTIFY_SOCKET (sd_notify(3)).
//
// Both happen only once the kernel has acknowledged the mount and the FUSE server answers, so the
// next command (or unit) finds the filesystem there.

// readyFDEnv names the file descriptor of the readiness pipe in the detached process.
const readyFDEnv = "KMIPFS_READY_FD"

// starter reports readiness to the parent of a --background mount and to systemd.
type starter struct {
	pipe *os.File // the readiness pipe, nil unless this is the detached half of --background
}

// newStarter picks up the readiness pipe a --background parent passed, if any.
func newStarter() *starter {
	fd, err := strconv.Atoi(os.Getenv(readyFDEnv))
	if err != nil || fd < 3 {
		return &starter{}
	}
	_ = os.Unsetenv(readyFDEnv)
	syscall.CloseOnExec(fd)
	return &starter{pipe: os.NewFile(uintptr(fd), "readiness pipe")}
}

// detached says whether this process is the background half of kmipfs mount --background.
func (s *starter) detached() bool { return s.pipe != nil }

// warn passes a line to the parent's stderr before it returns (the detached process has none).
func (s *starter) warn(msg string) {
	if s.pipe != nil {
		fmt.Fprintf(s.pipe, "warn %s\n", strings.ReplaceAll(msg, "\n", " "))
	}
}

// ready reports a mount that serves requests.
func (s *starter) ready(mountpoint string) {
	if s.pipe != nil {
		fmt.Fprintf(s.pipe, "ready\n")
		_ = s.pipe.Close()
		s.pipe = nil
	}
	sdNotify("READY=1\nSTATUS=mounted at " + mountpoint + "\nMAINPID=" + strconv.Itoa(os.Getpid()))
}

// failed reports a start that did not come up, with the exit code and reason the parent repeats.
func (s *starter) failed(err error) {
	if s.pipe == nil {
		return
	}
	code := exitFailure
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	fmt.Fprintf(s.pipe, "fail %d %s\n", code, strings.ReplaceAll(err.Error(), "\n", " "))
	_ = s.pipe.Close()
	s.pipe = nil
}

// stopping tells systemd the mount is going away (a stop it did not ask for is then no failure).
func (s *starter) stopping() { sdNotify("STOPPING=1") }

// sdNotify sends state to systemd's notification socket, if this process was started with one.
// Errors are ignored: without systemd there is nobody to tell.
func sdNotify(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // an abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return
	}
	_, _ = conn.Write([]byte(state))
	_ = conn.Close()
}

// startDetached runs "kmipfs mount ARGS" again as a detached process (its own session, stdin and
// stdout on /dev/null, stderr on the log file if there is one) and waits until it reports the
// mount ready or failed. It returns the detached process's exit code and reason on failure.
func startDetached(args []string, logFile string, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return fail(exitFailure, "--background: cannot find the kmipfs executable: %v", err)
	}
	var logf *os.File
	if logFile != "" {
		logf, err = os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return fail(exitUsage, "--log-file: %v", err)
		}
		defer logf.Close()
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fail(exitFailure, "--background: %v", err)
	}
	defer r.Close()
	cmd := exec.Command(exe, append([]string{"mount"}, args...)...)
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	if logf != nil {
		cmd.Stderr = logf // also where a crash of the detached process ends up
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	_ = w.Close()
	if err != nil {
		return fail(exitFailure, "--background: %v", err)
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		kind, rest, _ := strings.Cut(sc.Text(), " ")
		switch kind {
		case "warn":
			fmt.Fprintf(stderr, "kmipfs: %s\n", rest)
		case "ready":
			_ = cmd.Process.Release()
			return nil
		case "fail":
			_ = cmd.Wait()
			codeStr, msg, _ := strings.Cut(rest, " ")
			code, err := strconv.Atoi(codeStr)
			if err != nil {
				code = exitFailure
			}
			return fail(code, "%s", msg)
		}
	}
	// The pipe closed without a word: the detached process died while starting.
	werr := cmd.Wait()
	where := "run it without --background to see why"
	if logFile != "" {
		where = "see " + logFile
	}
	return fail(exitMount, "the mount process exited before the mount was ready (%v); %s", werr, where)
}

// detachedLog is where the log of a detached mount without --log-file goes: the system log (the
// journal on systemd machines), or nowhere, with a warning, when there is none.
func detachedLog(s *starter) io.Writer {
	w, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "kmipfs")
	if err != nil {
		s.warn("no --log-file and no system log (" + err.Error() + "): the mount's log is discarded")
		return io.Discard
	}
	return w
}

// runMountHelper is kmipfs called as mount.fuse.kmipfs or mount.kmipfs by mount(8), for
// "mount -t fuse.kmipfs CONFIG MOUNTPOINT -o OPTIONS" and fstab lines of that type:
//
//	mount.fuse.kmipfs CONFIG MOUNTPOINT [-sfnvrw] [-o OPTIONS] [-t TYPE]
//
// It mounts in the background and returns once the mount is ready.
func runMountHelper(name string, args []string, stdout, stderr io.Writer) int {
	var pos, opts []string
	sloppy, fake := false, false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "-t" || a == "-N":
			if i+1 >= len(args) {
				fmt.Fprintf(stderr, "%s: %s needs a value\n", name, a)
				return exitUsage
			}
			i++
			switch a {
			case "-o":
				opts = append(opts, args[i])
			case "-N":
				fmt.Fprintf(stderr, "%s: -N (mount in another namespace) is not supported\n", name)
				return exitUsage
			}
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, a[2:])
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for _, c := range a[1:] {
				switch c {
				case 's':
					sloppy = true
				case 'f':
					fake = true
				case 'r':
					opts = append(opts, "ro")
				case 'w':
					opts = append(opts, "rw")
				case 'n', 'v': // no mtab to write; verbose
				default:
					fmt.Fprintf(stderr, "%s: unknown flag -%c\n", name, c)
					return exitUsage
				}
			}
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		fmt.Fprintf(stderr, "Usage: %s CONFIG MOUNTPOINT [-o OPTIONS]\n\n"+
			"The mount helper for \"mount -t fuse.kmipfs CONFIG MOUNTPOINT\" and /etc/fstab lines like\n"+
			"  /etc/kmipfs/kmipfs.toml /mnt/kmip fuse.kmipfs defaults,allow_other,_netdev 0 0\n\n%s",
			name, mountOptionsHelp)
		return exitUsage
	}
	margs := []string{"mount", "--background", "--config", pos[0]}
	if len(opts) > 0 {
		margs = append(margs, "-o", strings.Join(opts, ","))
	}
	if sloppy {
		margs = append(margs, "--sloppy")
	}
	if fake {
		// mount -f: check everything, mount nothing.
		if _, _, err := parseMountOptions(strings.Join(opts, ","), sloppy); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return exitUsage
		}
		return exitOK
	}
	return run(append(margs, pos[1]), stdout, stderr)
}
