package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kmipfs/kmipfs/crypt"
)

// statusXattr is the attribute of the mount root that carries the status document (fs/status.go
// says why an xattr and not a socket).
const statusXattr = "user.kmipfs.status"

// statusPingTimeout bounds the fresh KMIP check of a status request, so that kmipfs status
// answers within a few seconds even when the key server hangs.
const statusPingTimeout = 3 * time.Second

// statusWait is how long kmipfs status waits for the mount to answer.
const statusWait = 15 * time.Second

// statusDoc is what kmipfs status shows: the JSON of --json, built by the running mount. It holds
// no secret: no key material, no password or S3 credentials, not even the paths of the KMIP
// client key or of the credentials file.
type statusDoc struct {
	Mount   statusMount   `json:"mount"`
	Config  statusConfig  `json:"config"`
	KMS     statusKMS     `json:"kms"`
	Cache   statusCaches  `json:"cache"`
	Dirty   statusDirty   `json:"dirty"`
	Metrics statusMetrics `json:"metrics"`
}

type statusMount struct {
	Mountpoint    string    `json:"mountpoint"`
	PID           int       `json:"pid"`
	Version       string    `json:"version"`
	FormatVersion int       `json:"format_version"`
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
}

type statusConfig struct {
	Store struct {
		Backend      string `json:"backend"`
		Where        string `json:"where"` // the directory, or the S3 endpoint and bucket prefix
		BucketPrefix string `json:"bucket_prefix,omitempty"`
		Credentials  string `json:"credentials,omitempty"` // s3: "credentials_file" or "environment"
	} `json:"store"`
	Meta struct {
		Path            string `json:"path"`
		EncryptedAtRest bool   `json:"encrypted_at_rest"`
	} `json:"meta"`
	KMS struct {
		Addr         string `json:"addr"`
		KeyTemplate  string `json:"key_template"`
		CAPath       string `json:"ca_path"`
		ClientCert   string `json:"client_cert"`
		PasswordAuth bool   `json:"password_auth"`
		Timeout      string `json:"timeout"`
		CacheTTL     string `json:"cache_ttl"`
		NegativeTTL  string `json:"negative_ttl"`
		StaleTTL     string `json:"stale_ttl"`
	} `json:"kms"`
	FS struct {
		DefaultKeyID       string `json:"default_key_id"`
		AllowOther         bool   `json:"allow_other"`
		DefaultPermissions bool   `json:"default_permissions"`
		MaxDirtyMiB        int    `json:"max_dirty_mib"`
	} `json:"fs"`
	Log struct {
		Level  string `json:"level"`
		Format string `json:"format"`
	} `json:"log"`
}

type statusKMS struct {
	Addr        string  `json:"addr"`
	Reachable   bool    `json:"reachable"`
	Error       string  `json:"error,omitempty"`
	PingSeconds float64 `json:"ping_seconds"`
	KMIPVersion string  `json:"kmip_version,omitempty"`
	Requests    uint64  `json:"requests"` // Locate, Get, Create, Activate, Discover Versions and other
	Errors      uint64  `json:"errors"`
}

type statusCaches struct {
	Keys struct {
		Entries int    `json:"entries"`
		Hits    uint64 `json:"hits"`
		Misses  uint64 `json:"misses"`
		Stale   uint64 `json:"stale"`
	} `json:"keys"`
	Meta struct {
		Entries int    `json:"entries"`
		Hits    uint64 `json:"hits"`
		Misses  uint64 `json:"misses"`
	} `json:"meta"`
}

type statusDirty struct {
	Bytes           int64  `json:"bytes"`
	Files           int64  `json:"files"`
	OpenFiles       int    `json:"open_files"`
	Flushes         uint64 `json:"flushes"`
	FlushErrors     uint64 `json:"flush_errors"`
	GCPending       int64  `json:"gc_pending"`
	GCDeleted       uint64 `json:"gc_deleted"`
	GCErrors        uint64 `json:"gc_errors"`
	OrphansPending  int    `json:"orphans_pending"`
	OrphansReleased uint64 `json:"orphans_released"`
}

