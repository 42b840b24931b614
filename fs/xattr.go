package fs

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/meta"
)

// The kmipfs extended attributes. key-id is settable on buckets, directories and files; key-name
// and cipher are informational and read-only; status (status.go) is read-only, on the root only.
const (
	xattrKeyID   = "user.kmipfs.key-id"
	xattrKeyName = "user.kmipfs.key-name"
	xattrCipher  = "user.kmipfs.cipher"

	// cipherName describes the block format of package crypt.
	cipherName = "AES-256-GCM-4096"
	// maxKeyIDLen bounds a key id; KMIP names are short and a template may add a prefix.
	maxKeyIDLen = 200
	// maxXattrSize is the kernel's limit for one xattr value (XATTR_SIZE_MAX).
	maxXattrSize = 65536
	// maxXattrNameLen is the kernel's limit for an xattr name (XATTR_NAME_MAX).
	maxXattrNameLen = 255
)

// The xattr namespaces kmipfs stores. The kernel decides who may use which (trusted.* and
// security.* need CAP_SYS_ADMIN, user.* needs write permission and a regular file or
// directory); kmipfs refuses names outside them with EOPNOTSUPP, as ext4 does. POSIX ACLs
// (system.posix_acl_access, system.posix_acl_default) are not supported: reading them finds none
// (so tools fall back to the mode bits), setting them is EOPNOTSUPP.
var xattrNamespaces = []string{"user.", "trusted.", "security."}

const (
	aclAccess  = "system.posix_acl_access"
	aclDefault = "system.posix_acl_default"
	// kmipfsPrefix names the control attributes, which listxattr does not list (see Listxattr).
	kmipfsPrefix = "user.kmipfs."
	// maxXattrList is the kernel's limit for the whole listxattr reply (XATTR_LIST_MAX).
	maxXattrList = 65536
)

// checkXattrName returns 0 for a name kmipfs stores, else the errno to refuse it with.
func checkXattrName(attr string) syscall.Errno {
	for _, ns := range xattrNamespaces {
		if strings.HasPrefix(attr, ns) {
			if len(attr) == len(ns) {
				return syscall.EINVAL
			}
			if len(attr) > maxXattrNameLen {
				return syscall.ERANGE
			}
			return 0
		}
	}
	return syscall.EOPNOTSUPP
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	ctx = detach(ctx)
	if attr == aclAccess || attr == aclDefault {
		return 0, syscall.ENODATA
	}
	if attr == xattrStatus {
		if !n.isRoot() {
			return 0, syscall.ENODATA
		}
		return n.fsys.getStatus(ctx, dest)
	}
	if errno := checkXattrName(attr); errno != 0 {
		return 0, errno
	}
	if !strings.HasPrefix(attr, kmipfsPrefix) {
		// The common case, and a frequent one: the kernel asks for security.capability before
		// every write that could have to drop it.
		val, err := n.fsys.meta.GetXattr(ctx, n.ino, attr)
		if err != nil {
			return 0, n.fsys.xattrErrno(err, "getxattr", n.path())
		}
		return copyXattr(dest, val)
	}
	in, err := n.fsys.meta.Get(ctx, n.ino)
	if err != nil {
		return 0, n.fsys.toErrno(err, "getxattr", "path", n.path())
	}
	var val []byte
	switch {
	case attr == xattrKeyID && in.IsRegular():
		val = []byte(in.KeyID)
	case attr == xattrKeyName && in.IsRegular():
		val = []byte(in.KeyName)
	case attr == xattrCipher && in.IsRegular():
		val = []byte(cipherName)
	case attr == xattrKeyName && in.IsDir():
		id, err := n.fsys.meta.GetXattr(ctx, n.ino, xattrKeyID)
		if err != nil {
			return 0, n.fsys.xattrErrno(err, "getxattr", n.path())
		}
		val = []byte(kms.KeyName(n.fsys.keyTemplate, string(id)))
	default:
		if val, err = n.fsys.meta.GetXattr(ctx, n.ino, attr); err != nil {
			return 0, n.fsys.xattrErrno(err, "getxattr", n.path())
		}
	}
	return copyXattr(dest, val)
}

// copyXattr implements the size protocol of getxattr(2): an empty buffer asks for the size.
func copyXattr(dest, val []byte) (uint32, syscall.Errno) {
	if len(dest) == 0 {
		return uint32(len(val)), 0
	}
	if len(dest) < len(val) {
		return uint32(len(val)), syscall.ERANGE
	}
	return uint32(copy(dest, val)), 0
}

func (f *FS) xattrErrno(err error, op, path string) syscall.Errno {
	if errors.Is(err, meta.ErrNotFound) {
		return syscall.ENODATA
	}
	if errors.Is(err, meta.ErrExist) {
		return syscall.EEXIST
	}
	return f.toErrno(err, op, "path", path)
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	ctx = detach(ctx)
	if n.isRoot() {
		return syscall.EPERM
	}
	if len(data) > maxXattrSize {
		return syscall.E2BIG
	}
	if errno := checkXattrName(attr); errno != 0 {
		return errno
	}
	switch attr {
	case xattrKeyName, xattrCipher, xattrStatus:
		return syscall.EPERM
	case xattrKeyID:
		return n.setKeyID(ctx, string(data), flags)
	}
	if errno := n.checkXattrListRoom(ctx, attr); errno != 0 {
		return errno
	}
	if err := n.fsys.meta.SetXattr(ctx, n.ino, attr, data, flags); err != nil {
		return n.fsys.xattrErrno(err, "setxattr", n.path())
	}
	n.touchCtime(ctx)
	return 0
}

