package objstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors returned (wrapped) by every Store. Check them with errors.Is.
var (
	// ErrNotFound means the object does not exist (in a bucket that does).
	ErrNotFound = errors.New("objstore: object not found")
	// ErrBucketNotFound means the bucket does not exist.
	ErrBucketNotFound = errors.New("objstore: bucket not found")
	// ErrBucketExists is returned by CreateBucket for a bucket that already exists.
	ErrBucketExists = errors.New("objstore: bucket already exists")
	// ErrBucketNotEmpty is returned by DeleteBucket for a bucket that still holds objects.
	ErrBucketNotEmpty = errors.New("objstore: bucket not empty")
	// ErrInvalidBucketName means the name breaks the rules of ValidBucketName.
	ErrInvalidBucketName = errors.New("objstore: invalid bucket name")
	// ErrInvalidKey means the key breaks the rules of ValidKey, or the backend cannot store it (see the package
	// documentation on keys that are path prefixes of each other).
	ErrInvalidKey = errors.New("objstore: invalid object key")
	// ErrNoSpace means the backend ran out of space or quota; the local backend returns it for ENOSPC and EDQUOT,
	// wrapped together with the OS error so that the message keeps the OS's text.
	ErrNoSpace = errors.New("objstore: no space left")
)

// Info describes one object.
type Info struct {
	// Key is the object's key within its bucket.
	Key string
	// Size is the object's length in bytes.
	Size int64
}

// Store is a flat object store of buckets holding immutable objects. All methods are safe for concurrent use.
//
// Every method refuses an invalid bucket name with ErrInvalidBucketName and an invalid key with ErrInvalidKey, and
// every method on objects returns ErrBucketNotFound when the bucket does not exist. A method called with a ctx that
// is already done fails with an error wrapping ctx.Err() and changes nothing; a Put whose ctx is cancelled while it
// runs either stores the whole object or nothing.
type Store interface {
	// CreateBucket creates an empty bucket. ErrBucketExists if it exists, ErrInvalidBucketName if the name is
	// refused.
	CreateBucket(ctx context.Context, bucket string) error
	// DeleteBucket deletes an empty bucket. ErrBucketNotFound if it does not exist, ErrBucketNotEmpty if it still
	// holds an object.
	DeleteBucket(ctx context.Context, bucket string) error
	// Put stores data as the object key, atomically (a reader sees the old object, none, or all of the new one,
	// never a part). When Put returns the object survives a crash of the calling process; it survives a power
	// loss once Put returns on a Store that does not implement Syncer, or once a later Syncer.Sync returns. It
	// replaces an existing object. It does not retain data. ErrBucketNotFound if the bucket does not exist.
	Put(ctx context.Context, bucket, key string, data []byte) error
	// Get returns length bytes of the object starting at off; length < 0 means to the end. If the object ends
	// before off+length, Get returns the bytes that exist (possibly none) and no error: callers detect truncation
	// by length. A negative off is an error. ErrNotFound if there is no such object, ErrBucketNotFound if the
	// bucket does not exist. The returned slice belongs to the caller.
	Get(ctx context.Context, bucket, key string, off, length int64) ([]byte, error)
	// Stat returns the object's size. ErrNotFound if there is no such object, ErrBucketNotFound if the bucket does
	// not exist.
	Stat(ctx context.Context, bucket, key string) (Info, error)
	// Delete removes the object. Deleting a missing object is not an error (idempotent), so a garbage collector
	// may retry it freely; a missing bucket is ErrBucketNotFound.
	Delete(ctx context.Context, bucket, key string) error
	// List calls fn for each object whose key starts with prefix, in lexical (byte-wise) key order; an error from
	// fn stops the walk and is returned unwrapped. The prefix need not be a valid key; a prefix that no valid key
	// can start with lists nothing. Objects put or deleted during the walk may or may not be seen. fn may call
	// other methods of the Store.
	List(ctx context.Context, bucket, prefix string, fn func(Info) error) error
}

// Syncer is an optional ability of a Store (found by type assertion) whose Put is not durable against a power
// loss by itself. A filesystem calls Sync when an application asks for durability (fsync), instead of paying for
// it on every Put: that is the difference between an untar that takes seconds and one that takes minutes.
type Syncer interface {
	// Sync makes every object whose Put returned before the call durable.
	Sync(ctx context.Context) error
}

