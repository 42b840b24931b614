package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmipfs/kmipfs/objstore"
)

// storeOp is an operation of objstore.Store or one of its optional abilities.
type storeOp int

const (
	opCreateBucket storeOp = iota
	opDeleteBucket
	opPut
	opGet
	opStat
	opDelete
	opList
	opSync
	opBuckets
	numStoreOps
)

var storeOpNames = [numStoreOps]string{"create_bucket", "delete_bucket", "put", "get", "stat", "delete", "list", "sync", "buckets"}

// storeBuckets are the latency buckets of store requests, in seconds: a local put of a small
// object takes well under a millisecond, a 16 MiB put to a remote S3 seconds.
var storeBuckets = []float64{0.001, 0.01, 0.1, 1, 10}

// storeMetrics are the instruments of one decorated store, resolved per operation up front so a
// request costs an Observe and, on failure, an Inc: no label lookup, no allocation.
type storeMetrics struct {
	latency  [numStoreOps]prometheus.Observer
	notFound [numStoreOps]prometheus.Counter
	failed   [numStoreOps]prometheus.Counter
	putBytes prometheus.Counter
	getBytes prometheus.Counter
}

func newStoreMetrics(reg prometheus.Registerer) *storeMetrics {
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kmipfs_store_request_duration_seconds",
		Help:    "Time of object store requests by operation, failed ones included; the _count is the number of requests.",
		Buckets: storeBuckets,
	}, []string{"op"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmipfs_store_request_errors_total",
		Help: `Object store requests that returned an error, by operation and kind: "not_found" (a missing object or bucket, often an expected answer) or "failed" (everything else).`,
	}, []string{"op", "kind"})
	m := &storeMetrics{
		putBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kmipfs_store_put_bytes_total",
			Help: "Bytes of ciphertext objects the object store accepted.",
		}),
		getBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kmipfs_store_get_bytes_total",
			Help: "Bytes of ciphertext read from the object store.",
		}),
	}
	reg.MustRegister(lat, errs, m.putBytes, m.getBytes)
	for op := range numStoreOps {
		m.latency[op] = lat.WithLabelValues(storeOpNames[op])
		m.notFound[op] = errs.WithLabelValues(storeOpNames[op], "not_found")
		m.failed[op] = errs.WithLabelValues(storeOpNames[op], "failed")
	}
	return m
}

// done records one request of op that started at start and returned err.
func (m *storeMetrics) done(op storeOp, start time.Time, err error) {
	m.latency[op].Observe(time.Since(start).Seconds())
	switch {
	case err == nil:
	case errors.Is(err, objstore.ErrNotFound), errors.Is(err, objstore.ErrBucketNotFound):
		m.notFound[op].Inc()
	default:
		m.failed[op].Inc()
	}
}

// Store is an objstore.Store decorator that counts requests, errors, latency and bytes per
// operation. The value that WrapStore returns also has exactly the optional abilities
// (objstore.Syncer, objstore.BucketLister) of the store it wraps, so the callers' type
// assertions find what the backend really can do.
type Store struct {
	objstore.Store
	m *storeMetrics
}

var _ objstore.Store = (*Store)(nil)

// Unwrap returns the decorated Store.
func (s *Store) Unwrap() objstore.Store { return s.Store }

// CreateBucket implements objstore.Store.
func (s *Store) CreateBucket(ctx context.Context, bucket string) error {
	start := time.Now()
	err := s.Store.CreateBucket(ctx, bucket)
	s.m.done(opCreateBucket, start, err)
	return err
}

// DeleteBucket implements objstore.Store.
func (s *Store) DeleteBucket(ctx context.Context, bucket string) error {
	start := time.Now()
	err := s.Store.DeleteBucket(ctx, bucket)
	s.m.done(opDeleteBucket, start, err)
	return err
}

// Put implements objstore.Store.
func (s *Store) Put(ctx context.Context, bucket, key string, data []byte) error {
	start := time.Now()
	err := s.Store.Put(ctx, bucket, key, data)
	s.m.done(opPut, start, err)
	if err == nil {
		s.m.putBytes.Add(float64(len(data)))
	}
	return err
}

// Get implements objstore.Store.
func (s *Store) Get(ctx context.Context, bucket, key string, off, length int64) ([]byte, error) {
	start := time.Now()
	data, err := s.Store.Get(ctx, bucket, key, off, length)
	s.m.done(opGet, start, err)
	s.m.getBytes.Add(float64(len(data)))
	return data, err
}

// Stat implements objstore.Store.
func (s *Store) Stat(ctx context.Context, bucket, key string) (objstore.Info, error) {
	start := time.Now()
	info, err := s.Store.Stat(ctx, bucket, key)
	s.m.done(opStat, start, err)
	return info, err
}

// Delete implements objstore.Store.
func (s *Store) Delete(ctx context.Context, bucket, key string) error {
	start := time.Now()
	err := s.Store.Delete(ctx, bucket, key)
	s.m.done(opDelete, start, err)
	return err
}

// List implements objstore.Store. Its time includes fn's.
func (s *Store) List(ctx context.Context, bucket, prefix string, fn func(objstore.Info) error) error {
	start := time.Now()
	err := s.Store.List(ctx, bucket, prefix, fn)
	s.m.done(opList, start, err)
	return err
}

func (s *Store) sync(ctx context.Context) error {
	start := time.Now()
	err := s.Store.(objstore.Syncer).Sync(ctx)
	s.m.done(opSync, start, err)
	return err
}

func (s *Store) buckets(ctx context.Context) ([]string, error) {
	start := time.Now()
	names, err := s.Store.(objstore.BucketLister).Buckets(ctx)
	s.m.done(opBuckets, start, err)
	return names, err
}

// The variants of Store with the optional abilities of the wrapped store.
type (
	syncStore     struct{ *Store }
	listStore     struct{ *Store }
	syncListStore struct{ *Store }
)

var (
	_ objstore.Syncer       = syncStore{}
	_ objstore.BucketLister = listStore{}
	_ objstore.Syncer       = syncListStore{}
	_ objstore.BucketLister = syncListStore{}
)

// Sync implements objstore.Syncer.
func (s syncStore) Sync(ctx context.Context) error { return s.sync(ctx) }

// Buckets implements objstore.BucketLister.
func (s listStore) Buckets(ctx context.Context) ([]string, error) { return s.buckets(ctx) }

// Sync implements objstore.Syncer.
func (s syncListStore) Sync(ctx context.Context) error { return s.sync(ctx) }

// Buckets implements objstore.BucketLister.
func (s syncListStore) Buckets(ctx context.Context) ([]string, error) { return s.buckets(ctx) }

// wrapStore returns s decorated with m, with s's optional abilities.
func wrapStore(s objstore.Store, m *storeMetrics) objstore.Store {
	w := &Store{Store: s, m: m}
	_, canSync := s.(objstore.Syncer)
	_, canList := s.(objstore.BucketLister)
	switch {
	case canSync && canList:
		return syncListStore{w}
	case canSync:
		return syncStore{w}
	case canList:
		return listStore{w}
	}
	return w
}
