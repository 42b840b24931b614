package mem_test

import (
	"bytes"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/kmipfs/kmipfs/objstore"
	"github.com/kmipfs/kmipfs/objstore/mem"
	"github.com/kmipfs/kmipfs/objstore/storetest"
)

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return mem.New() })
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) objstore.Store { return mem.New() })
}

// snapshot is everything observable in a store, to check that a failed operation changed nothing.
func snapshot(t *testing.T, s *mem.Store) map[string][]byte {
	t.Helper()
	names, err := s.Buckets(t.Context())
	if err != nil {
		t.Fatalf("Buckets: %v", err)
	}
	snap := map[string][]byte{}
	for _, b := range names {
		snap[b+"/"] = nil
		err := s.List(t.Context(), b, "", func(info objstore.Info) error {
			data, err := s.Get(t.Context(), b, info.Key, 0, -1)
			snap[b+"/"+info.Key] = data
			return err
		})
		if err != nil {
			t.Fatalf("List(%q): %v", b, err)
		}
	}
	return snap
}

func equalSnap(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

func TestSetFault(t *testing.T) {
	errInjected := errors.New("injected fault")
	tests := []struct {
		op  string
		run func(t *testing.T, s *mem.Store) error
	}{
		{"put", func(t *testing.T, s *mem.Store) error { return s.Put(t.Context(), "bkt", "obj", []byte("new")) }},
		{"get", func(t *testing.T, s *mem.Store) error {
			_, err := s.Get(t.Context(), "bkt", "obj", 0, -1)
			return err
		}},
		{"stat", func(t *testing.T, s *mem.Store) error {
			_, err := s.Stat(t.Context(), "bkt", "obj")
			return err
		}},
		{"delete", func(t *testing.T, s *mem.Store) error { return s.Delete(t.Context(), "bkt", "obj") }},
		{"list", func(t *testing.T, s *mem.Store) error {
			return s.List(t.Context(), "bkt", "obj", func(objstore.Info) error { return nil })
		}},
		{"createbucket", func(t *testing.T, s *mem.Store) error { return s.CreateBucket(t.Context(), "bkt") }},
		{"deletebucket", func(t *testing.T, s *mem.Store) error { return s.DeleteBucket(t.Context(), "empty") }},
		{"buckets", func(t *testing.T, s *mem.Store) error {
			_, err := s.Buckets(t.Context())
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.op, func(t *testing.T) {
			s := mem.New()
			for _, b := range []string{"bkt", "empty"} {
				if err := s.CreateBucket(t.Context(), b); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Put(t.Context(), "bkt", "obj", []byte("old")); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, s)

			type call struct{ op, bucket, key string }
			var mu sync.Mutex
			var calls []call
			s.SetFault(func(op, bucket, key string) error {
				mu.Lock()
				calls = append(calls, call{op, bucket, key})
				mu.Unlock()
				if op == tc.op {
					return errInjected
				}
				return nil
			})
			if err := tc.run(t, s); !errors.Is(err, errInjected) {
				t.Fatalf("%s with a fault = %v, want the injected error", tc.op, err)
			}
			wantCall := call{tc.op, "bkt", "obj"}
			switch tc.op {
			case "createbucket":
				wantCall.key = ""
			case "deletebucket":
				wantCall = call{tc.op, "empty", ""}
			case "buckets":
				wantCall = call{tc.op, "", ""}
			}
			if !slices.Equal(calls, []call{wantCall}) {
				t.Fatalf("fault fn was called with %+v, want %+v", calls, wantCall)
			}

			s.SetFault(nil)
			if after := snapshot(t, s); !equalSnap(before, after) {
				t.Fatalf("failed %s changed the store: before %q, after %q", tc.op, before, after)
			}
			// With the fault removed the operation works again (createbucket: the bucket exists).
			err := tc.run(t, s)
			if tc.op == "createbucket" {
				if !errors.Is(err, objstore.ErrBucketExists) {
					t.Fatalf("createbucket after SetFault(nil) = %v, want ErrBucketExists", err)
				}
			} else if err != nil {
				t.Fatalf("%s after SetFault(nil): %v", tc.op, err)
			}
		})
	}
}

// TestSetFaultSelective checks that a fault can target one object, as a test of "one flush fails" needs.
func TestSetFaultSelective(t *testing.T) {
	errDown := errors.New("store down")
	s := mem.New()
	ctx := t.Context()
	if err := s.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	s.SetFault(func(op, bucket, key string) error {
		if op == "put" && key == "bad/0001" {
			return errDown
		}
		return nil
	})
	if err := s.Put(ctx, "bkt", "good/0001", []byte("g")); err != nil {
		t.Fatalf("Put of an untargeted key: %v", err)
	}
	if err := s.Put(ctx, "bkt", "bad/0001", []byte("b")); !errors.Is(err, errDown) {
		t.Fatalf("Put of the targeted key = %v, want the injected error", err)
	}
	if _, err := s.Stat(ctx, "bkt", "bad/0001"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Stat of the failed Put = %v, want ErrNotFound", err)
	}
	if got, err := s.Get(ctx, "bkt", "good/0001", 0, -1); err != nil || string(got) != "g" {
		t.Fatalf("Get of the good object = %q, %v", got, err)
	}
}
