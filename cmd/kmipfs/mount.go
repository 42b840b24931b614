package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/kmipfs/kmipfs/crypt"
	"github.com/kmipfs/kmipfs/fs"
	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/meta"
	"github.com/kmipfs/kmipfs/objstore"
	"github.com/kmipfs/kmipfs/objstore/local"
	"github.com/kmipfs/kmipfs/objstore/s3"
)

func cmdMount(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("mount", flag.ContinueOnError)
	fl.SetOutput(stderr)
	configPath := fl.String("config", "/etc/kmipfs/kmipfs.toml", "the config file")
	debug := fl.Bool("debug", false, "log every FUSE request and reply")
	logLevel := fl.String("log-level", "", "override log.level from the config (debug, info, warn, error)")
	background := fl.Bool("background", false, "return once the mount is ready and keep serving it detached;\n"+
		"a mount that cannot start exits non-zero with the reason")
	logFile := fl.String("log-file", "", "with --background: append the log to this file (default: the system log)")
	sloppy := fl.Bool("sloppy", false, "ignore unknown -o options instead of refusing them (mount -s)")
	var optList []string
	fl.Func("o", "mount options, comma-separated (see below); may be repeated", func(s string) error {
		optList = append(optList, s)
		return nil
	})
	fl.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kmipfs mount [--config FILE] [-o OPTIONS] [--background [--log-file FILE]] MOUNTPOINT\n\n"+
			"Mounts kmipfs, in the foreground unless --background. SIGINT or SIGTERM unmounts, as does umount.\n"+
			"Under systemd (Type=notify) it reports readiness with sd_notify.\n\n")
		fl.PrintDefaults()
		fmt.Fprintf(stderr, "\n%s", mountOptionsHelp)
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &exitError{code: exitOK, err: errHelp}
		}
		return &exitError{code: exitUsage, err: errHelp}
	}
	if fl.NArg() != 1 {
		fl.Usage()
		return &exitError{code: exitUsage, err: errHelp}
	}
	mo, skipped, err := parseMountOptions(strings.Join(optList, ","), *sloppy)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	if *logFile == "" {
		*logFile = mo.logFile
	}
	st := newStarter()
	if *background && !st.detached() {
		return startDetached(args, *logFile, stderr)
	}
	logTo := stderr
	if st.detached() && *logFile == "" {
		logTo = detachedLog(st) // stderr is /dev/null there
	}
	err = mountAndServe(*configPath, fl.Arg(0), mo, skipped, *debug, *logLevel, st, stdout, logTo)
	if err != nil {
		st.failed(err)
	}
	return err
}

// mountAndServe loads the config, applies the mount options, mounts, reports readiness to st and
// serves until unmounted. The log goes to logTo.
func mountAndServe(configPath, mountpoint string, mo mountOptions, skipped []string, debug bool, logLevel string,
	st *starter, stdout, logTo io.Writer) error {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	if logLevel == "" {
		logLevel = mo.logLevel
	}
	if logLevel != "" {
		if _, err := parseLevel(logLevel); err != nil {
			return fail(exitUsage, "--log-level: %v", err)
		}
		cfg.Log.Level = logLevel
	}
	if mo.allowOther {
		cfg.FS.AllowOther = true
	}
	if mo.defaultPermissions {
		t := true
		cfg.FS.DefaultPermissions = &t
	}
	logger := newLogger(logTo, cfg.Log.Level, cfg.Log.Format)
	if len(skipped) > 0 {
		logger.Warn("ignoring unknown mount options (--sloppy)", "options", strings.Join(skipped, ","))
	}
	sigs := notifyStop()
	defer signal.Stop(sigs)
	m, err := startMount(cfg, mountpoint, mo.kernel, debug || mo.debug, logger)
	if err != nil {
		if st.detached() {
			// The caller prints the reason it gets through the pipe; the log (a file or syslog)
			// keeps it too. A foreground mount prints it once, on stderr, as every command does.
			logger.Error("mount failed", "mountpoint", mountpoint, "err", err)
		}
		return err
	}
	st.ready(m.mountpoint)
	fmt.Fprintf(stdout, "kmipfs mounted at %s (Ctrl-C to unmount)\n", m.mountpoint)
	return m.serveUntilSignal(sigs, st)
}

// notifyStop starts catching SIGINT and SIGTERM. It is called before mounting, so that a signal
// that arrives while the mount comes up still leads to a clean unmount instead of killing the
// process and leaving a dead mount behind.
func notifyStop() chan os.Signal {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	return sigs
}

// mounted is a running mount and everything it holds open.
type mounted struct {
	mountpoint string
	log        *slog.Logger
	srv        *fuse.Server
	fsys       *fs.FS
	db         *meta.DB
	client     *kms.Client
	cache      *kms.Cache
	// cfg, started and metrics are for kmipfs status and the metrics endpoint
	// (status.go, metrics.go); metrics is nil when [metrics] addr is empty.
	cfg     *Config
	started time.Time
	metrics *metricsServer
}

