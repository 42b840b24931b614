package fs

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/kmipfs/kmipfs/crypt"
	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/meta"
)

// resolveKeyID returns the key id for a new file in dir: the user.kmipfs.key-id of the nearest
// directory up the tree that has one, else the configured default. The lookup is by ancestry at
// create time, so moving a directory later changes nothing for the files already in it.
func (f *FS) resolveKeyID(ctx context.Context, dir *meta.Inode) (string, error) {
	for in := dir; in != nil && in.Ino != meta.RootIno; {
		v, err := f.meta.GetXattr(ctx, in.Ino, xattrKeyID)
		if err == nil {
			return string(v), nil
		}
		if !errors.Is(err, meta.ErrNotFound) {
			return "", err
		}
		if in.Parent == 0 {
			break
		}
		if in, err = f.meta.Get(ctx, in.Parent); err != nil {
			return "", err
		}
	}
	if f.cfg.DefaultKeyID != "" {
		return f.cfg.DefaultKeyID, nil
	}
	f.log.Warn("no key id for a new file: set user.kmipfs.key-id on the bucket or a directory above, or fs.default_key_id in the config",
		"bucket", dir.Bucket)
	return "", errnoErr(syscall.ENOKEY, "no key id resolves")
}

// newFileKey gives rec a new file id and data key, wrapped with the KMIP secret named keyName.
func (f *FS) newFileKey(ctx context.Context, rec *meta.Inode, keyID, keyName string) error {
	kek, err := f.keys.Secret(ctx, keyName)
	if err != nil {
		return err
	}
	defer crypt.Zero(kek)
	id, err := crypt.NewFileID()
	if err != nil {
		return err
	}
	dek, err := crypt.NewDataKey()
	if err != nil {
		return err
	}
	defer crypt.Zero(dek)
	wrapped, err := crypt.WrapKey(kek, dek, id, keyName)
	if err != nil {
		return err
	}
	rec.FileID = id
	rec.KeyID = keyID
	rec.KeyName = keyName
	rec.WrappedKey = wrapped
	return nil
}

// fileCipher unwraps the data key of file in with its KMIP secret.
func (f *FS) fileCipher(ctx context.Context, in *meta.Inode) (*crypt.Cipher, error) {
	dek, err := f.unwrap(ctx, in)
	if err != nil {
		return nil, err
	}
	defer crypt.Zero(dek)
	return crypt.NewCipher(dek, crypt.FileID(in.FileID))
}

func (f *FS) unwrap(ctx context.Context, in *meta.Inode) ([]byte, error) {
	kek, err := f.keys.Secret(ctx, in.KeyName)
	if err != nil {
		return nil, err
	}
	defer crypt.Zero(kek)
	dek, err := crypt.UnwrapKey(kek, in.WrappedKey, crypt.FileID(in.FileID), in.KeyName)
	if err != nil {
		return nil, fmt.Errorf("unwrap data key of inode %d under %q: %w", in.Ino, in.KeyName, err)
	}
	return dek, nil
}

// forgetter is implemented by a SecretSource that caches (kms.Cache).
type forgetter interface{ Forget(name string) }

// namedSecret fetches the secret of a key that a person just named in setfattr. A remembered
// "not found" is not trusted: the key may have been created in KMIP a moment ago, after an
// earlier attempt failed, and making the person wait out the cache's negative TTL would look
// like kmipfs not seeing the new key.
func (f *FS) namedSecret(ctx context.Context, keyName string) ([]byte, error) {
	kek, err := f.keys.Secret(ctx, keyName)
	if errors.Is(err, kms.ErrKeyNotFound) {
		if fg, ok := f.keys.(forgetter); ok {
			fg.Forget(keyName)
			kek, err = f.keys.Secret(ctx, keyName)
		}
	}
	return kek, err
}

// rewrap re-wraps the data key of file in under the KMIP secret keyName. The data is untouched:
// only the wrapped key in meta changes.
func (f *FS) rewrap(ctx context.Context, in *meta.Inode, keyID, keyName string) error {
	dek, err := f.unwrap(ctx, in)
	if err != nil {
		return err
	}
	defer crypt.Zero(dek)
	kek, err := f.namedSecret(ctx, keyName)
	if err != nil {
		return err
	}
	defer crypt.Zero(kek)
	wrapped, err := crypt.WrapKey(kek, dek, crypt.FileID(in.FileID), keyName)
	if err != nil {
		return err
	}
	t := now()
	_, err = f.meta.Update(ctx, in.Ino, func(cur *meta.Inode) error {
		cur.KeyID, cur.KeyName, cur.WrappedKey, cur.Ctime = keyID, keyName, wrapped, t
		return nil
	})
	if err != nil {
		return err
	}
	if of := f.lookupOpen(in.Ino); of != nil {
		of.mu.Lock()
		of.keyName = keyName
		of.mu.Unlock()
	}
	return nil
}

// keyRecheck is how often an open file asks the key service whether its key still exists. The
// answer comes from the kms cache, so this costs a KMIP round trip only once per cache TTL.
const keyRecheck = time.Second

// checkKeyLocked fails with kms.ErrKeyNotFound once the file's KMIP key has been revoked or
// destroyed, so that open files stop serving data as new opens do. An unreachable key server is
// not an error here: the data key is already in memory, and files whose key is known keep working
// through an outage.
func (of *openFile) checkKeyLocked(ctx context.Context) error {
	if time.Since(of.keyChecked) < keyRecheck {
		return nil
	}
	kek, err := of.fsys.keys.Secret(ctx, of.keyName)
	if err == nil {
		crypt.Zero(kek)
		of.keyChecked = time.Now()
		return nil
	}
	if errors.Is(err, kms.ErrKeyNotFound) {
		return fmt.Errorf("key %q of open file %s is no longer in KMIP: %w", of.keyName, of.path, err)
	}
	return nil
}
