package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kmipfs/kmipfs/fs"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The metrics read from fs.Stats, kms.ClientStats and kms.CacheStats at each scrape. Labels are
// only operation names: never file names, bucket names or key ids (secrecy, and a label value per
// file would make a series per file).
var (
	descFuseDuration = desc("kmipfs_fuse_request_duration_seconds",
		"Time kmipfs took to answer FUSE requests, by operation; the _count is the number of requests.", "op")
	descFuseErrors = desc("kmipfs_fuse_request_errors_total",
		"FUSE requests answered with an error, by operation (ENOENT from a lookup of a missing name included).", "op")
	descReadBytes    = desc("kmipfs_fuse_read_bytes_total", "File data read through the mount.")
	descWrittenBytes = desc("kmipfs_fuse_written_bytes_total", "File data written through the mount.")
	descDirtyBytes   = desc("kmipfs_dirty_bytes", "File data written but not yet stored (whole 4 KiB blocks).")
	descDirtyFiles   = desc("kmipfs_dirty_files", "Files holding data that is not yet stored.")
	descOpenFiles    = desc("kmipfs_open_files", "Files with a data state: open, or holding data the store refused.")
	descFlushes      = desc("kmipfs_flushes_total", "Dirty buffers written to the store and committed.")
	descFlushErrors  = desc("kmipfs_flush_errors_total", "Flushes that failed; their data stays in memory and is retried.")
	descFlushedBytes = desc("kmipfs_flushed_bytes_total", "Sealed (encrypted) bytes stored by flushes.")
	descGCDeleted    = desc("kmipfs_gc_objects_deleted_total", "Superseded or freed objects deleted from the store.")
	descGCErrors     = desc("kmipfs_gc_delete_errors_total", "Object deletes that failed; the objects stay queued for the next mount.")
	descGCPending    = desc("kmipfs_gc_pending_objects", "Objects queued for deletion.")
	descOrphansRel   = desc("kmipfs_orphans_released_total", "Unlinked inodes released after their last use.")
	descOrphansPend  = desc("kmipfs_orphans_pending", "Unlinked inodes still open or known to the kernel.")
	descMetaHits     = desc("kmipfs_meta_cache_hits_total", "Metadata lookups (inode, entry, xattr) answered from the read cache.")
	descMetaMisses   = desc("kmipfs_meta_cache_misses_total", "Metadata lookups that read the database.")
	descMetaEntries  = desc("kmipfs_meta_cache_entries", "Records in the metadata read cache.")

	descKMIPRequests = desc("kmipfs_kmip_requests_total",
		"Requests sent to the KMIP server (retries included), by operation.", "op")
	descKMIPErrors      = desc("kmipfs_kmip_errors_total", "KMIP calls that returned an error.")
	descKMIPConnections = desc("kmipfs_kmip_connections_total", "TLS connections dialed to the KMIP server (failed ones included).")
	descKeyHits         = desc("kmipfs_key_cache_hits_total", "Key lookups answered from the key cache.")
	descKeyMisses       = desc("kmipfs_key_cache_misses_total", "Key lookups that waited for a KMIP fetch.")
	descKeyFetches      = desc("kmipfs_key_cache_fetches_total", "Fetches of a key from the KMIP server.")
	descKeyStale        = desc("kmipfs_key_cache_stale_total", "Key lookups answered with an expired key because the KMIP server was unavailable.")
	descKeyEntries      = desc("kmipfs_key_cache_entries", "Key names in the key cache.")
)

// collector turns one snapshot of each source into constant metrics at every scrape, so the
// counters stay plain atomics in their packages and a scrape sees one consistent fs.Stats.
type collector struct{ src Sources }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFuseDuration, descFuseErrors, descReadBytes, descWrittenBytes,
		descDirtyBytes, descDirtyFiles, descOpenFiles, descFlushes, descFlushErrors, descFlushedBytes,
		descGCDeleted, descGCErrors, descGCPending, descOrphansRel, descOrphansPend, descMetaHits,
		descMetaMisses, descMetaEntries, descKMIPRequests, descKMIPErrors, descKMIPConnections,
		descKeyHits, descKeyMisses, descKeyFetches, descKeyStale, descKeyEntries} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	if c.src.FS != nil {
		s := c.src.FS.Stats()
		for _, o := range s.Ops {
			buckets := make(map[float64]uint64, len(fs.LatencyBuckets))
			for i, le := range fs.LatencyBuckets {
				buckets[le] = o.Buckets[i]
			}
			ch <- prometheus.MustNewConstHistogram(descFuseDuration, o.Count, o.Seconds, buckets, o.Op.String())
			counter(descFuseErrors, float64(o.Errors), o.Op.String())
		}
		counter(descReadBytes, float64(s.ReadBytes))
		counter(descWrittenBytes, float64(s.WrittenBytes))
		gauge(descDirtyBytes, float64(s.DirtyBytes))
		gauge(descDirtyFiles, float64(s.DirtyFiles))
		gauge(descOpenFiles, float64(s.OpenFiles))
		counter(descFlushes, float64(s.Flushes))
		counter(descFlushErrors, float64(s.FlushErrors))
		counter(descFlushedBytes, float64(s.FlushedBytes))
		counter(descGCDeleted, float64(s.GCDeleted))
		counter(descGCErrors, float64(s.GCErrors))
		gauge(descGCPending, float64(s.GCPending))
		counter(descOrphansRel, float64(s.OrphansReleased))
		gauge(descOrphansPend, float64(s.OrphansPending))
		counter(descMetaHits, float64(s.Meta.Hits))
		counter(descMetaMisses, float64(s.Meta.Misses))
		gauge(descMetaEntries, float64(s.Meta.Entries))
	}
	if c.src.KMS != nil {
		s := c.src.KMS.Stats()
		counter(descKMIPRequests, float64(s.Locate), "locate")
		counter(descKMIPRequests, float64(s.Get), "get")
		counter(descKMIPRequests, float64(s.Create), "create")
		counter(descKMIPRequests, float64(s.Activate), "activate")
		counter(descKMIPRequests, float64(s.Discover), "discover_versions")
		counter(descKMIPRequests, float64(s.Other), "other")
		counter(descKMIPErrors, float64(s.Errors))
		counter(descKMIPConnections, float64(s.Dials))
	}
	if c.src.KeyCache != nil {
		s := c.src.KeyCache.Stats()
		counter(descKeyHits, float64(s.Hits))
		counter(descKeyMisses, float64(s.Misses))
		counter(descKeyFetches, float64(s.Fetches))
		counter(descKeyStale, float64(s.Stale))
		gauge(descKeyEntries, float64(s.Entries))
	}
}
