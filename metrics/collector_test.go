package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kmipfs/kmipfs/fs"
	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/metrics"
)

type fakeFS struct{ s fs.Stats }

func (f fakeFS) Stats() fs.Stats { return f.s }

type fakeKMS struct{}

func (fakeKMS) Stats() kms.ClientStats {
	return kms.ClientStats{Locate: 2, Get: 3, Errors: 1, Dials: 4}
}

type fakeCache struct{}

func (fakeCache) Stats() kms.CacheStats { return kms.CacheStats{Hits: 10, Misses: 2, Entries: 1} }

// TestCollector: every source's values come out under their names, and the metrics pass the
// Prometheus linter (units in names, _total on counters, help strings).
func TestCollector(t *testing.T) {
	var s fs.Stats
	for op := range fs.NumOps {
		s.Ops[op].Op = op
	}
	s.Ops[fs.OpWrite].Count, s.Ops[fs.OpWrite].Seconds = 7, 0.5
	s.Ops[fs.OpWrite].Buckets = [len(fs.LatencyBuckets)]uint64{1, 2, 3, 4, 5, 6}
	s.WrittenBytes, s.DirtyBytes, s.GCPending = 4096, 8192, 3
	r := metrics.New("test")
	r.Watch(metrics.Sources{FS: fakeFS{s}, KMS: fakeKMS{}, KeyCache: fakeCache{}})
	problems, err := testutil.GatherAndLint(r.Gatherer())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "kmipfs_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
	want := `
# HELP kmipfs_fuse_written_bytes_total File data written through the mount.
# TYPE kmipfs_fuse_written_bytes_total counter
kmipfs_fuse_written_bytes_total 4096
# HELP kmipfs_dirty_bytes File data written but not yet stored (whole 4 KiB blocks).
# TYPE kmipfs_dirty_bytes gauge
kmipfs_dirty_bytes 8192
# HELP kmipfs_gc_pending_objects Objects queued for deletion.
# TYPE kmipfs_gc_pending_objects gauge
kmipfs_gc_pending_objects 3
# HELP kmipfs_kmip_requests_total Requests sent to the KMIP server (retries included), by operation.
# TYPE kmipfs_kmip_requests_total counter
kmipfs_kmip_requests_total{op="activate"} 0
kmipfs_kmip_requests_total{op="create"} 0
kmipfs_kmip_requests_total{op="discover_versions"} 0
kmipfs_kmip_requests_total{op="get"} 3
kmipfs_kmip_requests_total{op="locate"} 2
kmipfs_kmip_requests_total{op="other"} 0
# HELP kmipfs_key_cache_hits_total Key lookups answered from the key cache.
# TYPE kmipfs_key_cache_hits_total counter
kmipfs_key_cache_hits_total 10
`
	if err := testutil.GatherAndCompare(r.Gatherer(), strings.NewReader(want),
		"kmipfs_fuse_written_bytes_total", "kmipfs_dirty_bytes", "kmipfs_gc_pending_objects",
		"kmipfs_kmip_requests_total", "kmipfs_key_cache_hits_total"); err != nil {
		t.Error(err)
	}
	fams, err := r.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "kmipfs_fuse_request_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() == "write" {
				h := m.GetHistogram()
				if h.GetSampleCount() != 7 || h.GetSampleSum() != 0.5 || len(h.GetBucket()) != len(fs.LatencyBuckets) {
					t.Errorf("write histogram: %v", h)
				}
				return
			}
		}
	}
	t.Error("no kmipfs_fuse_request_duration_seconds{op=\"write\"}")
}
