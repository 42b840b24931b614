package meta

import (
	"context"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// SetXattr flags, with the values of Linux XATTR_CREATE and XATTR_REPLACE.
const (
	XattrCreate  = 1
	XattrReplace = 2
)

// validXattrName checks an xattr name: 1 to MaxXattrNameLen bytes. meta
// gives names no meaning (fs decides which namespaces exist).
func validXattrName(name string) error {
	switch {
	case name == "":
		return ErrInvalid
	case len(name) > MaxXattrNameLen:
		return ErrNameTooLong
	}
	return nil
}

// GetXattr returns the value of the attribute: ErrNotFound if the inode or
// the attribute does not exist.
func (db *DB) GetXattr(ctx context.Context, ino Ino, name string) ([]byte, error) {
	wrap := func(err error) error { return fmt.Errorf("meta: getxattr %q on %d: %w", name, ino, err) }
	if err := validXattrName(name); err != nil {
		return nil, wrap(err)
	}
	if val, present, ok := db.cache.xattr(ino, name); ok {
		if err := db.ready(ctx); err != nil {
			return nil, wrap(err)
		}
		if !present {
			return nil, wrap(ErrNotFound)
		}
		return val, nil
	}
	epoch := db.cache.begin()
	var val []byte
	err := db.view(ctx, func(t *badger.Txn) error {
		item, err := t.Get(xattrKey(ino, name))
		if errors.Is(err, badger.ErrKeyNotFound) {
			if _, err := getInode(t, ino); err != nil {
				return err
			}
			db.cache.fillXattr(epoch, ino, name, nil)
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		val, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, wrap(err)
	}
	if val == nil {
		val = []byte{}
	}
	db.cache.fillXattr(epoch, ino, name, val)
	return val, nil
}

// SetXattr sets the attribute to value (at most MaxXattrSize bytes, else
// ErrInvalid). With XattrCreate it fails with ErrExist if the attribute is
// present, with XattrReplace with ErrNotFound if it is absent. It does not
// touch the inode's Ctime; fs does that with Update if it wants to.
func (db *DB) SetXattr(ctx context.Context, ino Ino, name string, value []byte, flags uint32) error {
	wrap := func(err error) error { return fmt.Errorf("meta: setxattr %q on %d: %w", name, ino, err) }
	if err := validXattrName(name); err != nil {
		return wrap(err)
	}
	if len(value) > MaxXattrSize {
		return wrap(fmt.Errorf("value of %d bytes: %w", len(value), ErrInvalid))
	}
	if flags&^(XattrCreate|XattrReplace) != 0 {
		return wrap(fmt.Errorf("flags %#x: %w", flags, ErrInvalid))
	}
	// Badger keeps the value slice until commit; copy it so the caller may
	// reuse its buffer.
	v := append([]byte{}, value...)
	err := db.update(ctx, func(x *tx) error {
		// Reading the inode makes this conflict with Release and Rmdir.
		if _, err := x.get(ino); err != nil {
			return err
		}
		k := xattrKey(ino, name)
		present, err := exists(x.t, k)
		if err != nil {
			return err
		}
		if present && flags&XattrCreate != 0 {
			return ErrExist
		}
		if !present && flags&XattrReplace != 0 {
			return ErrNotFound
		}
		return x.t.Set(k, v)
	})
	if err != nil {
		return wrap(err)
	}
	return nil
}

// RemoveXattr deletes the attribute: ErrNotFound if it (or the inode) does
// not exist.
func (db *DB) RemoveXattr(ctx context.Context, ino Ino, name string) error {
	wrap := func(err error) error { return fmt.Errorf("meta: removexattr %q on %d: %w", name, ino, err) }
	if err := validXattrName(name); err != nil {
		return wrap(err)
	}
	err := db.update(ctx, func(x *tx) error {
		if _, err := x.get(ino); err != nil {
			return err
		}
		k := xattrKey(ino, name)
		if present, err := exists(x.t, k); err != nil {
			return err
		} else if !present {
			return ErrNotFound
		}
		return x.t.Delete(k)
	})
	if err != nil {
		return wrap(err)
	}
	return nil
}

// ListXattr returns the names of the inode's attributes, sorted bytewise.
func (db *DB) ListXattr(ctx context.Context, ino Ino) ([]string, error) {
	var names []string
	err := db.view(ctx, func(t *badger.Txn) error {
		if _, err := getInode(t, ino); err != nil {
			return err
		}
		prefix := xattrPrefix(ino)
		it := t.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			names = append(names, string(it.Item().Key()[len(prefix):]))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("meta: listxattr %d: %w", ino, err)
	}
	return names, nil
}
