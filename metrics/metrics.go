package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kmipfs/kmipfs/fs"
	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/objstore"
)

// Registry holds the metrics of one mount and serves them.
type Registry struct {
	reg   *prometheus.Registry
	store *storeMetrics
}

// New returns a Registry with the Go runtime and process metrics, the object store metrics (fed
// by the stores that WrapStore returns) and kmipfs_build_info for version.
func New(version string) *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "kmipfs_build_info",
			Help:        "Always 1; the version label is the kmipfs version.",
			ConstLabels: prometheus.Labels{"version": version},
		}, func() float64 { return 1 }),
	)
	return &Registry{reg: reg, store: newStoreMetrics(reg)}
}

// WrapStore returns s decorated to count its requests (see Store).
func (r *Registry) WrapStore(s objstore.Store) objstore.Store { return wrapStore(s, r.store) }

// Sources are the parts of a mount whose counters are exported; a nil one is left out.
type Sources struct {
	FS       interface{ Stats() fs.Stats }
	KMS      interface{ Stats() kms.ClientStats }
	KeyCache interface{ Stats() kms.CacheStats }
}

// Watch exports the counters of src, read at every scrape.
func (r *Registry) Watch(src Sources) {
	r.reg.MustRegister(&collector{src: src})
}

// Handler serves the metrics in the Prometheus exposition formats.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg})
}

// Gatherer returns the underlying registry, for tests and other exporters.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }
