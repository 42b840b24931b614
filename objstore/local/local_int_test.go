package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/kmipfs/kmipfs/objstore"
)

// NewTestLogger returns a logger that fails the test on Warn or above and logs the rest with t.Log, so that an
// unexpected warning is a test failure. It is exported (in a test file only) for the external tests.
func NewTestLogger(t testing.TB) *slog.Logger {
	return slog.New(&testHandler{t: t})
}

type testHandler struct {
	t     testing.TB
	attrs []slog.Attr
}

func (h *testHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *testHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	for _, a := range h.attrs {
		b.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	if r.Level >= slog.LevelWarn {
		h.t.Errorf("unexpected %s log: %s", r.Level, b.String())
	} else {
		h.t.Logf("%s log: %s", r.Level, b.String())
	}
	return nil
}

func (h *testHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &testHandler{t: h.t, attrs: append(slices.Clone(h.attrs), attrs...)}
}

func (h *testHandler) WithGroup(string) slog.Handler { return h }

func newIntStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(t.TempDir(), Options{Logger: NewTestLogger(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func tmpEntries(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.tmp)
	if err != nil {
		t.Fatalf("ReadDir(.tmp): %v", err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestPutFailsHalfWay removes the bucket, or cancels the ctx, after Put has written and synced its temporary file
// and before the rename: the Put must fail and leave neither a partial object nor a temporary file.
func TestPutFailsHalfWay(t *testing.T) {
	tests := []struct {
		name    string
		key     string
		prepare func(t *testing.T, s *Store) // before the Put, in a fresh store with bucket "bkt"
		midway  func(t *testing.T, s *Store, cancel context.CancelFunc)
		wantErr error
	}{
		{
			name: "bucket removed, flat key",
			key:  "obj",
			midway: func(t *testing.T, s *Store, _ context.CancelFunc) {
				if err := s.DeleteBucket(t.Context(), "bkt"); err != nil {
					t.Errorf("DeleteBucket mid-Put: %v", err)
				}
			},
			wantErr: objstore.ErrBucketNotFound,
		},
		{
			name: "bucket removed, nested key",
			key:  "0123456789abcdef0123456789abcdef/0000000000000001",
			midway: func(t *testing.T, s *Store, _ context.CancelFunc) {
				if err := s.DeleteBucket(t.Context(), "bkt"); err != nil {
					t.Errorf("DeleteBucket mid-Put: %v", err)
				}
			},
			wantErr: objstore.ErrBucketNotFound,
		},
		{
			name: "bucket removed, key directory existed",
			key:  "dir/new",
			prepare: func(t *testing.T, s *Store) {
				if err := s.Put(t.Context(), "bkt", "dir/old", []byte("old")); err != nil {
					t.Fatal(err)
				}
			},
			midway: func(t *testing.T, s *Store, _ context.CancelFunc) {
				s.beforeRename = nil
				if err := s.Delete(t.Context(), "bkt", "dir/old"); err != nil {
					t.Errorf("Delete mid-Put: %v", err)
				}
				if err := s.DeleteBucket(t.Context(), "bkt"); err != nil {
					t.Errorf("DeleteBucket mid-Put: %v", err)
				}
			},
			wantErr: objstore.ErrBucketNotFound,
		},
		{
			name: "ctx cancelled",
			key:  "dir/obj",
			midway: func(t *testing.T, s *Store, cancel context.CancelFunc) {
				cancel()
			},
			wantErr: context.Canceled,
		},
		{
			name: "key collides with an object created meanwhile",
			key:  "p/q",
			midway: func(t *testing.T, s *Store, _ context.CancelFunc) {
				s.beforeRename = nil
				if err := s.Put(t.Context(), "bkt", "p", []byte("p")); err != nil {
					t.Errorf("Put(p) mid-Put: %v", err)
				}
			},
			wantErr: objstore.ErrInvalidKey,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newIntStore(t)
			if err := s.CreateBucket(t.Context(), "bkt"); err != nil {
				t.Fatal(err)
			}
			if tc.prepare != nil {
				tc.prepare(t, s)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			ran := false
			s.beforeRename = func() {
				ran = true
				if got := tmpEntries(t, s); len(got) != 1 {
					t.Errorf("temporary files mid-Put = %q, want exactly one", got)
				}
				tc.midway(t, s, cancel)
			}
			err := s.Put(ctx, "bkt", tc.key, make([]byte, 100000))
			if !ran {
				t.Fatalf("the hook did not run")
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Put = %v, want an error wrapping %v", err, tc.wantErr)
			}
			if got := tmpEntries(t, s); len(got) != 0 {
				t.Fatalf("temporary files left after a failed Put: %q", got)
			}
			if _, err := os.Lstat(filepath.Join(s.root, "bkt", filepath.FromSlash(tc.key))); !errors.Is(err, fs.ErrNotExist) &&
				!errors.Is(err, syscall.ENOTDIR) {
				t.Fatalf("the failed Put left %s behind (Lstat: %v)", tc.key, err)
			}
			if errors.Is(tc.wantErr, objstore.ErrBucketNotFound) {
				if _, err := os.Lstat(filepath.Join(s.root, "bkt")); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("the failed Put re-created the deleted bucket (Lstat: %v)", err)
				}
			}
		})
	}
}

// TestTempFileInvisible holds a Put between its fsync and its rename and checks that nothing of the new object
// can be seen: not in List, Get, Stat or Buckets.
func TestTempFileInvisible(t *testing.T) {
	s := newIntStore(t)
	ctx := t.Context()
	if err := s.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "bkt", "f/obj", []byte("old")); err != nil {
		t.Fatal(err)
	}
	current := "old" // what f/obj holds while a Put is held
	s.beforeRename = func() {
		if got := tmpEntries(t, s); len(got) != 1 || !strings.HasPrefix(got[0], tmpPrefix) {
			t.Errorf("temporary files mid-Put = %q, want one %s file", got, tmpPrefix)
		}
		var keys []string
		err := s.List(ctx, "bkt", "", func(info objstore.Info) error {
			keys = append(keys, fmt.Sprintf("%s:%d", info.Key, info.Size))
			return nil
		})
		if want := []string{fmt.Sprintf("f/obj:%d", len(current))}; err != nil || !slices.Equal(keys, want) {
			t.Errorf("List mid-Put = %q, %v; want %q", keys, err, want)
		}
		if got, err := s.Get(ctx, "bkt", "f/obj", 0, -1); err != nil || string(got) != current {
			t.Errorf("Get of f/obj mid-Put = %q, %v; want %q", got, err, current)
		}
		if _, err := s.Stat(ctx, "bkt", "g/new"); !errors.Is(err, objstore.ErrNotFound) {
			t.Errorf("Stat of the object being created = %v, want ErrNotFound", err)
		}
		if names, err := s.Buckets(ctx); err != nil || !slices.Equal(names, []string{"bkt"}) {
			t.Errorf("Buckets mid-Put = %q, %v", names, err)
		}
	}
	if err := s.Put(ctx, "bkt", "f/obj", []byte("new contents")); err != nil {
		t.Fatal(err)
	}
	current = "new contents"
	if err := s.Put(ctx, "bkt", "g/new", []byte("x")); err != nil {
		t.Fatal(err)
	}
	s.beforeRename = nil
	if got := tmpEntries(t, s); len(got) != 0 {
		t.Fatalf("temporary files after successful Puts: %q", got)
	}
	if got, err := s.Get(ctx, "bkt", "f/obj", 0, -1); err != nil || string(got) != "new contents" {
		t.Fatalf("Get after the Put = %q, %v", got, err)
	}
}

func TestStaleTempName(t *testing.T) {
	deadPid := 1<<22 + 1 // above the largest pid_max Linux allows, so no process has it
	tests := []struct {
		name  string
		stale bool
	}{
		{fmt.Sprintf("put-%d-123456", os.Getpid()), false},
		{"put-1-123456", false}, // pid 1 always runs
		{fmt.Sprintf("put-%d-123456", deadPid), true},
		{"put-0-1", true},
		{"put--5-1", true},
		{"put-abc-1", true},
		{"put-123", true},
		{"garbage", true},
		{"", true},
	}
	for _, tc := range tests {
		if got := staleTemp(tc.name); got != tc.stale {
			t.Errorf("staleTemp(%q) = %v, want %v", tc.name, got, tc.stale)
		}
	}
	if !strings.HasPrefix(newIntStore(t).tmpPattern, "put-"+strconv.Itoa(os.Getpid())+"-") {
		t.Errorf("temporary files are not named after this process")
	}
}

func TestWrapErrNoSpace(t *testing.T) {
	tests := []struct {
		errno   syscall.Errno
		noSpace bool
	}{
		{syscall.ENOSPC, true},
		{syscall.EDQUOT, true},
		{syscall.EIO, false},
		{syscall.EACCES, false},
	}
	for _, tc := range tests {
		osErr := &fs.PathError{Op: "write", Path: "/store/.tmp/put-1-2", Err: tc.errno}
		err := wrapErr("put", "bkt/key", osErr)
		if got := errors.Is(err, objstore.ErrNoSpace); got != tc.noSpace {
			t.Errorf("wrapErr(%v): errors.Is(ErrNoSpace) = %v, want %v", tc.errno, got, tc.noSpace)
		}
		if !errors.Is(err, tc.errno) {
			t.Errorf("wrapErr(%v) = %v, lost the OS error", tc.errno, err)
		}
		for _, part := range []string{`objstore: put "bkt/key"`, tc.errno.Error()} {
			if !strings.Contains(err.Error(), part) {
				t.Errorf("wrapErr(%v) = %q, want it to contain %q", tc.errno, err, part)
			}
		}
	}
}
