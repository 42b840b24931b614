package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/meta"
	"github.com/kmipfs/kmipfs/objstore"
)

// This file holds what fsck and rekey share with each other and with mount: opening the metadata
// database (with its at-rest key from KMIP), and the set-up of a command that works on an
// unmounted filesystem.

// exitCannotRun is the exit code of fsck and rekey when they could not do their work at all: bad
// command line or config, the filesystem still mounted, KMIP or the store unavailable.
const exitCannotRun = 2

// metaKey fetches the secret that meta.encryption_key_id names (through kms.key_template), the
// key of Badger's at-rest encryption; nil when the option is not set. The secret stays in memory
// for as long as the database is open: Badger needs it for every table it reads or writes.
func metaKey(ctx context.Context, cfg *Config, keys kms.SecretSource) ([]byte, error) {
	if cfg.Meta.EncryptionKeyID == "" {
		return nil, nil
	}
	name := kms.KeyName(cfg.KMS.KeyTemplate, cfg.Meta.EncryptionKeyID)
	key, err := keys.Secret(ctx, name)
	if err != nil {
		return nil, fail(exitKMS, "meta.encryption_key_id %q (KMIP name %q): %v", cfg.Meta.EncryptionKeyID, name, err)
	}
	return key, nil
}

// openMeta opens the metadata database of cfg, encrypted at rest when meta.encryption_key_id is
// set. A database that was created with another key, with one when none is configured, or
// without one when one is, is refused with a message that says which (exitMount).
func openMeta(ctx context.Context, cfg *Config, keys kms.SecretSource, logger *slog.Logger) (*meta.DB, error) {
	// A database that does not exist yet (a first mount) has no lock to wait for.
	if busy, err := waitMetaFree(cfg.Meta.Path); err == nil && busy {
		return nil, fail(exitMount, "meta.path: the metadata database %s is in use by another running kmipfs "+
			"(a filesystem is mounted once at a time)", cfg.Meta.Path)
	}
	key, err := metaKey(ctx, cfg, keys)
	if err != nil {
		return nil, err
	}
	db, err := meta.Open(cfg.Meta.Path, meta.Options{EncryptionKey: key, Logger: logger})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, meta.ErrInvalid) && cfg.Meta.EncryptionKeyID == "":
		return nil, fail(exitMount, "meta.path: the metadata database %s is encrypted: set meta.encryption_key_id to the key id it was created with", cfg.Meta.Path)
	case errors.Is(err, meta.ErrInvalid):
		return nil, fail(exitMount, "meta.encryption_key_id: the metadata database %s was not created with key id %q (it is encrypted with another key, or not encrypted at all; an existing database cannot be converted)", cfg.Meta.Path, cfg.Meta.EncryptionKeyID)
	default:
		return nil, fail(exitMount, "meta.path: %v", err)
	}
}

// metaInUse reports whether a process (a running mount) holds the Badger lock of dir, a flock of
// the directory itself. Badger's own error for that case wraps nothing errors.Is can find, and
// fsck and rekey want to say "unmount first" rather than relay Badger's text.
func metaInUse(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return false, unix.Flock(int(f.Fd()), unix.LOCK_UN)
}

// unmountGrace is how long a mount or an offline command waits for the database lock of a mount
// that is going away: umount(8) returns once the kernel has let go of the mount point, while the
// daemon may still be storing buffered data and closing the database, so "umount /mnt/kmip;
// kmipfs fsck" or "umount /mnt/kmip; mount /mnt/kmip" would otherwise race it. A filesystem that
// stays mounted is refused after this wait.
const unmountGrace = 5 * time.Second

// waitMetaFree waits up to unmountGrace for the database lock of dir to be free and reports
// whether it is still held.
func waitMetaFree(dir string) (busy bool, err error) {
	busy, err = metaInUse(dir)
	for deadline := time.Now().Add(unmountGrace); busy && err == nil && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		busy, err = metaInUse(dir)
	}
	return busy, err
}

// offline is the state of a command that works on an unmounted filesystem: the checked KMIP
// connection with a secret cache in front of it, the metadata database and (for fsck) the store.
type offline struct {
	cfg    *Config
	log    *slog.Logger
	client *kms.Client
	keys   *kms.Cache
	db     *meta.DB
	store  objstore.Store
}

// openOffline loads the config at path and opens what the command needs. Every failure is
// exitCannotRun, with one line that says what to fix.
func openOffline(path string, withStore bool, stderr io.Writer) (*offline, error) {
	cfg, err := decodeConfig(path)
	if err != nil {
		return nil, fail(exitCannotRun, "%v", err)
	}
	// A missing database must not be created (and then found clean): look before Validate, which
	// creates missing directories for a first mount.
	if _, err := os.Stat(filepath.Join(cfg.Meta.Path, "MANIFEST")); err != nil {
		return nil, fail(exitCannotRun, "meta.path: no metadata database in %s (%v)", cfg.Meta.Path, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fail(exitCannotRun, "config %s: %v", path, err)
	}
	busy, err := waitMetaFree(cfg.Meta.Path)
	if err != nil {
		return nil, fail(exitCannotRun, "meta.path: %v", err)
	}
	if busy {
		return nil, fail(exitCannotRun, "the metadata database %s is in use by a running kmipfs: unmount the filesystem first", cfg.Meta.Path)
	}
	// Problems are the output; the log carries only warnings (a stale KMIP cache entry, Badger).
	logger := newLogger(stderr, "warn", cfg.Log.Format)
	o := &offline{cfg: cfg, log: logger}
	if o.client, err = kms.NewClient(cfg.KMS, logger); err != nil {
		return nil, fail(exitCannotRun, "%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.KMS.Timeout.Duration+time.Second)
	err = o.client.Ping(ctx)
	cancel()
	if err != nil {
		o.close()
		return nil, fail(exitCannotRun, "the KMIP server check failed: %v", err)
	}
	o.keys = kms.NewCache(o.client, cfg.KMS.CacheOptions(logger))
	if withStore {
		if o.store, err = offlineStore(cfg, logger); err != nil {
			o.close()
			return nil, fail(exitCannotRun, "%v", err)
		}
	}
	if o.db, err = openMeta(context.Background(), cfg, o.keys, logger); err != nil {
		o.close()
		var ee *exitError
		if errors.As(err, &ee) {
			return nil, fail(exitCannotRun, "%v", ee.err)
		}
		return nil, fail(exitCannotRun, "%v", err)
	}
	return o, nil
}

// offlineStore opens the object store of cfg as a mount does.
func offlineStore(cfg *Config, logger *slog.Logger) (objstore.Store, error) {
	return openStore(cfg, logger) // the mount's own, so fsck sees the same store, local or S3
}

func (o *offline) close() {
	if o.keys != nil {
		o.keys.Close()
	}
	if o.client != nil {
		o.client.Close()
	}
	if o.db != nil {
		if err := o.db.Close(); err != nil {
			o.log.Error("closing metadata", "err", err)
		}
	}
}

// validKeyID applies the rules setfattr applies to user.kmipfs.key-id values.
func validKeyID(option, id string) error {
	if id == "" || len(id) > 200 || strings.ContainsAny(id, "\x00\n\r/") || !utf8.ValidString(id) {
		return fmt.Errorf("%s: expected a key id of 1 to 200 bytes of UTF-8 without '/', NUL or newlines, got %q", option, id)
	}
	return nil
}
