package kms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// staleFactor: when the key server is unavailable, a secret up to staleFactor*HitTTL old is still
	// served (unless CacheOptions.StaleTTL says otherwise), so files whose key was cached keep working
	// through an outage.
	staleFactor = 10
	// maxEntries bounds the cache; beyond it the oldest secret is evicted (and zeroed).
	maxEntries = 4096
	// sweepEvery is how often Secret looks for entries to evict.
	sweepEvery = time.Second
)

// SecretSource fetches a secret by KMIP name; *Client is one. The caller owns the returned slice.
type SecretSource interface {
	Secret(ctx context.Context, name string) ([]byte, error)
}

var (
	_ SecretSource = (*Client)(nil)
	_ SecretSource = (*Cache)(nil)
)

// Cache remembers secrets by KMIP name in front of a SecretSource, so that a busy mount makes one KMIP
// round trip per key per TTL:
//
//   - a fetched secret is served for HitTTL;
//   - ErrKeyNotFound is remembered for NotFoundTTL (0 disables that);
//   - any other failure is remembered for ErrorTTL (default 1s), so an outage costs one fetch per name
//     per ErrorTTL rather than one per file operation, and each of those waits at most the source's
//     timeout;
//   - when a fetch fails with ErrUnavailable and a secret at most StaleTTL old (default 10*HitTTL) is
//     cached, that copy is served instead, with one Warn log per name until the server answers again.
//     While the outage lasts, the copy is served at once and the refetch runs in the background, so
//     a server that hangs rather than refuses costs each cached key one wait of the timeout, not one
//     per ErrorTTL;
//   - concurrent misses on one name share a single fetch.
//
// Secrets are zeroed when evicted, replaced, or on Close. Secret always returns a fresh copy, which the
// caller should zero after use. Safe for concurrent use.
type Cache struct {
	src      SecretSource
	hitTTL   time.Duration
	missTTL  time.Duration
	errTTL   time.Duration
	staleTTL time.Duration
	log      *slog.Logger
	now      func() time.Time // time.Now; tests replace it

	mu        sync.Mutex
	entries   map[string]*entry // protected by mu
	inflight  map[string]*call  // protected by mu
	lastSweep time.Time         // protected by mu
	closed    bool              // protected by mu

	hits, misses, fetches, stale atomic.Uint64
}

// CacheStats counts Cache.Secret calls by outcome.
type CacheStats struct {
	Hits    uint64 // answered from the cache (a secret or a remembered "not found" or error)
	Misses  uint64 // had to wait for a fetch (their own or a shared one)
	Fetches uint64 // calls to the source
	Stale   uint64 // answered with an expired secret because the source was unavailable
	Entries int    // names cached now (a secret, a remembered "not found" or a failure)
}

// entry is what the cache knows about one name. Any of its parts may be unset.
type entry struct {
	secret   []byte    // owned by the cache, zeroed on eviction; nil if none
	fetched  time.Time // when secret was fetched
	notFound error     // set: the name did not exist at negUntil-missTTL
	negUntil time.Time
	failErr  error // last fetch failure other than not-found
	failTill time.Time
	warned   bool // the stale-serving warning was logged for this outage
}

// call is one fetch in flight; waiters block on done. secret is the call's own copy, zeroed by the last
// waiter to take its copy.
type call struct {
	done    chan struct{}
	cancel  context.CancelFunc
	waiters int    // protected by Cache.mu
	secret  []byte // protected by Cache.mu after done is closed
	err     error
}

// CacheOptions configure a Cache. [Config.CacheOptions] derives them from the [kms] section.
type CacheOptions struct {
	// HitTTL is how long a fetched secret is served; <= 0 disables caching of secrets (concurrent
	// misses still share a fetch).
	HitTTL time.Duration
	// NotFoundTTL is how long ErrKeyNotFound is remembered; <= 0 disables that.
	NotFoundTTL time.Duration
	// ErrorTTL is how long any other failure is remembered; 0 means DefaultErrorTTL, < 0 disables it.
	ErrorTTL time.Duration
	// StaleTTL is how old a secret may be and still be served while the source is unavailable; 0 means
	// 10*HitTTL, < 0 disables stale serving.
	StaleTTL time.Duration
	// Logger gets the outage warnings; nil means silent.
	Logger *slog.Logger
}