type statusMetrics struct {
	Addr string `json:"addr,omitempty"` // empty: no metrics endpoint
}

// status builds the status document; it runs on the FUSE request of kmipfs status.
func (m *mounted) status(ctx context.Context) ([]byte, error) {
	cfg := m.cfg
	var d statusDoc
	mp, err := filepath.Abs(m.mountpoint)
	if err != nil {
		mp = m.mountpoint
	}
	d.Mount = statusMount{Mountpoint: mp, PID: os.Getpid(), Version: version, FormatVersion: crypt.Version,
		Started: m.started.UTC().Truncate(time.Second), UptimeSeconds: time.Since(m.started).Truncate(time.Millisecond).Seconds()}

	c := &d.Config
	c.Store.Backend, c.Store.Where = cfg.Store.Backend, storeName(cfg)
	if cfg.Store.Backend == "s3" {
		c.Store.BucketPrefix = cfg.Store.BucketPrefix
		c.Store.Credentials = "environment"
		if cfg.Store.CredentialsFile != "" {
			c.Store.Credentials = "credentials_file"
		}
	}
	c.Meta.Path, c.Meta.EncryptedAtRest = cfg.Meta.Path, cfg.Meta.EncryptionKeyID != ""
	k := cfg.KMS
	c.KMS.Addr, c.KMS.KeyTemplate, c.KMS.CAPath, c.KMS.ClientCert = k.Addr, k.KeyTemplate, k.CAPath, k.ClientCert
	c.KMS.PasswordAuth = k.PasswordFile != ""
	c.KMS.Timeout, c.KMS.CacheTTL = k.Timeout.String(), k.CacheTTL.String()
	c.KMS.NegativeTTL, c.KMS.StaleTTL = k.NegativeTTL.String(), k.StaleTTL.String()
	c.FS.DefaultKeyID, c.FS.AllowOther, c.FS.MaxDirtyMiB = cfg.FS.DefaultKeyID, cfg.FS.AllowOther, cfg.FS.MaxDirtyMiB
	c.FS.DefaultPermissions = cfg.FS.DefaultPermissions == nil || *cfg.FS.DefaultPermissions
	c.Log.Level, c.Log.Format = cfg.Log.Level, cfg.Log.Format

	// A fresh connection, not a pooled one: the question is whether the server answers now.
	pingCtx, cancel := context.WithTimeout(ctx, min(statusPingTimeout, k.Timeout.Duration+time.Second))
	t0 := time.Now()
	err = m.client.Ping(pingCtx)
	cancel()
	d.KMS = statusKMS{Addr: k.Addr, Reachable: err == nil, PingSeconds: time.Since(t0).Truncate(time.Microsecond).Seconds(),
		KMIPVersion: m.client.Version()}
	if err != nil {
		d.KMS.Error = err.Error()
	}
	ks := m.client.Stats()
	d.KMS.Requests = ks.Locate + ks.Get + ks.Create + ks.Activate + ks.Discover + ks.Other
	d.KMS.Errors = ks.Errors

	cs := m.cache.Stats()
	d.Cache.Keys.Entries, d.Cache.Keys.Hits, d.Cache.Keys.Misses, d.Cache.Keys.Stale = cs.Entries, cs.Hits, cs.Misses, cs.Stale
	fst := m.fsys.Stats()
	d.Cache.Meta.Entries, d.Cache.Meta.Hits, d.Cache.Meta.Misses = fst.Meta.Entries, fst.Meta.Hits, fst.Meta.Misses
	d.Dirty = statusDirty{Bytes: fst.DirtyBytes, Files: fst.DirtyFiles, OpenFiles: fst.OpenFiles,
		Flushes: fst.Flushes, FlushErrors: fst.FlushErrors, GCPending: fst.GCPending, GCDeleted: fst.GCDeleted,
		GCErrors: fst.GCErrors, OrphansPending: fst.OrphansPending, OrphansReleased: fst.OrphansReleased}
	d.Metrics.Addr = m.metrics.addr()
	return json.Marshal(d)
}

