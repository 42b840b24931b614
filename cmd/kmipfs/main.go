// Command kmipfs mounts a FUSE filesystem whose file data is encrypted with keys held in a KMIP key
// manager and stored in an object store. See README.md for the user guide.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Exit codes, so scripts can tell a usage mistake from a failure to start or a failure later on.
const (
	exitOK      = 0
	exitFailure = 1 // a runtime error after start
	exitUsage   = 2 // bad command line or config file
	exitKMS     = 3 // the KMIP server could not be reached or refused us at start
	exitMount   = 4 // the store, metadata or FUSE mount could not be set up
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries an exit code through the command functions.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func fail(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

const usage = `kmipfs: an encrypting FUSE filesystem with keys in a KMIP key manager

Usage:
  kmipfs mount [--config FILE] [-o OPTIONS] [--background] MOUNTPOINT
                                                      mount; in the foreground Ctrl-C unmounts
  kmipfs demo [DIR]                                   zero set-up demo under DIR (default ./kmipfs-demo)
  kmipfs kms serve [--dir DIR] [--addr HOST:PORT]     run the embedded KMIP server (for tests and demos)
  kmipfs key create|list|show|revoke [--config FILE] [KEYID]
                                                      manage keys in the KMIP server of the config's [kms]
  kmipfs fsck [--config FILE] [--repair]              check an unmounted filesystem; --repair deletes orphan objects
  kmipfs rekey [--config FILE] --from KEYID --to KEYID [PATH]
                                                      re-wrap data keys of an unmounted filesystem to another key
  kmipfs status [--json] MOUNTPOINT                   what a running mount is doing: config, store, KMIP, cache
  kmipfs version                                      print the version and on-store format version
  kmipfs help                                         this text

Run "kmipfs COMMAND --help" for the options of a command.
`

func main() {
	// Installed as /sbin/mount.fuse.kmipfs (a link to kmipfs), it is mount(8)'s helper.
	if name := filepath.Base(os.Args[0]); name == "mount.fuse.kmipfs" || name == "mount.kmipfs" {
		os.Exit(runMountHelper(name, os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "mount":
		err = cmdMount(args[1:], stdout, stderr)
	case "demo":
		err = cmdDemo(args[1:], stdout, stderr)
	case "kms":
		err = cmdKMS(args[1:], stdout, stderr)
	case "key":
		err = cmdKey(args[1:], stdout, stderr)
	case "fsck":
		err = cmdFsck(args[1:], stdout, stderr)
	case "rekey":
		err = cmdRekey(args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(args[1:], stdout, stderr)
	case "version", "--version":
		err = cmdVersion(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "kmipfs: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != errHelp {
			fmt.Fprintf(stderr, "kmipfs: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "kmipfs: %v\n", err)
	return exitFailure
}

// errHelp marks a --help request that already printed its text.
var errHelp = errors.New("help")

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log.level: expected debug, info, warn or error, got %q", s)
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	lv, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