// CacheOptions returns the cache options of the [kms] section (after SetDefaults).
func (c Config) CacheOptions(logger *slog.Logger) CacheOptions {
	return CacheOptions{HitTTL: c.CacheTTL.Duration, NotFoundTTL: c.NegativeTTL.Duration, ErrorTTL: c.ErrorTTL.Duration,
		StaleTTL: c.StaleTTL.Duration, Logger: logger}
}

// NewCache returns a cache over src.
func NewCache(src SecretSource, opts CacheOptions) *Cache {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	errTTL := opts.ErrorTTL
	if errTTL == 0 {
		errTTL = DefaultErrorTTL
	}
	stale := opts.StaleTTL
	if stale == 0 {
		stale = staleFactor * opts.HitTTL
	}
	return &Cache{
		src:      src,
		hitTTL:   opts.HitTTL,
		missTTL:  opts.NotFoundTTL,
		errTTL:   max(errTTL, 0),
		staleTTL: max(stale, 0),
		log:      logger,
		now:      time.Now,
		entries:  make(map[string]*entry),
		inflight: make(map[string]*call),
	}
}

// Stats returns the counters and the number of cached names.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	n := len(c.entries)
	c.mu.Unlock()
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Fetches: c.fetches.Load(), Stale: c.stale.Load(),
		Entries: n}
}

// Secret returns a copy of the secret called name, from the cache or from the source. Errors are the
// source's (ErrKeyNotFound, ErrUnavailable, ...), or the context's if ctx ends while waiting; a waiter
// that gives up does not cancel a fetch that others share.
func (c *Cache) Secret(ctx context.Context, name string) ([]byte, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, &opError{op: "secret", name: name, kind: ErrClosed}
	}
	now := c.now()
	if e := c.entries[name]; e != nil {
		switch {
		case e.secret != nil && now.Sub(e.fetched) < c.hitTTL:
			s := bytes.Clone(e.secret)
			c.mu.Unlock()
			c.hits.Add(1)
			return s, nil
		case e.notFound != nil && now.Before(e.negUntil):
			err := e.notFound
			c.mu.Unlock()
			c.hits.Add(1)
			return nil, err
		case e.failErr != nil && now.Before(e.failTill):
			if s := c.staleLocked(e, now); s != nil {
				c.mu.Unlock()
				return s, nil
			}
			err := e.failErr
			c.mu.Unlock()
			c.hits.Add(1)
			return nil, err
		case e.failErr != nil:
			// The outage was seen more than ErrorTTL ago. Keep serving the copy without waiting, and
			// ask the source again in the background; its answer (the key, "not found", or another
			// failure) decides what the next call gets.
			if s := c.staleLocked(e, now); s != nil {
				if c.inflight[name] == nil {
					c.startFetchLocked(ctx, name)
				}
				c.mu.Unlock()
				return s, nil
			}
		}
	}
	c.misses.Add(1)
	cl := c.inflight[name]
	if cl == nil {
		cl = c.startFetchLocked(ctx, name)
	}
	cl.waiters++
	c.mu.Unlock()

	select {
	case <-cl.done:
	case <-ctx.Done():
		c.mu.Lock()
		c.leaveLocked(cl)
		c.mu.Unlock()
		return nil, &opError{op: "secret", name: name, cause: ctx.Err()}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := bytes.Clone(cl.secret)
	c.leaveLocked(cl)
	if cl.err != nil {
		return nil, cl.err
	}
	return s, nil
}

// startFetchLocked starts fetching name in its own goroutine, with a context that carries ctx's values but
// that no single waiter can cancel (Close does).
func (c *Cache) startFetchLocked(ctx context.Context, name string) *call {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cl := &call{done: make(chan struct{}), cancel: cancel}
	c.inflight[name] = cl
	c.fetches.Add(1)
	go c.fetch(fctx, name, cl)
	return cl
}

// leaveLocked drops one waiter from cl and zeroes the call's copy after the last one.
func (c *Cache) leaveLocked(cl *call) {
	cl.waiters--
	if cl.waiters == 0 {
		select {
		case <-cl.done:
			clear(cl.secret)
			cl.secret = nil
		default: // still running; fetch sees no waiters and drops the copy itself
		}
	}
}

// staleLocked returns a copy of e's secret if it may be served although expired: the last failure was
// ErrUnavailable and the secret is younger than staleTTL. It logs once per outage.
func (c *Cache) staleLocked(e *entry, now time.Time) []byte {
	if !c.staleOK(e, now) {
		return nil
	}
	c.stale.Add(1)
	return bytes.Clone(e.secret)
}

