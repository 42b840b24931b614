package s3_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/objstore"
	"github.com/kmipfs/kmipfs/objstore/mem"
	"github.com/kmipfs/kmipfs/objstore/s3"
)

var errFlaky = errors.New("flaky")

func isFlaky(err error) bool { return errors.Is(err, errFlaky) }

// failFirst returns a fault that fails the first n calls of op with err.
func failFirst(op string, n int, err error, calls *atomic.Int32) func(string, string, string) error {
	return func(o, _, _ string) error {
		if o != op {
			return nil
		}
		if calls.Add(1) <= int32(n) {
			return err
		}
		return nil
	}
}

func TestRetry(t *testing.T) {
	ctx := t.Context()
	tests := []struct {
		name      string
		failures  int
		err       error
		retries   int
		wantCalls int32
		wantErr   error
	}{
		{"transient then success", 2, errFlaky, 3, 3, nil},
		{"transient until given up", 10, errFlaky, 2, 3, errFlaky},
		{"permanent is not retried", 10, objstore.ErrNoSpace, 5, 1, objstore.ErrNoSpace},
		{"no retries", 1, errFlaky, -1, 1, errFlaky},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mem.New()
			if err := m.CreateBucket(ctx, "b"); err != nil {
				t.Fatal(err)
			}
			var calls atomic.Int32
			m.SetFault(failFirst("put", tc.failures, tc.err, &calls))
			r := s3.NewRetry(m, s3.RetryOptions{Retries: tc.retries, Base: time.Millisecond, Transient: isFlaky})
			err := r.Put(ctx, "b", "k", []byte("v"))
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("Put: %v, want %v", err, tc.wantErr)
			}
			if got := calls.Load(); got != tc.wantCalls {
				t.Fatalf("Put reached the store %d times, want %d", got, tc.wantCalls)
			}
			if tc.wantErr == errFlaky && tc.retries > 0 && !strings.Contains(err.Error(), "gave up after") {
				t.Fatalf("error of an exhausted retry does not say so: %v", err)
			}
			if r.Unwrap() != objstore.Store(m) {
				t.Fatal("Unwrap does not return the decorated store")
			}
		})
	}
}

func TestRetryStopsWithCtx(t *testing.T) {
	m := mem.New()
	if err := m.CreateBucket(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	m.SetFault(failFirst("get", 100, errFlaky, &calls))
	r := s3.NewRetry(m, s3.RetryOptions{Retries: 10, Base: time.Hour, Max: time.Hour, Transient: isFlaky})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.Get(ctx, "b", "k", 0, -1)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errFlaky) {
		t.Fatalf("Get: %v, want the last error and the ctx's", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Get waited %v after its ctx was done", d)
	}
}

// lostAnswer performs the first call of op and then reports a transient failure, as when the server did the work
// and the connection broke before the answer arrived.
type lostAnswer struct {
	objstore.Store
	lost atomic.Bool
}

func (l *lostAnswer) fail(err error) error {
	if err == nil && !l.lost.Swap(true) {
		return errFlaky
	}
	return err
}

func (l *lostAnswer) CreateBucket(ctx context.Context, b string) error {
	return l.fail(l.Store.CreateBucket(ctx, b))
}

func (l *lostAnswer) DeleteBucket(ctx context.Context, b string) error {
	return l.fail(l.Store.DeleteBucket(ctx, b))
}

func TestRetryLostAnswer(t *testing.T) {
	ctx := t.Context()
	opts := s3.RetryOptions{Base: time.Millisecond, Transient: isFlaky}
	if err := s3.NewRetry(&lostAnswer{Store: mem.New()}, opts).CreateBucket(ctx, "b"); err != nil {
		t.Fatalf("CreateBucket whose first answer was lost: %v, want nil", err)
	}
	m := mem.New()
	if err := m.CreateBucket(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := s3.NewRetry(&lostAnswer{Store: m}, opts).DeleteBucket(ctx, "b"); err != nil {
		t.Fatalf("DeleteBucket whose first answer was lost: %v, want nil", err)
	}
	// Without a lost answer, the sentinels still come through.
	if err := s3.NewRetry(m, opts).DeleteBucket(ctx, "b"); !errors.Is(err, objstore.ErrBucketNotFound) {
		t.Fatalf("DeleteBucket of a missing bucket: %v", err)
	}
}

// breakingList fails the first List after it delivered n objects.
type breakingList struct {
	objstore.Store
	n     int
	broke atomic.Bool
}

func (b *breakingList) List(ctx context.Context, bucket, prefix string, fn func(objstore.Info) error) error {
	i := 0
	return b.Store.List(ctx, bucket, prefix, func(info objstore.Info) error {
		if i == b.n && !b.broke.Swap(true) {
			return errFlaky
		}
		i++
		return fn(info)
	})
}

func TestRetryListResumes(t *testing.T) {
	ctx := t.Context()
	m := mem.New()
	if err := m.CreateBucket(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 10 {
		k := fmt.Sprintf("k%02d", i)
		want = append(want, k)
		if err := m.Put(ctx, "b", k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	r := s3.NewRetry(&breakingList{Store: m, n: 4}, s3.RetryOptions{Base: time.Millisecond, Transient: isFlaky})
	var got []string
	if err := r.List(ctx, "b", "", func(info objstore.Info) error { got = append(got, info.Key); return nil }); err != nil {
		t.Fatalf("List: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("List across a retry gave %q, want each key once: %q", got, want)
	}
	// fn's own error stops the walk, unwrapped and not retried, even if it looks transient.
	calls := 0
	err := r.List(ctx, "b", "", func(objstore.Info) error { calls++; return errFlaky })
	if err != errFlaky || calls != 1 {
		t.Fatalf("List with failing fn: %v after %d calls, want errFlaky after 1", err, calls)
	}
}

func TestLimit(t *testing.T) {
	ctx := t.Context()
	m := mem.New()
	if err := m.CreateBucket(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	var inFlight, peak atomic.Int32
	m.SetFault(func(op, _, _ string) error {
		n := inFlight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(2 * time.Millisecond)
		inFlight.Add(-1)
		return nil
	})
	l := s3.NewLimit(m, 3)
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			if err := l.Put(ctx, "b", fmt.Sprintf("k%d", i), []byte("v")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 3 || p < 2 {
		t.Fatalf("peak of %d operations in flight with a limit of 3", p)
	}
	// With one slot, List's fn can still use the store.
	one := s3.NewLimit(m, 1)
	n := 0
	err := one.List(ctx, "b", "", func(info objstore.Info) error {
		n++
		_, err := one.Get(ctx, "b", info.Key, 0, -1)
		return err
	})
	if err != nil || n != 30 {
		t.Fatalf("List calling Get under a limit of 1: %v after %d objects", err, n)
	}
	// A caller waiting for a slot gives up with its ctx.
	release := make(chan struct{})
	m.SetFault(func(op, _, _ string) error {
		if op == "put" {
			<-release
		}
		return nil
	})
	go func() { _ = one.Put(ctx, "b", "blocker", nil) }()
	time.Sleep(20 * time.Millisecond)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := one.Stat(wctx, "b", "k1"); !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "store.concurrency") {
		t.Fatalf("Stat while the only slot is taken: %v, want a deadline naming store.concurrency", err)
	}
	close(release)
}
