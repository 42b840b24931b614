package mem

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/kmipfs/kmipfs/objstore"
)

var (
	_ objstore.Store        = (*Store)(nil)
	_ objstore.BucketLister = (*Store)(nil)
)

// Store is an in-memory objstore.Store. The zero value is not usable; call New.
type Store struct {
	faultMu sync.Mutex
	fault   func(op, bucket, key string) error // protected by faultMu

	mu      sync.RWMutex
	buckets map[string]map[string][]byte // protected by mu; objects are never modified, only replaced
}

// New returns an empty Store.
func New() *Store {
	return &Store{buckets: make(map[string]map[string][]byte)}
}

// SetFault installs fn, which is called at the start of every operation with the operation's name ("put", "get",
// "stat", "delete", "list", "createbucket", "deletebucket" or "buckets"), the bucket (empty for "buckets") and the
// key (the prefix for "list", empty for bucket operations). When fn returns a non-nil error the operation fails
// with an error wrapping it (so errors.Is finds it) and changes nothing. fn may be called concurrently and must not
// call the Store. SetFault(nil) removes the fault.
func (s *Store) SetFault(fn func(op, bucket, key string) error) {
	s.faultMu.Lock()
	s.fault = fn
	s.faultMu.Unlock()
}

// check runs the checks every operation starts with: ctx, then the injected fault.
func (s *Store) check(ctx context.Context, op, bucket, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.faultMu.Lock()
	fn := s.fault
	s.faultMu.Unlock()
	if fn != nil {
		return fn(op, bucket, key)
	}
	return nil
}