// cmdStatus is `kmipfs status MOUNTPOINT [--json]`. Exit codes: 0 with the status shown (also
// when the key server is unreachable: that is part of the status); 2 for a bad command line or a
// path that is not the root of a kmipfs mount; 1 when the mount does not answer (its process is
// gone, or it did not reply within statusWait) or the read failed otherwise.
func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("status", flag.ContinueOnError)
	fl.SetOutput(stderr)
	asJSON := fl.Bool("json", false, "print the status as JSON")
	fl.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kmipfs status [--json] MOUNTPOINT\n\n"+
			"Shows what a running kmipfs mount serves: its process and version, its configuration (no secrets),\n"+
			"the object store, whether the KMIP server answers now, the key and metadata caches, and the data\n"+
			"not yet stored. Exit status: 0 shown, 2 not a kmipfs mount point, 1 the mount does not answer.\n\n")
		fl.PrintDefaults()
	}
	// Flags may come after the mount point, as in "kmipfs status /mnt/kmip --json".
	var paths []string
	rest := args
	for {
		if err := fl.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return &exitError{code: exitOK, err: errHelp}
			}
			return &exitError{code: exitUsage, err: errHelp}
		}
		if fl.NArg() == 0 {
			break
		}
		paths = append(paths, fl.Arg(0))
		rest = fl.Args()[1:]
	}
	if len(paths) != 1 {
		fl.Usage()
		return &exitError{code: exitUsage, err: errHelp}
	}
	mnt := paths[0]
	doc, err := readStatus(mnt)
	if err != nil {
		return err
	}
	if *asJSON {
		var out bytes.Buffer
		if err := json.Indent(&out, doc, "", "  "); err != nil {
			return fail(exitFailure, "%s: the mount sent a status that is not JSON: %v", mnt, err)
		}
		out.WriteByte('\n')
		_, err := stdout.Write(out.Bytes())
		return err
	}
	var d statusDoc
	if err := json.Unmarshal(doc, &d); err != nil {
		return fail(exitFailure, "%s: the mount sent a status this kmipfs cannot read: %v", mnt, err)
	}
	printStatus(stdout, &d)
	return nil
}

// readStatus reads the status attribute of mnt, waiting at most statusWait for the mount.
func readStatus(mnt string) ([]byte, error) {
	type result struct {
		doc []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		buf := make([]byte, 64<<10) // XATTR_SIZE_MAX: no size query needed
		n, err := syscall.Getxattr(mnt, statusXattr, buf)
		if err != nil {
			ch <- result{err: err}
			return
		}
		ch <- result{doc: buf[:n]}
	}()
	var r result
	select {
	case r = <-ch:
	case <-time.After(statusWait):
		return nil, fail(exitFailure, "%s: the mount did not answer within %s (is its kmipfs process stuck?)", mnt, statusWait)
	}
	switch {
	case r.err == nil:
		return r.doc, nil
	case errors.Is(r.err, syscall.ENOENT), errors.Is(r.err, syscall.ENOTDIR):
		return nil, fail(exitUsage, "%s: no such directory", mnt)
	case errors.Is(r.err, syscall.ENODATA), errors.Is(r.err, syscall.ENOTSUP), errors.Is(r.err, syscall.EOPNOTSUPP),
		errors.Is(r.err, syscall.EPERM):
		return nil, fail(exitUsage, "%s is not the mount point of a running kmipfs (give the directory it is mounted on)", mnt)
	case errors.Is(r.err, syscall.ENOTCONN):
		return nil, fail(exitFailure, "%s: the kmipfs process of this mount is gone (transport endpoint is not connected); unmount it with fusermount3 -u %s", mnt, mnt)
	case errors.Is(r.err, syscall.EACCES):
		return nil, fail(exitFailure, "%s: permission denied (a mount of another user without allow_other?)", mnt)
	}
	return nil, fail(exitFailure, "%s: reading %s: %v", mnt, statusXattr, r.err)
}

