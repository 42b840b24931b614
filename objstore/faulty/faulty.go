package faulty

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kmipfs/kmipfs/objstore"
)

var (
	_ objstore.Store        = (*Store)(nil)
	_ objstore.Syncer       = (*Store)(nil)
	_ objstore.BucketLister = (*Store)(nil)
)

// ErrInjected is the default error of a failed request.
var ErrInjected = errors.New("faulty: injected store failure")

// ErrNoSpace is an error like the local backend's on a full disk: it wraps objstore.ErrNoSpace and ENOSPC.
var ErrNoSpace = fmt.Errorf("faulty: injected: %w (%w)", objstore.ErrNoSpace, syscall.ENOSPC)

// errNoAbility is returned by Buckets when the decorated Store cannot list buckets.
var errNoAbility = errors.New("faulty: the decorated store does not list buckets")

// Op is a set of Store operations, for Rule.Ops.
type Op uint16

// The operations a Rule can affect.
const (
	OpPut Op = 1 << iota
	OpGet
	OpStat
	OpDelete
	OpList
	OpCreateBucket
	OpDeleteBucket
	OpBuckets
	OpSync

	// OpAll is every operation.
	OpAll = OpPut | OpGet | OpStat | OpDelete | OpList | OpCreateBucket | OpDeleteBucket | OpBuckets | OpSync
	// OpWrites is every operation that changes the store, and Sync.
	OpWrites = OpPut | OpDelete | OpCreateBucket | OpDeleteBucket | OpSync
)

func (o Op) String() string {
	names := []string{"put", "get", "stat", "delete", "list", "createbucket", "deletebucket", "buckets", "sync"}
	for i, n := range names {
		if o == 1<<i {
			return n
		}
	}
	return fmt.Sprintf("ops(%#x)", uint16(o))
}

// Rule says which requests fail and how. The zero Rule injects nothing.
type Rule struct {
	// Ops are the operations the rule affects; 0 means OpAll.
	Ops Op
	// FailRate is the fraction of affected requests that fail, from 0 (none) to 1 (all).
	FailRate float64
	// Err is what a failed request's error wraps; nil means ErrInjected.
	Err error
	// Latency is added before every affected request, failed or not.
	Latency time.Duration
	// AfterOp makes a failed request that changes the store carry out its change before it reports the error.
	AfterOp bool
}

// Counts are the requests a Store has seen since New.
type Counts struct {
	// Calls counts every request.
	Calls uint64
	// Failed counts the requests that failed because of a Rule.
	Failed uint64
}

// Store decorates an objstore.Store with the current Rule. All methods are safe for concurrent use.
type Store struct {
	inner objstore.Store

	mu   sync.Mutex
	rule Rule       // protected by mu
	rng  *rand.Rand // protected by mu

	calls, failed atomic.Uint64
}

// New returns a Store that passes every request to inner until Set installs a Rule. seed makes the choice of
// failing requests repeatable.
func New(inner objstore.Store, seed uint64) *Store {
	return &Store{inner: inner, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Unwrap returns the decorated Store.
func (s *Store) Unwrap() objstore.Store { return s.inner }

// Set installs r, replacing the previous Rule; requests already waiting keep the Rule they started with.
func (s *Store) Set(r Rule) {
	s.mu.Lock()
	s.rule = r
	s.mu.Unlock()
}

// Clear removes the Rule: the Store behaves like the decorated one again.
func (s *Store) Clear() { s.Set(Rule{}) }

// Counts returns the request counters.
func (s *Store) Counts() Counts { return Counts{Calls: s.calls.Load(), Failed: s.failed.Load()} }

// decide returns the latency to add and whether the request fails, with the error to wrap.
func (s *Store) decide(op Op) (time.Duration, bool, error) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rule
	ops := r.Ops
	if ops == 0 {
		ops = OpAll
	}
	if ops&op == 0 {
		return 0, false, nil
	}
	var err error
	if r.FailRate > 0 && (r.FailRate >= 1 || s.rng.Float64() < r.FailRate) {
		err = r.Err
		if err == nil {
			err = ErrInjected
		}
		s.failed.Add(1)
	}
	return r.Latency, r.AfterOp, err
}

// before runs the Rule for a request that is about to be passed on. It returns whether a failed request is to be
// carried out anyway, and the error the request reports instead of the decorated Store's (nil to pass the request
// on normally).
func (s *Store) before(ctx context.Context, op Op, bucket, key string) (carryOut bool, injected error) {
	lat, after, err := s.decide(op)
	if lat > 0 {
		t := time.NewTimer(lat)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false, fmt.Errorf("faulty: %s %s/%s: %w", op, bucket, key, ctx.Err())
		}
	}
	if err == nil {
		return true, nil
	}
	return after, fmt.Errorf("faulty: %s %s/%s: %w", op, bucket, key, err)
}