// CreateBucket implements objstore.Store.
func (s *Store) CreateBucket(ctx context.Context, bucket string) error {
	if err := s.check(ctx, "createbucket", bucket, ""); err != nil {
		return fmt.Errorf("objstore: create bucket %q: %w", bucket, err)
	}
	if err := objstore.ValidBucketName(bucket); err != nil {
		return fmt.Errorf("objstore: create bucket %q: %w", bucket, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.buckets[bucket]; ok {
		return fmt.Errorf("objstore: create bucket %q: %w", bucket, objstore.ErrBucketExists)
	}
	s.buckets[bucket] = make(map[string][]byte)
	return nil
}

// DeleteBucket implements objstore.Store.
func (s *Store) DeleteBucket(ctx context.Context, bucket string) error {
	if err := s.check(ctx, "deletebucket", bucket, ""); err != nil {
		return fmt.Errorf("objstore: delete bucket %q: %w", bucket, err)
	}
	if err := objstore.ValidBucketName(bucket); err != nil {
		return fmt.Errorf("objstore: delete bucket %q: %w", bucket, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	objs, ok := s.buckets[bucket]
	if !ok {
		return fmt.Errorf("objstore: delete bucket %q: %w", bucket, objstore.ErrBucketNotFound)
	}
	if len(objs) > 0 {
		return fmt.Errorf("objstore: delete bucket %q: %w", bucket, objstore.ErrBucketNotEmpty)
	}
	delete(s.buckets, bucket)
	return nil
}

// Buckets implements objstore.BucketLister.
func (s *Store) Buckets(ctx context.Context) ([]string, error) {
	if err := s.check(ctx, "buckets", "", ""); err != nil {
		return nil, fmt.Errorf("objstore: list buckets: %w", err)
	}
	s.mu.RLock()
	names := make([]string, 0, len(s.buckets))
	for name := range s.buckets {
		names = append(names, name)
	}
	s.mu.RUnlock()
	slices.Sort(names)
	return names, nil
}

// validate checks the bucket name and the key of an object operation.
func validate(bucket, key string) error {
	if err := objstore.ValidBucketName(bucket); err != nil {
		return err
	}
	return objstore.ValidKey(key)
}

// Put implements objstore.Store. It copies data, so the caller may reuse it at once.
func (s *Store) Put(ctx context.Context, bucket, key string, data []byte) error {
	if err := s.check(ctx, "put", bucket, key); err != nil {
		return fmt.Errorf("objstore: put %q: %w", bucket+"/"+key, err)
	}
	if err := validate(bucket, key); err != nil {
		return fmt.Errorf("objstore: put %q: %w", bucket+"/"+key, err)
	}
	obj := slices.Clone(data)
	if obj == nil {
		obj = []byte{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	objs, ok := s.buckets[bucket]
	if !ok {
		return fmt.Errorf("objstore: put %q: %w", bucket+"/"+key, objstore.ErrBucketNotFound)
	}
	objs[key] = obj
	return nil
}

// lookup returns the stored bytes of an object; the caller must not modify them.
func (s *Store) lookup(bucket, key string) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	objs, ok := s.buckets[bucket]
	if !ok {
		return nil, objstore.ErrBucketNotFound
	}
	obj, ok := objs[key]
	if !ok {
		return nil, objstore.ErrNotFound
	}
	return obj, nil
}

// Get implements objstore.Store. A missing bucket is ErrBucketNotFound.
func (s *Store) Get(ctx context.Context, bucket, key string, off, length int64) ([]byte, error) {
	if err := s.check(ctx, "get", bucket, key); err != nil {
		return nil, fmt.Errorf("objstore: get %q: %w", bucket+"/"+key, err)
	}
	if err := validate(bucket, key); err != nil {
		return nil, fmt.Errorf("objstore: get %q: %w", bucket+"/"+key, err)
	}
	if off < 0 {
		return nil, fmt.Errorf("objstore: get %q: negative offset %d", bucket+"/"+key, off)
	}
	obj, err := s.lookup(bucket, key)
	if err != nil {
		return nil, fmt.Errorf("objstore: get %q: %w", bucket+"/"+key, err)
	}
	size := int64(len(obj))
	if off >= size {
		return []byte{}, nil
	}
	end := size
	if length >= 0 && length < size-off {
		end = off + length
	}
	// The stored slice is never modified (Put replaces it), so copying outside the lock is safe.
	return slices.Clone(obj[off:end]), nil
}

// Stat implements objstore.Store.
func (s *Store) Stat(ctx context.Context, bucket, key string) (objstore.Info, error) {
	if err := s.check(ctx, "stat", bucket, key); err != nil {
		return objstore.Info{}, fmt.Errorf("objstore: stat %q: %w", bucket+"/"+key, err)
	}
	if err := validate(bucket, key); err != nil {
		return objstore.Info{}, fmt.Errorf("objstore: stat %q: %w", bucket+"/"+key, err)
	}
	obj, err := s.lookup(bucket, key)
	if err != nil {
		return objstore.Info{}, fmt.Errorf("objstore: stat %q: %w", bucket+"/"+key, err)
	}
	return objstore.Info{Key: key, Size: int64(len(obj))}, nil
}

// Delete implements objstore.Store.
func (s *Store) Delete(ctx context.Context, bucket, key string) error {
	if err := s.check(ctx, "delete", bucket, key); err != nil {
		return fmt.Errorf("objstore: delete %q: %w", bucket+"/"+key, err)
	}
	if err := validate(bucket, key); err != nil {
		return fmt.Errorf("objstore: delete %q: %w", bucket+"/"+key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	objs, ok := s.buckets[bucket]
	if !ok {
		return fmt.Errorf("objstore: delete %q: %w", bucket+"/"+key, objstore.ErrBucketNotFound)
	}
	delete(objs, key)
	return nil
}

// List implements objstore.Store. It takes a snapshot of the matching keys and calls fn without holding a lock,
// so fn may call the Store; objects deleted after the snapshot are skipped.
func (s *Store) List(ctx context.Context, bucket, prefix string, fn func(objstore.Info) error) error {
	if err := s.check(ctx, "list", bucket, prefix); err != nil {
		return fmt.Errorf("objstore: list %q: %w", bucket+"/"+prefix, err)
	}
	if err := objstore.ValidBucketName(bucket); err != nil {
		return fmt.Errorf("objstore: list %q: %w", bucket+"/"+prefix, err)
	}
	s.mu.RLock()
	objs, ok := s.buckets[bucket]
	if !ok {
		s.mu.RUnlock()
		return fmt.Errorf("objstore: list %q: %w", bucket+"/"+prefix, objstore.ErrBucketNotFound)
	}
	var keys []string
	for k := range objs {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	s.mu.RUnlock()
	slices.Sort(keys)
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("objstore: list %q: %w", bucket+"/"+prefix, err)
		}
		obj, err := s.lookup(bucket, k)
		if err != nil {
			continue // deleted (or its bucket was) since the snapshot
		}
		if err := fn(objstore.Info{Key: k, Size: int64(len(obj))}); err != nil {
			return err
		}
	}
	return nil
}
