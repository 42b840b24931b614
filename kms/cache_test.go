package kms_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/kms/kmstest"
)

// fakeSource is a SecretSource whose answers the test scripts. It remembers every slice it handed out, so
// the test can check that the cache zeroed them.
type fakeSource struct {
	mu      sync.Mutex
	secrets map[string][]byte // name -> secret; absent means ErrKeyNotFound
	err     error             // if set, every call fails with it
	calls   int
	handed  [][]byte
	gate    chan struct{} // if set, calls wait for it to be closed
	started chan struct{} // if set, receives once per call
}

func (f *fakeSource) Secret(ctx context.Context, name string) ([]byte, error) {
	f.mu.Lock()
	f.calls++
	gate, started := f.gate, f.started
	f.mu.Unlock()
	if started != nil {
		started <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	s, ok := f.secrets[name]
	if !ok {
		return nil, fmt.Errorf("fake: %q: %w", name, kms.ErrKeyNotFound)
	}
	out := bytes.Clone(s)
	f.handed = append(f.handed, out)
	return out, nil
}

func (f *fakeSource) set(name string, secret []byte, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if secret != nil {
		f.secrets[name] = secret
	} else {
		delete(f.secrets, name)
	}
	f.err = err
}

func (f *fakeSource) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// clock is a manual clock for the cache.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestCache(t *testing.T, src kms.SecretSource, hit, miss time.Duration, logger *slog.Logger) (*kms.Cache, *clock) {
	t.Helper()
	if logger == nil {
		logger = kmstest.Logger(t)
	}
	c := kms.NewCache(src, kms.CacheOptions{HitTTL: hit, NotFoundTTL: miss, Logger: logger})
	clk := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	kms.SetCacheClock(c, clk.now)
	t.Cleanup(c.Close)
	return c, clk
}

