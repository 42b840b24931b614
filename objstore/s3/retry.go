package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/kmipfs/kmipfs/objstore"
)

var (
	_ objstore.Store        = (*Retry)(nil)
	_ objstore.BucketLister = (*Retry)(nil)
	_ objstore.Syncer       = (*Retry)(nil)
	_ Creator               = (*Retry)(nil)
)

// Defaults of RetryOptions.
const (
	DefaultRetryBase = 100 * time.Millisecond
	DefaultRetryMax  = 5 * time.Second
)

// RetryOptions configures Retry.
type RetryOptions struct {
	// Retries is how many times a call is repeated after a transient failure; 0 means DefaultRetries, -1 none.
	Retries int
	// Base is the first backoff (DefaultRetryBase if 0); each retry doubles it, up to Max (DefaultRetryMax if
	// 0). The actual wait is a random duration up to that ("full jitter"), so that many clients that failed
	// together do not come back together.
	Base, Max time.Duration
	// Transient says which errors are worth a retry; nil means IsTransient.
	Transient func(error) bool
	// Logger gets one Info line per retry (operation, object, attempt, error). Nil discards.
	Logger *slog.Logger
}

// Retry is a decorator that repeats calls that failed transiently, with exponential backoff, until they succeed,
// the retries are used up, or the caller's ctx is done. Every Store method is safe to repeat, because Put
// replaces and Delete is idempotent; where a repeat can see the effect of an attempt whose answer was lost, Retry
// says what that attempt did: a CreateBucket retried into "exists" or a DeleteBucket retried into "not found"
// succeeded, a Create retried into "exists" succeeded if the object holds exactly its data. A List that fails
// after fn saw some objects resumes after the last one, so fn sees each object once.
type Retry struct {
	objstore.Store
	opts RetryOptions
	log  *slog.Logger
}

// NewRetry returns s with retries.
func NewRetry(s objstore.Store, opts RetryOptions) *Retry {
	if opts.Retries == 0 {
		opts.Retries = DefaultRetries
	}
	if opts.Retries < 0 {
		opts.Retries = 0
	}
	if opts.Base <= 0 {
		opts.Base = DefaultRetryBase
	}
	if opts.Max <= 0 {
		opts.Max = DefaultRetryMax
	}
	if opts.Transient == nil {
		opts.Transient = IsTransient
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Retry{Store: s, opts: opts, log: log}
}

// Unwrap returns the decorated Store.
func (r *Retry) Unwrap() objstore.Store { return r.Store }

// do runs fn until it succeeds or fails for good. fn gets the attempt number (0 first) and returns its error.
func (r *Retry) do(ctx context.Context, op, name string, fn func(attempt int) error) error {
	for attempt := 0; ; attempt++ {
		err := fn(attempt)
		if err == nil || attempt >= r.opts.Retries || !r.opts.Transient(err) || ctx.Err() != nil {
			if err != nil && attempt > 0 && r.opts.Transient(err) {
				return fmt.Errorf("%w (gave up after %d attempts)", err, attempt+1)
			}
			return err
		}
		wait := r.opts.Base << min(attempt, 30)
		if wait > r.opts.Max || wait <= 0 {
			wait = r.opts.Max
		}
		wait = rand.N(wait) + time.Millisecond
		r.log.Info("objstore: retrying", "op", op, "object", name, "attempt", attempt+2, "of", r.opts.Retries+1,
			"in", wait.Round(time.Millisecond), "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (while waiting to retry it: %w)", err, ctx.Err())
		}
	}
}

// CreateBucket implements objstore.Store.
func (r *Retry) CreateBucket(ctx context.Context, bucket string) error {
	return r.do(ctx, "create bucket", bucket, func(attempt int) error {
		err := r.Store.CreateBucket(ctx, bucket)
		if attempt > 0 && errors.Is(err, objstore.ErrBucketExists) {
			return nil // the attempt whose answer was lost created it
		}
		return err
	})
}

