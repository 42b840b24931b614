package tests

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape fetches the Prometheus text exposition at http://addr/metrics and returns every sample,
// keyed by its name and labels as printed ("kmipfs_store_request_duration_seconds_count{op=\"put\"}").
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	samples := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("scrape: a sample line that is not NAME VALUE: %q", line)
		}
		samples[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return samples
}

// gatedReader yields left bytes of a pattern and, after every step bytes but the last, sends on
// paused and waits for next: a copy the test can look at halfway.
type gatedReader struct {
	left, sinceGate, step int
	paused, next          chan struct{}
}

func (r *gatedReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if r.sinceGate == r.step {
		r.paused <- struct{}{}
		<-r.next
		r.sinceGate = 0
	}
	n := min(len(p), r.left, r.step-r.sinceGate)
	for i := range n {
		p[i] = byte(r.left - i)
	}
	r.left -= n
	r.sinceGate += n
	return n, nil
}

// TestMetricsDuringCopy: with [metrics] addr set, the endpoint serves while a copy into the mount
// is under way, and the counters move between two scrapes of the same copy: FUSE write requests
// and bytes, dirty data, then store puts and flushes once the buffer passes its threshold, KMIP
// requests and key cache lookups; reading the file back moves the read side. No label or value
// names a file, a bucket or a key id.
func TestMetricsDuringCopy(t *testing.T) {
	o := startOpsMount(t, "[metrics]\naddr = \"127.0.0.1:0\"\n")
	s, _ := o.status(t)
	addr := s.Metrics.Addr
	if addr == "" {
		t.Fatalf("kmipfs status shows no metrics address with [metrics] addr set")
	}
	before := scrape(t, addr)
	b := o.bucket(t, "metered")
	dst, err := os.Create(filepath.Join(b, "copy.bin"))
	must(t, err)

	const step = 6 << 20 // under the 16 MiB flush threshold: the first pause holds dirty data
	src := &gatedReader{left: 30 << 20, step: step, paused: make(chan struct{}), next: make(chan struct{})}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(dst, src)
		copied <- err
	}()

	// Two looks into the same copy, 6 MiB apart.
	<-src.paused
	mid1 := scrape(t, addr)
	src.next <- struct{}{}
	<-src.paused
	mid2 := scrape(t, addr)
	src.next <- struct{}{}
	<-src.paused // 18 MiB in
	src.next <- struct{}{}
	<-src.paused
	mid3 := scrape(t, addr) // 24 MiB in: the 16 MiB buffer has gone to the store
	src.next <- struct{}{}  // the last 6 MiB: no gate before the end
	must(t, <-copied)
	must(t, dst.Close())
	after := scrape(t, addr)

	written := `kmipfs_fuse_written_bytes_total`
	writes := `kmipfs_fuse_request_duration_seconds_count{op="write"}`
	puts := `kmipfs_store_request_duration_seconds_count{op="put"}`
	if d := mid1[written] - before[written]; d < step {
		t.Errorf("after %d bytes of the copy, %s moved by %.0f", step, written, d)
	}
	if d := mid2[written] - mid1[written]; d < step {
		t.Errorf("between two scrapes %d bytes apart, %s moved by %.0f", step, written, d)
	}
	if mid2[writes] <= mid1[writes] {
		t.Errorf("%s did not move during the copy: %v then %v", writes, mid1[writes], mid2[writes])
	}
	if mid1["kmipfs_dirty_bytes"] < step || mid1["kmipfs_dirty_files"] != 1 {
		t.Errorf("halfway through the copy: dirty bytes %v files %v, want at least %d and 1",
			mid1["kmipfs_dirty_bytes"], mid1["kmipfs_dirty_files"], step)
	}
	if mid3[puts] <= mid1[puts] || mid3["kmipfs_flushes_total"] <= mid1["kmipfs_flushes_total"] {
		t.Errorf("the copy passed the flush threshold but store puts (%v then %v) or flushes (%v then %v) did not move",
			mid1[puts], mid3[puts], mid1["kmipfs_flushes_total"], mid3["kmipfs_flushes_total"])
	}
	if after["kmipfs_dirty_bytes"] != 0 || after["kmipfs_dirty_files"] != 0 {
		t.Errorf("after close: dirty bytes %v files %v", after["kmipfs_dirty_bytes"], after["kmipfs_dirty_files"])
	}
	if after["kmipfs_store_put_bytes_total"] <= 30<<20 || after["kmipfs_flushed_bytes_total"] <= 30<<20 {
		t.Errorf("after a 30 MiB copy: store put bytes %v, flushed bytes %v; want more than the plaintext",
			after["kmipfs_store_put_bytes_total"], after["kmipfs_flushed_bytes_total"])
	}
	kmip := after[`kmipfs_kmip_requests_total{op="locate"}`] + after[`kmipfs_kmip_requests_total{op="get"}`]
	if kmip < 1 || after["kmipfs_key_cache_misses_total"] < 1 || after["kmipfs_key_cache_entries"] < 1 {
		t.Errorf("after creating a file under a new key: KMIP locate+get %v, key cache misses %v, entries %v",
			kmip, after["kmipfs_key_cache_misses_total"], after["kmipfs_key_cache_entries"])
	}
	if after[`kmipfs_fuse_request_duration_seconds_count{op="create"}`] < 1 || after[`kmipfs_fuse_request_duration_seconds_count{op="flush"}`] < 1 {
		t.Errorf("create and flush (close) requests not counted")
	}

	// Reading back: a fresh open misses the page cache and goes through FUSE to the store.
	got, err := os.ReadFile(filepath.Join(b, "copy.bin"))
	must(t, err)
	if len(got) != 30<<20 {
		t.Fatalf("read back %d bytes, want %d", len(got), 30<<20)
	}
	read := scrape(t, addr)
	if d := read["kmipfs_fuse_read_bytes_total"] - after["kmipfs_fuse_read_bytes_total"]; d < 1<<20 {
		t.Errorf("reading 30 MiB back moved kmipfs_fuse_read_bytes_total by %.0f", d)
	}
	if read["kmipfs_store_get_bytes_total"] <= after["kmipfs_store_get_bytes_total"] {
		t.Errorf("reading back fetched nothing from the store: get bytes %v then %v",
			after["kmipfs_store_get_bytes_total"], read["kmipfs_store_get_bytes_total"])
	}

	// Nothing in the exposition names the bucket, the file or the key id.
	resp, err := http.Get("http://" + addr + "/metrics")
	must(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(t, err)
	for _, name := range []string{"metered", "copy.bin", keyA} {
		if bytes.Contains(body, []byte(name)) {
			t.Errorf("the metrics mention %q", name)
		}
	}

	// The endpoint goes away with the mount.
	o.proc.stop(t)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("the metrics port %s still accepts connections after unmount", addr)
	}
}

// TestMetricsPortTaken: a metrics address that is in use stops the mount before anything is
// opened, with exit status non-zero and a line naming the option and the address.
func TestMetricsPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer ln.Close()
	dir := t.TempDir()
	k := startKMSServer(t, filepath.Join(dir, "kms"))
	cfg := kConfig(t, dir, k.clientConfig(""), "kmipfs-$keyid", "[metrics]\naddr = \""+ln.Addr().String()+"\"\n")
	mnt := filepath.Join(dir, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	out, code := kRun(t, kmipfsBin, "mount", "--config", cfg, mnt)
	if code == 0 || !strings.Contains(out, "metrics.addr") || !strings.Contains(out, ln.Addr().String()) {
		t.Errorf("mount with the metrics port taken: exit %d, want non-zero naming metrics.addr and %s\n%s", code, ln.Addr(), out)
	}
	if isMounted(mnt) {
		t.Errorf("%s is mounted although start-up failed", mnt)
	}
}