// printStatus writes the human-readable form of d.
func printStatus(w io.Writer, d *statusDoc) {
	yesNo := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	c := d.Config
	fmt.Fprintf(w, "kmipfs mounted at %s\n", d.Mount.Mountpoint)
	fmt.Fprintf(w, "  process:     pid %d, kmipfs %s (on-store format %d), up %s (since %s)\n", d.Mount.PID, d.Mount.Version,
		d.Mount.FormatVersion, time.Duration(d.Mount.UptimeSeconds*float64(time.Second)).Truncate(time.Second),
		d.Mount.Started.Format(time.RFC3339))
	store := c.Store.Backend + " " + c.Store.Where
	if c.Store.Credentials != "" {
		store += " (credentials from " + strings.ReplaceAll(c.Store.Credentials, "_", " ") + ")"
	}
	fmt.Fprintf(w, "  store:       %s\n", store)
	fmt.Fprintf(w, "  metadata:    %s (encrypted at rest: %s)\n", c.Meta.Path, yesNo(c.Meta.EncryptedAtRest))
	if d.KMS.Reachable {
		fmt.Fprintf(w, "  key server:  %s reachable: yes (KMIP %s, answered in %s)\n", d.KMS.Addr, d.KMS.KMIPVersion,
			time.Duration(d.KMS.PingSeconds*float64(time.Second)).Round(time.Microsecond))
	} else {
		fmt.Fprintf(w, "  key server:  %s reachable: no: %s\n", d.KMS.Addr, d.KMS.Error)
	}
	fmt.Fprintf(w, "               %d requests, %d errors; key template %q, timeout %s, cache_ttl %s\n",
		d.KMS.Requests, d.KMS.Errors, c.KMS.KeyTemplate, c.KMS.Timeout, c.KMS.CacheTTL)
	fmt.Fprintf(w, "  key cache:   %d entries, %d hits, %d misses, %d stale\n", d.Cache.Keys.Entries, d.Cache.Keys.Hits,
		d.Cache.Keys.Misses, d.Cache.Keys.Stale)
	fmt.Fprintf(w, "  meta cache:  %d entries, %d hits, %d misses\n", d.Cache.Meta.Entries, d.Cache.Meta.Hits, d.Cache.Meta.Misses)
	fmt.Fprintf(w, "  dirty:       %s not yet stored in %d files; %d files open; %d flushes, %d failed\n",
		sizeText(d.Dirty.Bytes), d.Dirty.Files, d.Dirty.OpenFiles, d.Dirty.Flushes, d.Dirty.FlushErrors)
	fmt.Fprintf(w, "  gc:          %d objects queued, %d deleted, %d failed; %d unlinked files pending, %d released\n",
		d.Dirty.GCPending, d.Dirty.GCDeleted, d.Dirty.GCErrors, d.Dirty.OrphansPending, d.Dirty.OrphansReleased)
	def := c.FS.DefaultKeyID
	if def == "" {
		def = "(none)"
	}
	maxDirty := "default"
	if c.FS.MaxDirtyMiB > 0 {
		maxDirty = fmt.Sprint(c.FS.MaxDirtyMiB)
	}
	fmt.Fprintf(w, "  fs:          default_key_id %s, allow_other %s, default_permissions %s, max_dirty_mib %s\n",
		def, yesNo(c.FS.AllowOther), yesNo(c.FS.DefaultPermissions), maxDirty)
	if d.Metrics.Addr != "" {
		fmt.Fprintf(w, "  metrics:     http://%s/metrics\n", d.Metrics.Addr)
	} else {
		fmt.Fprintf(w, "  metrics:     off\n")
	}
}

// sizeText prints a byte count in the largest binary unit that keeps it at least 1.
func sizeText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