// DeleteBucket implements objstore.Store.
func (r *Retry) DeleteBucket(ctx context.Context, bucket string) error {
	return r.do(ctx, "delete bucket", bucket, func(attempt int) error {
		err := r.Store.DeleteBucket(ctx, bucket)
		if attempt > 0 && errors.Is(err, objstore.ErrBucketNotFound) {
			return nil // the attempt whose answer was lost deleted it
		}
		return err
	})
}

// Put implements objstore.Store.
func (r *Retry) Put(ctx context.Context, bucket, key string, data []byte) error {
	return r.do(ctx, "put", bucket+"/"+key, func(int) error { return r.Store.Put(ctx, bucket, key, data) })
}

// Create implements Creator.
func (r *Retry) Create(ctx context.Context, bucket, key string, data []byte) error {
	c, ok := r.Store.(Creator)
	if !ok {
		return fmt.Errorf("objstore: create: %w", errNoAbility)
	}
	return r.do(ctx, "create", bucket+"/"+key, func(attempt int) error {
		err := c.Create(ctx, bucket, key, data)
		if attempt > 0 && errors.Is(err, ErrObjectExists) {
			// Ours, if an earlier attempt stored it and only the answer was lost.
			if got, gerr := r.Store.Get(ctx, bucket, key, 0, -1); gerr == nil && bytes.Equal(got, data) {
				return nil
			}
		}
		return err
	})
}

// Get implements objstore.Store.
func (r *Retry) Get(ctx context.Context, bucket, key string, off, length int64) ([]byte, error) {
	var data []byte
	err := r.do(ctx, "get", bucket+"/"+key, func(int) error {
		var err error
		data, err = r.Store.Get(ctx, bucket, key, off, length)
		return err
	})
	return data, err
}

// Stat implements objstore.Store.
func (r *Retry) Stat(ctx context.Context, bucket, key string) (objstore.Info, error) {
	var info objstore.Info
	err := r.do(ctx, "stat", bucket+"/"+key, func(int) error {
		var err error
		info, err = r.Store.Stat(ctx, bucket, key)
		return err
	})
	return info, err
}

// Delete implements objstore.Store.
func (r *Retry) Delete(ctx context.Context, bucket, key string) error {
	return r.do(ctx, "delete", bucket+"/"+key, func(int) error { return r.Store.Delete(ctx, bucket, key) })
}

// fnError carries an error of List's fn through the retry loop, which must return it unwrapped and not retry.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

// List implements objstore.Store.
func (r *Retry) List(ctx context.Context, bucket, prefix string, fn func(objstore.Info) error) error {
	var last string
	seen := false
	err := r.do(ctx, "list", bucket+"/"+prefix, func(int) error {
		return r.Store.List(ctx, bucket, prefix, func(info objstore.Info) error {
			if seen && info.Key <= last {
				return nil // delivered before the failure
			}
			if err := fn(info); err != nil {
				return &fnError{err}
			}
			last, seen = info.Key, true
			return nil
		})
	})
	if fe, ok := errors.AsType[*fnError](err); ok {
		return fe.err
	}
	return err
}

// Buckets implements objstore.BucketLister if the decorated Store does.
func (r *Retry) Buckets(ctx context.Context) ([]string, error) {
	bl, ok := r.Store.(objstore.BucketLister)
	if !ok {
		return nil, fmt.Errorf("objstore: list buckets: %w", errNoAbility)
	}
	var names []string
	err := r.do(ctx, "list buckets", "", func(int) error {
		var err error
		names, err = bl.Buckets(ctx)
		return err
	})
	return names, err
}

// Sync implements objstore.Syncer: the decorated Store's Sync, or nothing for a Store whose Puts are durable.
func (r *Retry) Sync(ctx context.Context) error {
	if s, ok := r.Store.(objstore.Syncer); ok {
		return r.do(ctx, "sync", "", func(int) error { return s.Sync(ctx) })
	}
	return ctx.Err()
}
