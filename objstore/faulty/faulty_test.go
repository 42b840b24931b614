package faulty_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/objstore"
	"github.com/kmipfs/kmipfs/objstore/faulty"
	"github.com/kmipfs/kmipfs/objstore/local"
	"github.com/kmipfs/kmipfs/objstore/mem"
	"github.com/kmipfs/kmipfs/objstore/storetest"
)

// With no Rule the decorator is a conforming Store, over either backend.
func TestStoreConforms(t *testing.T) {
	t.Run("mem", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) objstore.Store { return faulty.New(mem.New(), 1) })
	})
	t.Run("local", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) objstore.Store {
			s, err := local.New(t.TempDir(), local.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return faulty.New(s, 1)
		})
	})
}

func newStore(t *testing.T) (*faulty.Store, *mem.Store) {
	t.Helper()
	inner := mem.New()
	if err := inner.CreateBucket(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	if err := inner.Put(t.Context(), "b", "old", []byte("old")); err != nil {
		t.Fatal(err)
	}
	return faulty.New(inner, 7), inner
}

func TestFailAll(t *testing.T) {
	s, inner := newStore(t)
	s.Set(faulty.Rule{FailRate: 1})
	ctx := t.Context()
	if err := s.Put(ctx, "b", "new", []byte("x")); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("Put: %v", err)
	}
	if _, err := inner.Stat(ctx, "b", "new"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("a failed Put reached the store: %v", err)
	}
	if _, err := s.Get(ctx, "b", "old", 0, -1); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("Get: %v", err)
	}
	if err := s.Delete(ctx, "b", "old"); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("Delete: %v", err)
	}
	if err := s.Sync(ctx); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("Sync: %v", err)
	}
	if _, err := s.Buckets(ctx); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("Buckets: %v", err)
	}
	if c := s.Counts(); c.Calls != 5 || c.Failed != 5 {
		t.Fatalf("counts %+v", c)
	}
	s.Clear()
	if got, err := s.Get(ctx, "b", "old", 0, -1); err != nil || !bytes.Equal(got, []byte("old")) {
		t.Fatalf("after Clear: %q %v", got, err)
	}
}

func TestOpsAndError(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	s.Set(faulty.Rule{Ops: faulty.OpPut, FailRate: 1, Err: faulty.ErrNoSpace})
	err := s.Put(ctx, "b", "new", []byte("x"))
	if !errors.Is(err, objstore.ErrNoSpace) {
		t.Fatalf("Put: %v, want ErrNoSpace", err)
	}
	if _, err := s.Get(ctx, "b", "old", 0, -1); err != nil {
		t.Fatalf("Get is not in Ops but failed: %v", err)
	}
}

func TestAfterOp(t *testing.T) {
	s, inner := newStore(t)
	ctx := t.Context()
	s.Set(faulty.Rule{Ops: faulty.OpPut, FailRate: 1, AfterOp: true})
	if err := s.Put(ctx, "b", "new", []byte("x")); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("Put: %v", err)
	}
	if got, err := inner.Get(ctx, "b", "new", 0, -1); err != nil || string(got) != "x" {
		t.Fatalf("AfterOp Put was not carried out: %q %v", got, err)
	}
}

func TestFailRate(t *testing.T) {
	s, _ := newStore(t)
	s.Set(faulty.Rule{Ops: faulty.OpGet, FailRate: 0.5})
	failed := 0
	const n = 2000
	for i := 0; i < n; i++ {
		if _, err := s.Get(t.Context(), "b", "old", 0, -1); err != nil {
			failed++
		}
	}
	if failed < n/2-150 || failed > n/2+150 {
		t.Fatalf("%d of %d failed with FailRate 0.5", failed, n)
	}
}

func TestLatency(t *testing.T) {
	s, _ := newStore(t)
	s.Set(faulty.Rule{Latency: 50 * time.Millisecond})
	start := time.Now()
	if _, err := s.Stat(t.Context(), "b", "old"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("Stat took %v, want >= 50ms", d)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	s.Set(faulty.Rule{Latency: time.Hour})
	if _, err := s.Stat(ctx, "b", "old"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stat with a short deadline: %v", err)
	}
}
