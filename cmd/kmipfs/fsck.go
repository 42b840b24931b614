package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmipfs/kmipfs/repair"
)

const fsckUsage = `Usage: kmipfs fsck [--config FILE] [--repair]

Checks an unmounted kmipfs: the metadata database against its invariants, every object the
metadata names against the store (present, long enough), every stored block against its file's
data key (unwrapped through KMIP, as a mount does), and the store for orphan objects (kmipfs
objects that no file references and that are not queued for deletion, left by a crash between an
upload and its commit). Prints one line per problem, then a summary; a progress bar goes to stderr
when it is a terminal.

--repair deletes the orphan objects and changes nothing else: a damaged block stays damaged (reads
of it fail with EIO), and the lines name the files and blocks to restore from a backup.

Exit codes: 0 clean, 1 problems found (also when --repair removed them), 2 could not run (bad
config, the filesystem is mounted, KMIP server or store unavailable).

`

func cmdFsck(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("fsck", flag.ContinueOnError)
	fl.SetOutput(stderr)
	configPath := fl.String("config", "/etc/kmipfs/kmipfs.toml", "the config file of the filesystem")
	fix := fl.Bool("repair", false, "delete orphan objects (nothing else is changed)")
	fl.Usage = func() {
		fmt.Fprint(stderr, fsckUsage)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &exitError{code: exitOK, err: errHelp}
		}
		return &exitError{code: exitCannotRun, err: errHelp}
	}
	if fl.NArg() != 0 {
		fl.Usage()
		return &exitError{code: exitCannotRun, err: errHelp}
	}
	o, err := openOffline(*configPath, true, stderr)
	if err != nil {
		return err
	}
	defer o.close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	bar := newProgress(stderr, "fsck", false)
	rep, err := repair.Check(ctx, repair.CheckOptions{
		Meta:   o.db,
		Store:  o.store,
		Keys:   o.keys,
		Repair: *fix,
		Problem: func(p repair.Problem) {
			bar.clear()
			fmt.Fprintln(stdout, p.String())
		},
		Progress: func(done, total uint64) { bar.update(done, total, "bytes") },
	})
	bar.clear()
	summary := fmt.Sprintf("fsck: %d files, %d blocks in %d objects checked: %d damaged files, %d metadata problems, %d orphan objects",
		rep.Files, rep.Blocks, rep.Objects, rep.Damaged, rep.Meta, rep.Orphans)
	if *fix {
		summary += fmt.Sprintf(" (%d removed)", rep.Removed)
	}
	if err != nil {
		fmt.Fprintln(stdout, summary+" so far")
		return fail(exitCannotRun, "fsck could not finish: %v", err)
	}
	fmt.Fprintln(stdout, summary)
	if !rep.Clean() {
		return &exitError{code: exitFailure, err: errHelp}
	}
	return nil
}

// progress draws a one-line progress bar on a terminal, at most ten times a second. When the
// output is not a terminal it prints nothing, or, if lines is set, one line at every tenth of the
// way (for logs of long runs, and for scripts that watch a run).
type progress struct {
	w        io.Writer
	label    string
	tty      bool
	lines    bool
	last     time.Time
	tenth    uint64 // the last tenth printed, for lines
	lastDone uint64 // done at the last redraw of the bar
	drawn    bool   // a bar is on the screen
	width    int
}

func newProgress(w io.Writer, label string, lines bool) *progress {
	p := &progress{w: w, label: label, lines: lines, width: 30}
	if f, ok := w.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			p.tty = true
		}
	}
	return p
}

func (p *progress) update(done, total uint64, unit string) {
	switch {
	case p.tty:
		if p.drawn && (done == p.lastDone || time.Since(p.last) < 100*time.Millisecond && done != total) {
			return
		}
		p.last, p.lastDone = time.Now(), done
		frac := 1.0
		if total > 0 {
			frac = float64(min(done, total)) / float64(total)
		}
		n := int(frac * float64(p.width))
		fmt.Fprintf(p.w, "\r%s [%s%s] %3.0f%% %s", p.label, strings.Repeat("#", n), strings.Repeat(".", p.width-n), 100*frac,
			ratio(done, total, unit))
		p.drawn = true
	case p.lines && total > 0:
		tenth := 10 * min(done, total) / total
		if tenth > p.tenth || (done == total && p.tenth < 10) {
			p.tenth = tenth
			fmt.Fprintf(p.w, "%s: %s done\n", p.label, ratio(done, total, unit))
		}
	}
}

// clear removes the bar so that a line can be printed in its place.
func (p *progress) clear() {
	if p.drawn {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", len(p.label)+p.width+60))
		p.drawn = false
	}
}

// ratio formats done out of total for a progress line: "1.5 MiB/64.0 MiB" for bytes, "100/1000
// files" for anything else.
func ratio(done, total uint64, unit string) string {
	if unit != "bytes" {
		return fmt.Sprintf("%d/%d %s", done, total, unit)
	}
	return sizeString(done) + "/" + sizeString(total)
}

// sizeString formats a byte count in binary units.
func sizeString(n uint64) string {
	const k = 1024
	if n < k {
		return fmt.Sprintf("%d B", n)
	}
	f, suffix := float64(n)/k, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB", "PiB"} {
		if f < k {
			break
		}
		f, suffix = f/k, s
	}
	return fmt.Sprintf("%.1f %s", f, suffix)
}