// CreateBucket implements objstore.Store.
func (s *Store) CreateBucket(ctx context.Context, bucket string) error {
	return s.change(ctx, OpCreateBucket, bucket, "", func() error { return s.inner.CreateBucket(ctx, bucket) })
}

// DeleteBucket implements objstore.Store.
func (s *Store) DeleteBucket(ctx context.Context, bucket string) error {
	return s.change(ctx, OpDeleteBucket, bucket, "", func() error { return s.inner.DeleteBucket(ctx, bucket) })
}

// Put implements objstore.Store.
func (s *Store) Put(ctx context.Context, bucket, key string, data []byte) error {
	return s.change(ctx, OpPut, bucket, key, func() error { return s.inner.Put(ctx, bucket, key, data) })
}

// Delete implements objstore.Store.
func (s *Store) Delete(ctx context.Context, bucket, key string) error {
	return s.change(ctx, OpDelete, bucket, key, func() error { return s.inner.Delete(ctx, bucket, key) })
}

// change runs a request that changes the store: with AfterOp it is carried out even when it fails.
func (s *Store) change(ctx context.Context, op Op, bucket, key string, do func() error) error {
	carryOut, injected := s.before(ctx, op, bucket, key)
	if injected == nil {
		return do()
	}
	if carryOut {
		_ = do()
	}
	return injected
}

// Get implements objstore.Store.
func (s *Store) Get(ctx context.Context, bucket, key string, off, length int64) ([]byte, error) {
	if _, err := s.before(ctx, OpGet, bucket, key); err != nil {
		return nil, err
	}
	return s.inner.Get(ctx, bucket, key, off, length)
}

// Stat implements objstore.Store.
func (s *Store) Stat(ctx context.Context, bucket, key string) (objstore.Info, error) {
	if _, err := s.before(ctx, OpStat, bucket, key); err != nil {
		return objstore.Info{}, err
	}
	return s.inner.Stat(ctx, bucket, key)
}

// List implements objstore.Store.
func (s *Store) List(ctx context.Context, bucket, prefix string, fn func(objstore.Info) error) error {
	if _, err := s.before(ctx, OpList, bucket, prefix); err != nil {
		return err
	}
	return s.inner.List(ctx, bucket, prefix, fn)
}

// Buckets implements objstore.BucketLister if the decorated Store does.
func (s *Store) Buckets(ctx context.Context) ([]string, error) {
	bl, ok := s.inner.(objstore.BucketLister)
	if !ok {
		return nil, fmt.Errorf("objstore: list buckets: %w", errNoAbility)
	}
	if _, err := s.before(ctx, OpBuckets, "", ""); err != nil {
		return nil, err
	}
	return bl.Buckets(ctx)
}

// Sync implements objstore.Syncer: the decorated Store's Sync, or nothing for a Store whose Puts are durable.
func (s *Store) Sync(ctx context.Context) error {
	if _, err := s.before(ctx, OpSync, "", ""); err != nil {
		return err
	}
	if sy, ok := s.inner.(objstore.Syncer); ok {
		return sy.Sync(ctx)
	}
	return ctx.Err()
}
