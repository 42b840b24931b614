package repair

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kmipfs/kmipfs/crypt"
	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/meta"
)

// keyIDXattr is the xattr that names the key id of a bucket or directory. (On a regular file the
// key id is a field of the inode, which fs shows under the same name.)
const keyIDXattr = "user.kmipfs.key-id"

// RekeyOptions configures Rekey.
type RekeyOptions struct {
	Meta *meta.DB
	Keys Secrets
	// Template is kms.key_template, which turns key ids into KMIP names.
	Template string
	// From and To are key ids.
	From, To string
	// Path limits the work to the tree at this path below the mount root ("/bucket/dir"); empty
	// is the whole filesystem.
	Path string
	// Progress, if set, is called after each file with the files done (re-keyed or failed) and
	// the files to do.
	Progress func(done, total int)
	// Failed, if set, is called for each file that could not be re-keyed.
	Failed func(path string, err error)
	// SyncEvery is how many re-keyed files may be committed without a meta Sync; Progress is
	// called after each Sync as well. 0 means 100.
	SyncEvery int
}

// RekeyReport is what Rekey did.
type RekeyReport struct {
	// Files is the number of files re-wrapped, Skipped those already on the new key.
	Files, Skipped int
	// Failed is the number of files whose data key did not unwrap under the old key.
	Failed int
	// Dirs is the number of buckets and directories whose key-id xattr was changed.
	Dirs int
}

// ErrRekeyChanged means a file's key changed under Rekey between its read and its commit (a
// mount or a second rekey running at the same time, which the Badger lock should have stopped).
var ErrRekeyChanged = errors.New("repair: the file's key changed during rekey")

// Rekey re-wraps, under the KMIP key of To, the data key of every regular file whose data key is
// wrapped under the KMIP key of From (files below Path only, if set), and sets the key id of
// those files and the user.kmipfs.key-id of the buckets and directories that named From to To.
// File data is never read or written: only wrapped keys change.
//
// Each file is one meta transaction that swaps its key id, key name and wrapped key together, so
// an interrupted Rekey leaves each file wholly on one key, and running it again skips the files
// already on the new key. The secret of To is fetched before anything changes: a key that KMIP
// does not have fails with kms.ErrKeyNotFound and changes nothing. An error stops the run; files
// whose wrapped key does not authenticate are counted in Failed and left as they are.
func Rekey(ctx context.Context, opts RekeyOptions) (*RekeyReport, error) {
	if opts.From == "" || opts.To == "" {
		return nil, fmt.Errorf("repair: rekey: empty key id: %w", meta.ErrInvalid)
	}
	fromName, toName := kms.KeyName(opts.Template, opts.From), kms.KeyName(opts.Template, opts.To)
	if fromName == toName {
		return nil, fmt.Errorf("repair: rekey: %q and %q are the same KMIP key %q: %w", opts.From, opts.To, fromName, meta.ErrInvalid)
	}
	newKEK, err := opts.Keys.Secret(ctx, toName)
	if err != nil {
		return nil, fmt.Errorf("new key %q: %w", opts.To, err)
	}
	defer crypt.Zero(newKEK)
	db := opts.Meta
	start, p, err := Resolve(ctx, db, opts.Path)
	if err != nil {
		return nil, err
	}

	// First the list of work, so that progress has a total; then the changes.
	type job struct {
		path string
		ino  meta.Ino
		dir  bool
	}
	var jobs []job
	files := 0
	seen := make(map[meta.Ino]bool)
	err = walk(ctx, db, start, p, func(p string, in *meta.Inode) error {
		switch {
		case in.IsDir() && in.Ino != meta.RootIno:
			v, err := db.GetXattr(ctx, in.Ino, keyIDXattr)
			if errors.Is(err, meta.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			if string(v) == opts.From {
				jobs = append(jobs, job{p, in.Ino, true})
			}
		case in.IsRegular() && !seen[in.Ino]:
			seen[in.Ino] = true
			if in.KeyName == fromName || in.KeyName == toName {
				jobs = append(jobs, job{p, in.Ino, false})
				files++
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	rep := &RekeyReport{}
	syncEvery := opts.SyncEvery
	if syncEvery <= 0 {
		syncEvery = 100
	}
	done, sinceSync := 0, 0
	var oldKEK []byte
	defer func() { crypt.Zero(oldKEK) }()
	for _, j := range jobs {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if j.dir {
			// Directories first in walk order, so that new files made under a directory after an
			// interrupted run get the new key; setting it again is harmless.
			if err := db.SetXattr(ctx, j.ino, keyIDXattr, []byte(opts.To), 0); err != nil {
				return rep, fmt.Errorf("set %s of %s: %w", keyIDXattr, j.path, err)
			}
			rep.Dirs++
			continue
		}
		in, err := db.Get(ctx, j.ino)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", j.path, err)
		}
		switch in.KeyName {
		case toName:
			rep.Skipped++
		case fromName:
			if oldKEK == nil {
				if oldKEK, err = opts.Keys.Secret(ctx, fromName); err != nil {
					return rep, fmt.Errorf("old key %q: %w", opts.From, err)
				}
			}
			err := rewrap(ctx, db, in, oldKEK, newKEK, opts.To, toName)
			var ae *authError
			switch {
			case errors.As(err, &ae):
				rep.Failed++
				if opts.Failed != nil {
					opts.Failed(j.path, err)
				}
			case err != nil:
				return rep, fmt.Errorf("%s: %w", j.path, err)
			default:
				rep.Files++
				sinceSync++
			}
		default:
			rep.Skipped++ // re-keyed some other way since the walk
		}
		done++
		if sinceSync >= syncEvery {
			if err := db.Sync(); err != nil {
				return rep, err
			}
			sinceSync = 0
		}
		if opts.Progress != nil {
			opts.Progress(done, files)
		}
	}
	// Durable before success is reported: an operator may destroy the old key next.
	if err := db.Sync(); err != nil {
		return rep, err
	}
	return rep, nil
}

// authError is a wrapped data key that does not open under the old key.
type authError struct{ err error }

func (a *authError) Error() string { return a.err.Error() }
func (a *authError) Unwrap() error { return a.err }

// rewrap moves one file from the old KEK to the new one in one transaction, after checking that
// the new wrapping opens to the same data key.
func rewrap(ctx context.Context, db *meta.DB, in *meta.Inode, oldKEK, newKEK []byte, toID, toName string) error {
	id := crypt.FileID(in.FileID)
	dek, err := crypt.UnwrapKey(oldKEK, in.WrappedKey, id, in.KeyName)
	if err != nil {
		return &authError{err}
	}
	defer crypt.Zero(dek)
	wrapped, err := crypt.WrapKey(newKEK, dek, id, toName)
	if err != nil {
		return err
	}
	check, err := crypt.UnwrapKey(newKEK, wrapped, id, toName)
	if err != nil || !bytes.Equal(check, dek) {
		return fmt.Errorf("the new wrapping does not open to the data key (%v); nothing changed", err)
	}
	crypt.Zero(check)
	oldName, oldWrapped := in.KeyName, in.WrappedKey
	t := time.Now().UnixNano()
	_, err = db.Update(ctx, in.Ino, func(cur *meta.Inode) error {
		if cur.KeyName != oldName || !bytes.Equal(cur.WrappedKey, oldWrapped) {
			return ErrRekeyChanged
		}
		cur.KeyID, cur.KeyName, cur.WrappedKey, cur.Ctime = toID, toName, wrapped, t
		return nil
	})
	return err
}