// setKeyID sets the key id of a directory (for files created below it) or re-keys a file. The
// KMIP object must exist: a key id that does not resolve fails with ENOKEY and changes nothing.
func (n *node) setKeyID(ctx context.Context, keyID string, flags uint32) syscall.Errno {
	if keyID == "" || len(keyID) > maxKeyIDLen || !utf8.ValidString(keyID) || bytes.ContainsAny([]byte(keyID), "\x00\n\r/") {
		n.fsys.log.Warn("key id refused: expected 1 to 200 bytes of UTF-8 without '/', NUL or newlines", "path", n.path(), "key_id", keyID)
		return syscall.EINVAL
	}
	in, err := n.fsys.meta.Get(ctx, n.ino)
	if err != nil {
		return n.fsys.toErrno(err, "setxattr", "path", n.path())
	}
	if uid, _ := caller(ctx); uid != 0 && uid != in.Uid {
		return syscall.EPERM
	}
	if !in.IsRegular() && !in.IsDir() {
		return syscall.EPERM
	}
	var current string
	if in.IsRegular() {
		current = in.KeyID
	} else if v, err := n.fsys.meta.GetXattr(ctx, n.ino, xattrKeyID); err == nil {
		current = string(v)
	} else if !errors.Is(err, meta.ErrNotFound) {
		return n.fsys.toErrno(err, "setxattr", "path", n.path())
	}
	if flags&meta.XattrCreate != 0 && current != "" {
		return syscall.EEXIST
	}
	if flags&meta.XattrReplace != 0 && current == "" {
		return syscall.ENODATA
	}
	keyName := kms.KeyName(n.fsys.keyTemplate, keyID)
	attrs := []any{"bucket", in.Bucket, "path", n.path(), "key_id", keyID, "key_name", keyName}
	if in.IsRegular() {
		if keyName == in.KeyName {
			if keyID != in.KeyID {
				_, err = n.fsys.meta.Update(ctx, n.ino, func(cur *meta.Inode) error { cur.KeyID = keyID; return nil })
			}
			return n.fsys.toErrno(err, "setxattr", attrs...)
		}
		if err := n.fsys.rewrap(ctx, in, keyID, keyName); err != nil {
			return n.fsys.toErrno(err, "rekey", attrs...)
		}
		n.fsys.log.Info("file re-keyed", attrs...)
		return 0
	}
	// A directory: check that the key exists before recording it.
	kek, err := n.fsys.namedSecret(ctx, keyName)
	if err != nil {
		return n.fsys.toErrno(err, "setxattr", attrs...)
	}
	clear(kek)
	if err := n.fsys.meta.SetXattr(ctx, n.ino, xattrKeyID, []byte(keyID), 0); err != nil {
		return n.fsys.xattrErrno(err, "setxattr", n.path())
	}
	n.touchCtime(ctx)
	return 0
}

func (n *node) touchCtime(ctx context.Context) {
	t := now()
	_, _ = n.fsys.meta.Update(ctx, n.ino, func(in *meta.Inode) error { in.Ctime = t; return nil })
}

// checkXattrListRoom refuses (ENOSPC) a new attribute that would make the listxattr reply
// longer than the kernel can pass on, so that every attribute set stays listable and copyable.
func (n *node) checkXattrListRoom(ctx context.Context, attr string) syscall.Errno {
	names, err := n.fsys.meta.ListXattr(ctx, n.ino)
	if err != nil {
		return n.fsys.toErrno(err, "setxattr", "path", n.path())
	}
	total := len(attr) + 1
	for _, s := range names {
		if s == attr {
			return 0
		}
		total += len(s) + 1
	}
	if total > maxXattrList {
		return syscall.ENOSPC
	}
	return 0
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	ctx = detach(ctx)
	if n.isRoot() {
		return syscall.EPERM
	}
	if attr == aclAccess || attr == aclDefault {
		return syscall.ENODATA
	}
	if errno := checkXattrName(attr); errno != 0 {
		return errno
	}
	in, err := n.fsys.meta.Get(ctx, n.ino)
	if err != nil {
		return n.fsys.toErrno(err, "removexattr", "path", n.path())
	}
	switch {
	case attr == xattrKeyName || attr == xattrCipher || attr == xattrStatus:
		return syscall.EPERM
	case attr == xattrKeyID && in.IsRegular():
		// A file always has a key; there is nothing to fall back to.
		return syscall.EPERM
	case attr == xattrKeyID:
		if uid, _ := caller(ctx); uid != 0 && uid != in.Uid {
			return syscall.EPERM
		}
	}
	if err := n.fsys.meta.RemoveXattr(ctx, n.ino, attr); err != nil {
		return n.fsys.xattrErrno(err, "removexattr", n.path())
	}
	n.touchCtime(ctx)
	return 0
}

// Listxattr lists the stored attributes except the kmipfs control attributes (user.kmipfs.*).
// They are still read and set by name (getfattr -n, setfattr -n), but a listing that included
// them would make copying tools (cp -a, rsync -X, tar --xattrs) copy the read-only ones, which
// fails, or remove a bucket's key id to match a source that has none. CephFS hides its
// ceph.* virtual attributes from listxattr for the same reason.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	ctx = detach(ctx)
	names, err := n.fsys.meta.ListXattr(ctx, n.ino)
	if err != nil {
		return 0, n.fsys.toErrno(err, "listxattr", "path", n.path())
	}
	var buf bytes.Buffer
	for _, s := range names {
		if strings.HasPrefix(s, kmipfsPrefix) {
			continue
		}
		buf.WriteString(s)
		buf.WriteByte(0)
	}
	if buf.Len() > maxXattrList {
		return 0, syscall.E2BIG
	}
	return copyXattr(dest, buf.Bytes())
}