// startMount connects to the KMIP server (checking it answers, so a wrong address, CA or client
// certificate stops start-up with one clear line), opens the store and metadata, and mounts.
func startMount(cfg *Config, mountpoint string, kernelOptions []string, debug bool, logger *slog.Logger) (*mounted, error) {
	// The metrics port first: a port that is taken stops start-up before anything is opened.
	ms, err := listenMetrics(cfg.Metrics.Addr)
	if err != nil {
		return nil, fail(exitMount, "%v", err)
	}
	client, err := kms.NewClient(cfg.KMS, logger)
	if err != nil {
		ms.close()
		return nil, fail(exitUsage, "%v", err)
	}
	pingCtx, cancel := context.WithTimeout(context.Background(), cfg.KMS.Timeout.Duration+time.Second)
	err = client.Ping(pingCtx)
	cancel()
	if err != nil {
		client.Close()
		ms.close()
		return nil, fail(exitKMS, "cannot start, the KMIP server check failed: %v", err)
	}
	store, err := openStore(cfg, logger)
	if err != nil {
		client.Close()
		ms.close()
		return nil, fail(exitMount, "%v", err)
	}
	store = ms.wrapStore(store)
	db, err := openMeta(context.Background(), cfg, client, logger)
	if err != nil {
		client.Close()
		ms.close()
		return nil, err
	}
	cache := kms.NewCache(client, cfg.KMS.CacheOptions(logger))
	m := &mounted{mountpoint: mountpoint, log: logger, db: db, client: client, cache: cache,
		cfg: cfg, started: time.Now(), metrics: ms}
	m.fsys, err = fs.New(context.Background(), fs.Options{
		Meta:        db,
		Store:       store,
		Keys:        cache,
		KeyTemplate: cfg.KMS.KeyTemplate,
		Config:      cfg.FS,
		Logger:      logger,
		Status:      fs.StatusFunc(m.status),
	})
	if err != nil {
		m.closeBackends()
		return nil, fail(exitMount, "%v", err)
	}
	m.srv, err = fs.Mount(mountpoint, m.fsys, fs.MountOptions{Debug: debug, FsName: "kmipfs:" + storeName(cfg),
		KernelOptions: kernelOptions})
	if err != nil {
		m.closeBackends()
		return nil, fail(exitMount, "%v (is the mount point an existing empty directory, and is /dev/fuse usable?)", err)
	}
	logger.Info("mounted", "mountpoint", mountpoint, "kms", cfg.KMS.Addr, "kmip_version", client.Version(),
		"store", storeName(cfg), "meta", cfg.Meta.Path)
	m.serveMetrics()
	return m, nil
}

// openStore opens the object store of cfg's [store] section: a local directory, or S3 with its
// concurrency bound and retries. Errors name the option to fix.
func openStore(cfg *Config, logger *slog.Logger) (objstore.Store, error) {
	switch cfg.Store.Backend {
	case "s3":
		s, err := s3.Open(cfg.Store.Config, s3.Options{Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("store: %v", err)
		}
		return s, nil
	default:
		s, err := local.New(cfg.Store.Path, local.Options{Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("store.path: %v", err)
		}
		return s, nil
	}
}

// storeName says where the objects are, for the mount's name and the log: a directory, or the S3
// endpoint and bucket prefix (never credentials).
func storeName(cfg *Config) string {
	if cfg.Store.Backend != "s3" {
		return cfg.Store.Path
	}
	ep := cfg.Store.Endpoint
	if ep == "" {
		ep = "s3." + cfg.Store.Region + ".amazonaws.com"
	}
	return "s3:" + ep + "/" + cfg.Store.BucketPrefix + "*"
}

// serveUntilSignal serves requests until SIGINT/SIGTERM or an external unmount, then unmounts and
// writes out what is still buffered.
func (m *mounted) serveUntilSignal(sigs <-chan os.Signal, st *starter) error {
	done := make(chan struct{})
	go func() { m.srv.Wait(); close(done) }()
	defer st.stopping()
	select {
	case s := <-sigs:
		m.log.Info("unmounting", "signal", s.String())
		m.unmount(sigs, done)
	case <-done:
		m.log.Info("unmounted from outside")
	}
	return m.close()
}

// unmount asks the kernel to unmount, retrying while the mount is busy, until a second signal
// forces a lazy unmount.
func (m *mounted) unmount(sigs <-chan os.Signal, done <-chan struct{}) {
	for {
		err := m.srv.Unmount()
		if err == nil {
			<-done
			return
		}
		m.log.Warn("unmount failed; retrying (send the signal again to detach lazily)", "err", err)
		select {
		case <-sigs:
			_ = syscall.Unmount(m.mountpoint, syscall.MNT_DETACH)
			<-done
			return
		case <-done:
			return
		case <-time.After(time.Second):
		}
	}
}

// close flushes buffered data and closes the backends.
func (m *mounted) close() error {
	var err error
	if m.fsys != nil {
		if ferr := m.fsys.FlushAll(context.Background()); ferr != nil {
			m.log.Error("data that could not be stored at unmount is lost", "err", ferr)
			err = fail(exitFailure, "flush at unmount: %v", ferr)
		}
	}
	m.closeBackends()
	return err
}

func (m *mounted) closeBackends() {
	m.metrics.close()
	if m.cache != nil {
		m.cache.Close()
	}
	if m.client != nil {
		// One line with what the mount asked of KMIP: with a working cache, Locate and Get stay
		// near one per key per cache_ttl however many files were read and written.
		s, cs := m.client.Stats(), kms.CacheStats{}
		if m.cache != nil {
			cs = m.cache.Stats()
		}
		m.log.Info("kms: requests made", "locate", s.Locate, "get", s.Get, "discover_versions", s.Discover,
			"create", s.Create, "other", s.Other, "errors", s.Errors, "connections", s.Dials,
			"cache_hits", cs.Hits, "cache_misses", cs.Misses, "cache_stale", cs.Stale)
		m.client.Close()
	}
	if m.db != nil {
		if err := m.db.Close(); err != nil {
			m.log.Error("closing metadata", "err", err)
		}
	}
}

func cmdVersion(stdout io.Writer) error {
	fmt.Fprintf(stdout, "kmipfs %s (on-store format %d)\n", version, crypt.Version)
	return nil
}