// BucketLister is an optional ability of a Store (found by type assertion): the names of all buckets, sorted.
// It is separate from Store because an S3 account may hold buckets that do not belong to kmipfs, and because a
// mount only ever needs it to list the mount root.
type BucketLister interface {
	// Buckets returns the names of all buckets in lexical order.
	Buckets(ctx context.Context) ([]string, error)
}

// MaxKeyLen is the longest key, in bytes, that ValidKey accepts; it is S3's limit.
const MaxKeyLen = 1024

// ValidBucketName applies S3's rules, except that names of 1 and 2 characters are allowed (a
// backend whose service needs 3, such as S3, checks the final name itself): 1-63 chars, lowercase letters, digits, '.', '-', starts and ends with a
// letter or digit, no "..", not an IPv4 address, no "xn--" prefix or "-s3alias" suffix. It returns an error
// wrapping ErrInvalidBucketName that says which rule failed.
//
// kmipfs enforces S3's rules on every backend so that mkdir at the mount root accepts the same names whatever the
// store is, and so that the local backend's directory names can never be "." or ".." or contain a '/'.
func ValidBucketName(name string) error {
	fail := func(rule string) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidBucketName, clip(name), rule)
	}
	if len(name) < 1 || len(name) > 63 {
		return fail("must be 1 to 63 characters long")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(isLower(c) || isDigit(c) || c == '.' || c == '-') {
			return fail("may contain only lowercase letters, digits, '.' and '-'")
		}
	}
	if first, last := name[0], name[len(name)-1]; !(isLower(first) || isDigit(first)) ||
		!(isLower(last) || isDigit(last)) {
		return fail("must start and end with a letter or digit")
	}
	if strings.Contains(name, "..") {
		return fail(`must not contain ".."`)
	}
	if looksLikeIPv4(name) {
		return fail("must not be formatted as an IPv4 address")
	}
	if strings.HasPrefix(name, "xn--") {
		return fail(`must not start with "xn--"`)
	}
	if strings.HasSuffix(name, "-s3alias") {
		return fail(`must not end with "-s3alias"`)
	}
	return nil
}

// ValidKey reports whether key is an acceptable object key: non-empty, at most MaxKeyLen bytes, only
// [A-Za-z0-9._-/], no leading '/', and no empty, "." or ".." path segment. It returns an error wrapping
// ErrInvalidKey that says which rule failed.
//
// The alphabet is deliberately narrow: kmipfs only ever stores hex ids, and a narrow alphabet means a key is
// the same string on every backend, needs no escaping in a path or a URL, and cannot climb out of a directory.
func ValidKey(key string) error {
	fail := func(rule string) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidKey, clip(key), rule)
	}
	if key == "" {
		return fail("must not be empty")
	}
	if len(key) > MaxKeyLen {
		return fail(fmt.Sprintf("is %d bytes long, longer than %d", len(key), MaxKeyLen))
	}
	for i := 0; i < len(key); i++ {
		if !isKeyChar(key[i]) {
			return fail(fmt.Sprintf("byte 0x%02x at offset %d is not one of [A-Za-z0-9._-/]", key[i], i))
		}
	}
	if key[0] == '/' {
		return fail("must not start with '/'")
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return fail("must not contain an empty path segment")
		case ".", "..":
			return fail(fmt.Sprintf("must not contain a %q path segment", seg))
		}
	}
	return nil
}

func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isKeyChar(c byte) bool {
	return isLower(c) || isDigit(c) || ('A' <= c && c <= 'Z') || c == '.' || c == '_' || c == '-' || c == '/'
}

// looksLikeIPv4 reports whether name is four dot-separated decimal numbers. S3 refuses anything "formatted as an
// IP address", so this is stricter than a parser of valid addresses: "999.1.1.1" and "01.2.3.4" count too.
func looksLikeIPv4(name string) bool {
	parts := strings.Split(name, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" {
			return false
		}
		for i := 0; i < len(p); i++ {
			if !isDigit(p[i]) {
				return false
			}
		}
	}
	return true
}

// clip shortens a name for an error message so that a hostile 1 MiB key does not become a 1 MiB log line.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