func secret(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestCacheTTLs(t *testing.T) {
	src := &fakeSource{secrets: map[string][]byte{"k": secret(1)}}
	c, clk := newTestCache(t, src, time.Minute, 10*time.Second, nil)
	ctx := t.Context()

	type step struct {
		advance   time.Duration
		name      string
		want      []byte
		wantErr   error
		wantCalls int
	}
	steps := []step{
		{0, "k", secret(1), nil, 1},                           // miss: fetched
		{30 * time.Second, "k", secret(1), nil, 1},            // hit
		{29 * time.Second, "k", secret(1), nil, 1},            // still a hit at 59s
		{2 * time.Second, "k", secret(1), nil, 2},             // expired at 61s: fetched again
		{0, "gone", nil, kms.ErrKeyNotFound, 3},               // miss: not found
		{5 * time.Second, "gone", nil, kms.ErrKeyNotFound, 3}, // remembered
		{6 * time.Second, "gone", nil, kms.ErrKeyNotFound, 4}, // negative TTL over: asked again
	}
	for i, s := range steps {
		clk.advance(s.advance)
		got, err := c.Secret(ctx, s.name)
		if !errors.Is(err, s.wantErr) || (s.wantErr == nil && err != nil) {
			t.Fatalf("step %d: err %v, want %v", i, err, s.wantErr)
		}
		if !bytes.Equal(got, s.want) {
			t.Fatalf("step %d: got %x, want %x", i, got, s.want)
		}
		if n := src.callCount(); n != s.wantCalls {
			t.Fatalf("step %d: %d source calls, want %d", i, n, s.wantCalls)
		}
	}
	// A key created after a "not found" is visible at once after Forget.
	src.set("gone", secret(2), nil)
	c.Forget("gone")
	if got, err := c.Secret(ctx, "gone"); err != nil || !bytes.Equal(got, secret(2)) {
		t.Fatalf("after Forget: %x, %v", got, err)
	}
	if s := c.Stats(); s.Fetches != 5 || s.Hits != 3 || s.Misses != 5 {
		t.Errorf("stats %+v", s)
	}
}

func TestCacheErrorsNotCachedLong(t *testing.T) {
	src := &fakeSource{secrets: map[string][]byte{}}
	boom := fmt.Errorf("fake: %w: connection refused", kms.ErrUnavailable)
	src.set("k", nil, boom)
	c, clk := newTestCache(t, src, time.Minute, time.Minute, nil)
	for i := range 3 {
		if _, err := c.Secret(t.Context(), "k"); !errors.Is(err, kms.ErrUnavailable) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n := src.callCount(); n != 1 {
		t.Fatalf("%d source calls within a second of a failure, want 1", n)
	}
	clk.advance(1500 * time.Millisecond)
	src.set("k", secret(3), nil)
	if got, err := c.Secret(t.Context(), "k"); err != nil || !bytes.Equal(got, secret(3)) {
		t.Fatalf("after the error window: %x, %v", got, err)
	}
}

func TestCacheReturnsCopies(t *testing.T) {
	src := &fakeSource{secrets: map[string][]byte{"k": secret(4)}}
	c, _ := newTestCache(t, src, time.Minute, time.Minute, nil)
	a, _ := c.Secret(t.Context(), "k")
	clear(a) // the caller zeroes its copy, as it should
	b, err := c.Secret(t.Context(), "k")
	if err != nil || !bytes.Equal(b, secret(4)) {
		t.Fatalf("second copy %x, %v: the cache handed out its own slice", b, err)
	}
}

func TestCacheSingleflight(t *testing.T) {
	src := &fakeSource{secrets: map[string][]byte{"k": secret(5)}, gate: make(chan struct{}), started: make(chan struct{}, 100)}
	c, _ := newTestCache(t, src, time.Minute, time.Minute, nil)
	const n = 50
	var wg sync.WaitGroup
	var ok atomic.Int32
	var joined sync.WaitGroup
	joined.Add(n)
	for range n {
		wg.Go(func() {
			joined.Done()
			s, err := c.Secret(t.Context(), "k")
			if err == nil && bytes.Equal(s, secret(5)) {
				ok.Add(1)
			}
		})
	}
	joined.Wait()
	<-src.started // the one fetch is running
	// Give the other callers time to reach the cache and join the fetch in flight.
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().Misses < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	// A caller that gives up does not cancel the shared fetch.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Secret(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	close(src.gate)
	wg.Wait()
	if ok.Load() != n {
		t.Fatalf("%d of %d callers got the secret", ok.Load(), n)
	}
	if got := src.callCount(); got != 1 {
		t.Fatalf("%d fetches for %d concurrent misses, want 1", got, n)
	}
	if s := c.Stats(); s.Fetches != 1 || s.Misses != n+1 {
		t.Errorf("stats %+v", s)
	}
}

func TestCacheZeroes(t *testing.T) {
	src := &fakeSource{secrets: map[string][]byte{"a": secret(6), "b": secret(7)}}
	c, clk := newTestCache(t, src, time.Minute, time.Minute, nil)
	for _, name := range []string{"a", "b"} {
		if _, err := c.Secret(t.Context(), name); err != nil {
			t.Fatal(err)
		}
	}
	// Replacing a secret zeroes the old copy.
	clk.advance(2 * time.Minute)
	if _, err := c.Secret(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	old := src.handed[0]
	src.mu.Unlock()
	if !bytes.Equal(old, make([]byte, 32)) {
		t.Fatalf("replaced secret not zeroed: %x", old)
	}
	c.Close()
	src.mu.Lock()
	defer src.mu.Unlock()
	for i, h := range src.handed {
		if !bytes.Equal(h, make([]byte, 32)) {
			t.Errorf("secret %d not zeroed after Close: %x", i, h)
		}
	}
	if _, err := c.Secret(t.Context(), "a"); !errors.Is(err, kms.ErrClosed) {
		t.Errorf("Secret after Close: %v", err)
	}
}

func TestCacheExpiredSecretsZeroed(t *testing.T) {
	src := &fakeSource{secrets: map[string][]byte{"a": secret(8), "b": secret(9)}}
	c, clk := newTestCache(t, src, time.Minute, time.Minute, nil)
	if _, err := c.Secret(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	// Past the stale window (10 x TTL), the next fetch of any name sweeps "a" out.
	clk.advance(11 * time.Minute)
	if _, err := c.Secret(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	a := src.handed[0]
	src.mu.Unlock()
	if !bytes.Equal(a, make([]byte, 32)) {
		t.Fatalf("expired secret not zeroed: %x", a)
	}
}

// countingHandler counts records at Warn and above.
type countingHandler struct {
	slog.Handler
	warns *atomic.Int32
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.warns.Add(1)
		var msg strings.Builder
		r.Attrs(func(a slog.Attr) bool { msg.WriteString(a.String() + " "); return true })
		if strings.Contains(msg.String(), fmt.Sprintf("%x", secret(10))) {
			return errors.New("secret in log")
		}
	}
	return h.Handler.Handle(ctx, r)
}

func TestCacheServesStaleWhenUnavailable(t *testing.T) {
	src := &fakeSource{secrets: map[string][]byte{"k": secret(10)}}
	var warns atomic.Int32
	logger := slog.New(countingHandler{Handler: kmstest.WarnLogger(t).Handler(), warns: &warns})
	c, clk := newTestCache(t, src, time.Minute, time.Minute, logger)
	if _, err := c.Secret(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	down := fmt.Errorf("fake: %w: connection refused", kms.ErrUnavailable)
	src.set("k", secret(10), down)
	for i := range 5 {
		clk.advance(time.Minute) // 1..5 minutes old: expired, but within 10 x TTL
		got, err := c.Secret(t.Context(), "k")
		if err != nil || !bytes.Equal(got, secret(10)) {
			t.Fatalf("minute %d of outage: %x, %v; want the cached secret", i+1, got, err)
		}
	}
	if n := warns.Load(); n != 1 {
		t.Errorf("%d warnings during one outage, want 1", n)
	}
	if s := c.Stats(); s.Stale != 5 {
		t.Errorf("stats %+v; want 5 stale answers", s)
	}
	// Other failures are not papered over. During the outage the copy is served at once while the
	// source is asked again in the background, so the failure shows on the call after that answer.
	clk.advance(2 * time.Second)
	src.set("k", secret(10), errors.New("fake: permission denied"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.Secret(t.Context(), "k")
		if err != nil {
			if errors.Is(err, kms.ErrUnavailable) {
				t.Fatalf("non-outage failure: %v; want the error itself", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("non-outage failure: the cached copy is still served after 5s")
		}
		time.Sleep(time.Millisecond)
	}
	// Beyond 10 x TTL the cached copy is no longer served.
	clk.advance(6 * time.Minute)
	src.set("k", secret(10), down)
	if _, err := c.Secret(t.Context(), "k"); !errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("11 minutes into the outage: %v; want ErrUnavailable", err)
	}
	// "Not found" during an outage is a real answer: the key was removed; drop the copy.
	clk.advance(2 * time.Second)
	src.set("k", nil, nil)
	if _, err := c.Secret(t.Context(), "k"); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("after removal: %v", err)
	}
}

// TestCacheStaleDoesNotWaitForHangingSource: a key server that hangs (accepts, never answers) costs a
// cached key one wait of the source's timeout when the outage begins; after that the cached copy is
// served at once while a background fetch asks again, and the first answer ends the outage.
func TestCacheStaleDoesNotWaitForHangingSource(t *testing.T) {
	src := &fakeSource{secrets: map[string][]byte{"k": secret(11)}}
	c, clk := newTestCache(t, src, time.Minute, time.Minute, kmstest.WarnLogger(t))
	if _, err := c.Secret(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	// The outage begins: the first fetch after expiry fails (as a hanging server does after Timeout).
	clk.advance(2 * time.Minute)
	src.set("k", secret(11), fmt.Errorf("fake: %w: no answer within kms.timeout", kms.ErrUnavailable))
	if got, err := c.Secret(t.Context(), "k"); err != nil || !bytes.Equal(got, secret(11)) {
		t.Fatalf("first call of the outage: %x, %v", got, err)
	}
	// Now every fetch hangs.
	gate := make(chan struct{})
	src.mu.Lock()
	src.gate = gate
	src.mu.Unlock()
	clk.advance(2 * time.Second) // past ErrorTTL
	calls := src.callCount()
	for i := range 100 {
		start := time.Now()
		got, err := c.Secret(t.Context(), "k")
		if err != nil || !bytes.Equal(got, secret(11)) {
			t.Fatalf("call %d during the hang: %x, %v", i, got, err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("call %d waited %v for a hanging source", i, d)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for src.callCount() != calls+1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d background fetches during the hang, want 1", src.callCount()-calls)
		}
		time.Sleep(time.Millisecond)
	}
	// The server comes back and says the key is gone: that answer wins.
	src.set("k", nil, nil)
	close(gate)
	deadline = time.Now().Add(5 * time.Second)
	for {
		_, err := c.Secret(t.Context(), "k")
		if errors.Is(err, kms.ErrKeyNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the server answered not found: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}
