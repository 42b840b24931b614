package s3

import (
	"context"
	"errors"
	"fmt"

	"github.com/kmipfs/kmipfs/objstore"
)

var (
	_ objstore.Store        = (*Limit)(nil)
	_ objstore.BucketLister = (*Limit)(nil)
	_ objstore.Syncer       = (*Limit)(nil)
	_ Creator               = (*Limit)(nil)
)

// errNoAbility is returned by a decorator asked for an optional ability its Store lacks.
var errNoAbility = errors.New("objstore: the wrapped store does not implement this")

// Limit is a decorator that bounds the operations in flight on a Store, so that a burst of flushes or reads
// cannot open hundreds of connections to the server (and be throttled for it). A caller waiting for a slot
// gives up when its ctx is done. List holds a slot only while the wrapped List runs, not while fn does, so fn
// may call the Store even when every other slot is taken.
type Limit struct {
	objstore.Store
	sem chan struct{}
}

// NewLimit returns s with at most n operations in flight (n < 1 means 1).
func NewLimit(s objstore.Store, n int) *Limit {
	return &Limit{Store: s, sem: make(chan struct{}, max(n, 1))}
}

// Unwrap returns the decorated Store.
func (l *Limit) Unwrap() objstore.Store { return l.Store }

func (l *Limit) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("objstore: waiting for one of %d request slots (store.concurrency): %w", cap(l.sem), ctx.Err())
	}
}

func (l *Limit) release() { <-l.sem }

// CreateBucket implements objstore.Store.
func (l *Limit) CreateBucket(ctx context.Context, bucket string) error {
	if err := l.acquire(ctx); err != nil {
		return err
	}
	defer l.release()
	return l.Store.CreateBucket(ctx, bucket)
}

// DeleteBucket implements objstore.Store.
func (l *Limit) DeleteBucket(ctx context.Context, bucket string) error {
	if err := l.acquire(ctx); err != nil {
		return err
	}
	defer l.release()
	return l.Store.DeleteBucket(ctx, bucket)
}

// Put implements objstore.Store.
func (l *Limit) Put(ctx context.Context, bucket, key string, data []byte) error {
	if err := l.acquire(ctx); err != nil {
		return err
	}
	defer l.release()
	return l.Store.Put(ctx, bucket, key, data)
}

// Create implements Creator.
func (l *Limit) Create(ctx context.Context, bucket, key string, data []byte) error {
	c, ok := l.Store.(Creator)
	if !ok {
		return fmt.Errorf("objstore: create: %w", errNoAbility)
	}
	if err := l.acquire(ctx); err != nil {
		return err
	}
	defer l.release()
	return c.Create(ctx, bucket, key, data)
}

// Get implements objstore.Store.
func (l *Limit) Get(ctx context.Context, bucket, key string, off, length int64) ([]byte, error) {
	if err := l.acquire(ctx); err != nil {
		return nil, err
	}
	defer l.release()
	return l.Store.Get(ctx, bucket, key, off, length)
}

// Stat implements objstore.Store.
func (l *Limit) Stat(ctx context.Context, bucket, key string) (objstore.Info, error) {
	if err := l.acquire(ctx); err != nil {
		return objstore.Info{}, err
	}
	defer l.release()
	return l.Store.Stat(ctx, bucket, key)
}

// Delete implements objstore.Store.
func (l *Limit) Delete(ctx context.Context, bucket, key string) error {
	if err := l.acquire(ctx); err != nil {
		return err
	}
	defer l.release()
	return l.Store.Delete(ctx, bucket, key)
}

// List implements objstore.Store. The slot is given back around every call of fn and taken again after it.
func (l *Limit) List(ctx context.Context, bucket, prefix string, fn func(objstore.Info) error) error {
	if err := l.acquire(ctx); err != nil {
		return err
	}
	held := true
	defer func() {
		if held {
			l.release()
		}
	}()
	return l.Store.List(ctx, bucket, prefix, func(info objstore.Info) error {
		l.release()
		held = false
		if err := fn(info); err != nil {
			return err
		}
		if err := l.acquire(ctx); err != nil {
			return err
		}
		held = true
		return nil
	})
}

// Buckets implements objstore.BucketLister if the decorated Store does.
func (l *Limit) Buckets(ctx context.Context) ([]string, error) {
	bl, ok := l.Store.(objstore.BucketLister)
	if !ok {
		return nil, fmt.Errorf("objstore: list buckets: %w", errNoAbility)
	}
	if err := l.acquire(ctx); err != nil {
		return nil, err
	}
	defer l.release()
	return bl.Buckets(ctx)
}

// Sync implements objstore.Syncer: the decorated Store's Sync, or nothing for a Store whose Puts are durable.
func (l *Limit) Sync(ctx context.Context) error {
	if s, ok := l.Store.(objstore.Syncer); ok {
		return s.Sync(ctx)
	}
	return ctx.Err()
}