// staleOK reports whether e's secret may be served although expired.
func (c *Cache) staleOK(e *entry, now time.Time) bool {
	return e.secret != nil && errors.Is(e.failErr, ErrUnavailable) && now.Sub(e.fetched) < max(c.staleTTL, c.hitTTL)
}

// fetch asks the source and records the outcome. It runs in its own goroutine with a context that no
// single waiter can cancel; the source bounds its own time (Client uses Config.Timeout).
func (c *Cache) fetch(ctx context.Context, name string, cl *call) {
	secret, err := c.src.Secret(ctx, name)
	cl.cancel()

	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inflight, name)
	defer close(cl.done)
	if c.closed {
		clear(secret)
		cl.err = &opError{op: "secret", name: name, kind: ErrClosed}
		return
	}
	now := c.now()
	e := c.entries[name]
	switch {
	case err == nil:
		if e != nil {
			clear(e.secret)
			if e.warned {
				c.log.Info("kms: key server answers again; cached secret refreshed", "name", name)
			}
		}
		if c.hitTTL > 0 {
			c.entries[name] = &entry{secret: secret, fetched: now}
			c.evictLocked()
			cl.secret = bytes.Clone(secret)
		} else {
			delete(c.entries, name)
			cl.secret = secret
		}
	case errors.Is(err, ErrKeyNotFound):
		clear(secret)
		if e != nil {
			clear(e.secret)
		}
		if c.missTTL > 0 {
			c.entries[name] = &entry{notFound: err, negUntil: now.Add(c.missTTL)}
		} else {
			delete(c.entries, name)
		}
		cl.err = err
	default:
		clear(secret)
		if e == nil {
			e = &entry{}
			c.entries[name] = e
		}
		e.failErr, e.failTill = err, now.Add(c.errTTL)
		if c.staleOK(e, now) {
			if cl.waiters > 0 { // else a background refresh: nobody to hand a copy to
				cl.secret = c.staleLocked(e, now)
			}
			if !e.warned {
				e.warned = true
				c.log.Warn("kms: key server unavailable; serving cached secret", "name", name,
					"age", now.Sub(e.fetched).Round(time.Second), "err", err)
			}
		} else {
			cl.err = err
		}
	}
	if cl.waiters == 0 {
		clear(cl.secret)
		cl.secret = nil
	}
	c.sweepLocked(now)
}

// sweepLocked evicts (and zeroes) what can no longer be served, at most once per sweepEvery.
func (c *Cache) sweepLocked(now time.Time) {
	if now.Sub(c.lastSweep) < sweepEvery {
		return
	}
	c.lastSweep = now
	for name, e := range c.entries {
		if e.secret != nil && now.Sub(e.fetched) >= max(c.hitTTL, c.staleTTL) {
			clear(e.secret)
			e.secret = nil
		}
		if e.secret == nil && !now.Before(e.negUntil) && !now.Before(e.failTill) {
			delete(c.entries, name)
		}
	}
}

// evictLocked keeps the cache within maxEntries by evicting the oldest secrets.
func (c *Cache) evictLocked() {
	for len(c.entries) > maxEntries {
		var oldest string
		var t time.Time
		for name, e := range c.entries {
			if oldest == "" || e.fetched.Before(t) {
				oldest, t = name, e.fetched
			}
		}
		clear(c.entries[oldest].secret)
		delete(c.entries, oldest)
	}
}

// Forget drops and zeroes what the cache holds for name, so the next Secret fetches it again; fs calls it
// when a key id is set, so a key created a moment ago is not hidden by a remembered "not found".
func (c *Cache) Forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[name]; e != nil {
		clear(e.secret)
		delete(c.entries, name)
	}
}

// Close zeroes every cached secret and cancels fetches in flight; later calls return ErrClosed. It does
// not close the source.
func (c *Cache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	for name, e := range c.entries {
		clear(e.secret)
		delete(c.entries, name)
	}
	for _, cl := range c.inflight {
		cl.cancel()
	}
}

// String is for debugging; it prints counts, never secrets.
func (c *Cache) String() string {
	s := c.Stats()
	return fmt.Sprintf("kms.Cache{hits: %d, misses: %d, fetches: %d, stale: %d}", s.Hits, s.Misses, s.Fetches, s.Stale)
}
