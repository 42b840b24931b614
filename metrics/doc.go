// Package metrics exports a mount's counters to Prometheus: FUSE requests by operation (count,
// latency, errors) and bytes through the mount, dirty data, flushes, GC work and the metadata
// read cache (from fs.Stats), KMIP requests and the key cache (from kms), and object store
// requests (from the Store decorator of WrapStore). docs/OPERATIONS.md lists every metric.
//
// The packages below keep plain atomic counters and know nothing of Prometheus; a collector reads
// them at each scrape. Only the store decorator, which sits on the request path anyway, uses
// Prometheus instruments, resolved per operation up front so that a request costs no label lookup
// and no allocation. No label carries a file name, bucket name or key id.
package metrics
