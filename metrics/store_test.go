package metrics_test

import (
	"context"
	"errors"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/kmipfs/kmipfs/metrics"
	"github.com/kmipfs/kmipfs/objstore"
	"github.com/kmipfs/kmipfs/objstore/local"
	"github.com/kmipfs/kmipfs/objstore/mem"
	"github.com/kmipfs/kmipfs/objstore/storetest"
)

// TestStoreConformance: the decorated store still passes the conformance suite, over the mem
// backend and over the local one (which also has Syncer).
func TestStoreConformance(t *testing.T) {
	t.Run("mem", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) objstore.Store { return metrics.New("test").WrapStore(mem.New()) })
	})
	t.Run("local", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) objstore.Store {
			s, err := local.New(t.TempDir(), local.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return metrics.New("test").WrapStore(s)
		})
	})
}

// plain is a Store with no optional ability.
type plain struct{ objstore.Store }

// syncOnly is a Store that is a Syncer but no BucketLister.
type syncOnly struct{ objstore.Store }

func (syncOnly) Sync(context.Context) error { return nil }

// TestStoreKeepsAbilities: the decorator has exactly the optional abilities of what it wraps.
func TestStoreKeepsAbilities(t *testing.T) {
	r := metrics.New("test")
	lc, err := local.New(t.TempDir(), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name             string
		inner            objstore.Store
		canSync, canList bool
	}{
		{"mem", mem.New(), false, true},
		{"local", lc, true, true},
		{"plain", plain{mem.New()}, false, false},
		{"sync only", syncOnly{mem.New()}, true, false},
	} {
		s := r.WrapStore(tc.inner)
		_, gotSync := s.(objstore.Syncer)
		_, gotList := s.(objstore.BucketLister)
		if gotSync != tc.canSync || gotList != tc.canList {
			t.Errorf("%s: Syncer %v BucketLister %v, want %v %v", tc.name, gotSync, gotList, tc.canSync, tc.canList)
		}
		u, ok := s.(interface{ Unwrap() objstore.Store })
		if !ok || u.Unwrap() != tc.inner {
			t.Errorf("%s: Unwrap does not return the wrapped store", tc.name)
		}
	}
}

// TestStoreCounts: requests, bytes, and the two kinds of errors are counted per operation.
func TestStoreCounts(t *testing.T) {
	r := metrics.New("test")
	inner := mem.New()
	s := r.WrapStore(inner)
	ctx := t.Context()
	if err := s.CreateBucket(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := s.Put(ctx, "b", "k", make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Get(ctx, "b", "k", 10, 50); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "b", "missing", 0, -1); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("get of a missing object: %v", err)
	}
	inner.SetFault(func(op, bucket, key string) error {
		if op == "put" {
			return errors.New("disk on fire")
		}
		return nil
	})
	if err := s.Put(ctx, "b", "k2", make([]byte, 100)); err == nil {
		t.Fatal("put with a fault: no error")
	}
	fams, err := r.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	find := func(name string, labels map[string]string) *dto.Metric {
		t.Helper()
		f := byName[name]
		if f == nil {
			t.Fatalf("no metric %s", name)
		}
	next:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m
		}
		t.Fatalf("no %s with %v", name, labels)
		return nil
	}
	if n := find("kmipfs_store_request_duration_seconds", map[string]string{"op": "put"}).GetHistogram().GetSampleCount(); n != 4 {
		t.Errorf("put requests %d, want 4", n)
	}
	if n := find("kmipfs_store_request_duration_seconds", map[string]string{"op": "get"}).GetHistogram().GetSampleCount(); n != 2 {
		t.Errorf("get requests %d, want 2", n)
	}
	if v := find("kmipfs_store_request_errors_total", map[string]string{"op": "put", "kind": "failed"}).GetCounter().GetValue(); v != 1 {
		t.Errorf("failed puts %v, want 1", v)
	}
	if v := find("kmipfs_store_request_errors_total", map[string]string{"op": "get", "kind": "not_found"}).GetCounter().GetValue(); v != 1 {
		t.Errorf("not-found gets %v, want 1", v)
	}
	if v := find("kmipfs_store_put_bytes_total", nil).GetCounter().GetValue(); v != 300 {
		t.Errorf("put bytes %v, want 300", v)
	}
	if v := find("kmipfs_store_get_bytes_total", nil).GetCounter().GetValue(); v != 50 {
		t.Errorf("get bytes %v, want 50", v)
	}
}
