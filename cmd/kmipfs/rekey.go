package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/meta"
	"github.com/kmipfs/kmipfs/repair"
)

const rekeyUsage = `Usage: kmipfs rekey [--config FILE] --from KEYID --to KEYID [PATH]

Re-wraps, on an unmounted kmipfs, the data key of every file whose key is the KMIP key of --from
with the KMIP key of --to (both through kms.key_template), and changes user.kmipfs.key-id from
--from to --to on those files and on the buckets and directories that named --from. File data is
not read or rewritten: each file costs one small metadata transaction. With PATH (relative to the
mount root, e.g. /bucket/dir), only that file or the tree below it.

Each file changes in one transaction, so an interrupted run (Ctrl-C, kill -9, power loss) leaves
every file on one key or the other, and running the command again finishes the job, skipping
files already on the new key. Progress goes to stderr. Revoke or destroy the old key only after a
run that reports 0 failed.

Exit codes: 0 done, 1 some files could not be re-keyed (their wrapped key does not open under the
old key; they are listed), 2 could not run (bad config or key id, --to key not in KMIP, the
filesystem is mounted, KMIP server unavailable); nothing changed before a code-2 stop that names
the new key.

`

func cmdRekey(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("rekey", flag.ContinueOnError)
	fl.SetOutput(stderr)
	configPath := fl.String("config", "/etc/kmipfs/kmipfs.toml", "the config file of the filesystem")
	from := fl.String("from", "", "the key id to move files away from")
	to := fl.String("to", "", "the key id to move files to")
	fl.Usage = func() {
		fmt.Fprint(stderr, rekeyUsage)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &exitError{code: exitOK, err: errHelp}
		}
		return &exitError{code: exitCannotRun, err: errHelp}
	}
	if fl.NArg() > 1 {
		fl.Usage()
		return &exitError{code: exitCannotRun, err: errHelp}
	}
	if err := validKeyID("--from", *from); err != nil {
		return fail(exitCannotRun, "%v", err)
	}
	if err := validKeyID("--to", *to); err != nil {
		return fail(exitCannotRun, "%v", err)
	}
	o, err := openOffline(*configPath, false, stderr)
	if err != nil {
		return err
	}
	defer o.close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	tmpl := o.cfg.KMS.KeyTemplate
	if kms.KeyName(tmpl, *from) == kms.KeyName(tmpl, *to) {
		return fail(exitCannotRun, "--from %q and --to %q name the same KMIP key %q", *from, *to, kms.KeyName(tmpl, *to))
	}
	bar := newProgress(stderr, "rekey", true)
	rep, err := repair.Rekey(ctx, repair.RekeyOptions{
		Meta:     o.db,
		Keys:     o.keys,
		Template: tmpl,
		From:     *from,
		To:       *to,
		Path:     fl.Arg(0),
		Progress: func(done, total int) { bar.update(uint64(done), uint64(total), "files") },
		Failed: func(p string, err error) {
			bar.clear()
			fmt.Fprintf(stdout, "failed: %s: %v\n", p, err)
		},
	})
	bar.clear()
	if rep == nil { // stopped before any change
		switch {
		case errors.Is(err, kms.ErrKeyNotFound):
			return fail(exitCannotRun, "--to %q: no active KMIP key named %q (create it with \"kmipfs key create %s\"); nothing changed", *to, kms.KeyName(tmpl, *to), *to)
		case errors.Is(err, meta.ErrNotFound), errors.Is(err, meta.ErrNotDir):
			return fail(exitCannotRun, "PATH %q: no such file or directory in the filesystem (give it relative to the mount root, e.g. /bucket/dir)", fl.Arg(0))
		}
		return fail(exitCannotRun, "rekey: %v; nothing changed", err)
	}
	summary := fmt.Sprintf("rekey: %d files re-wrapped from %s to %s, %d already on %s, %d directories changed, %d failed",
		rep.Files, *from, *to, rep.Skipped, *to, rep.Dirs, rep.Failed)
	if err != nil {
		fmt.Fprintln(stdout, summary+" before the stop")
		return fail(exitCannotRun, "rekey stopped: %v (run it again to finish)", err)
	}
	fmt.Fprintln(stdout, summary)
	if rep.Failed > 0 {
		return &exitError{code: exitFailure, err: errHelp}
	}
	return nil
}
