package s3_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kmipfs/kmipfs/objstore"
	"github.com/kmipfs/kmipfs/objstore/s3"
	"github.com/kmipfs/kmipfs/objstore/s3/s3test"
	"github.com/kmipfs/kmipfs/objstore/storetest"
)

// open returns the store a mount would use (Open: backend, Limit, Retry) for cfg.
func open(t testing.TB, cfg s3.Config) objstore.Store {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	s, err := s3.Open(cfg, s3.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// TestStore runs the conformance suite against versitygw, one server for all subtests, wiped before each.
func TestStore(t *testing.T) {
	srv := s3test.Start(t)
	storetest.Run(t, func(t *testing.T) objstore.Store {
		if err := srv.Wipe(); err != nil {
			t.Fatal(err)
		}
		return open(t, srv.Config(""))
	})
}

// TestStoreExternal runs the conformance suite against the server of KMIPFS_TEST_S3_ENDPOINT (for example the
// radosgw of scripts/ceph-rgw.sh), emptying its account before each subtest.
func TestStoreExternal(t *testing.T) {
	cfg, ok := s3test.External()
	if !ok {
		t.Skip("KMIPFS_TEST_S3_ENDPOINT is not set")
	}
	storetest.Run(t, func(t *testing.T) objstore.Store {
		if err := s3test.WipeAccount(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
		return open(t, cfg)
	})
}

func BenchmarkStore(b *testing.B) {
	srv := s3test.Start(b)
	storetest.Bench(b, func(b *testing.B) objstore.Store {
		if err := srv.Wipe(); err != nil {
			b.Fatal(err)
		}
		return open(b, srv.Config(""))
	})
}

// TestBucketPrefix checks the mapping of kmipfs bucket names onto a shared S3 namespace: short names work with a
// prefix, names too long with it are refused, and buckets without the prefix are neither listed nor touched.
func TestBucketPrefix(t *testing.T) {
	srv := s3test.Start(t)
	ctx := t.Context()
	bare := open(t, srv.Config(""))
	pre := open(t, srv.Config("kmipfs-"))
	// A foreign bucket with an object, and one that looks like ours to a store without the prefix.
	if err := bare.CreateBucket(ctx, "foreign"); err != nil {
		t.Fatal(err)
	}
	if err := bare.Put(ctx, "foreign", "theirs", []byte("not kmipfs's")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b2", "photos"} {
		if err := pre.CreateBucket(ctx, name); err != nil {
			t.Fatalf("CreateBucket(%q) with a prefix: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(srv.Root, "kmipfs-a")); err != nil {
		t.Fatalf("S3 bucket kmipfs-a: %v", err)
	}
	got, err := pre.(objstore.BucketLister).Buckets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b2", "photos"}; !slices.Equal(got, want) {
		t.Fatalf("Buckets with prefix = %q, want %q (no foreign bucket)", got, want)
	}
	if err := pre.Put(ctx, "a", "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if data, err := bare.Get(ctx, "kmipfs-a", "k", 0, -1); err != nil || string(data) != "v" {
		t.Fatalf("object through the bare store = %q, %v", data, err)
	}
	// The foreign bucket is invisible through the prefixed store.
	if _, err := pre.Stat(ctx, "foreign", "theirs"); !errors.Is(err, objstore.ErrBucketNotFound) {
		t.Fatalf("Stat of a foreign bucket through the prefix: %v, want ErrBucketNotFound", err)
	}
	// Too long with the prefix, too short without one.
	long := strings.Repeat("x", 63-len("kmipfs-")+1)
	err = pre.CreateBucket(ctx, long)
	if !errors.Is(err, objstore.ErrInvalidBucketName) || !strings.Contains(err.Error(), "bucket_prefix") {
		t.Fatalf("CreateBucket of a name too long with the prefix: %v, want ErrInvalidBucketName naming bucket_prefix", err)
	}
	if err := pre.CreateBucket(ctx, long[1:]); err != nil {
		t.Fatalf("CreateBucket of the longest name that fits: %v", err)
	}
	if err := bare.CreateBucket(ctx, "ab"); !errors.Is(err, objstore.ErrInvalidBucketName) {
		t.Fatalf("CreateBucket(\"ab\") without a prefix: %v, want ErrInvalidBucketName", err)
	}
	// A prefix that makes an IPv4 address of a name is refused.
	ip := open(t, srv.Config("10.0.0."))
	if err := ip.CreateBucket(ctx, "1"); !errors.Is(err, objstore.ErrInvalidBucketName) {
		t.Fatalf("CreateBucket that makes 10.0.0.1: %v, want ErrInvalidBucketName", err)
	}
	// The foreign object is untouched.
	if data, err := bare.Get(ctx, "foreign", "theirs", 0, -1); err != nil || string(data) != "not kmipfs's" {
		t.Fatalf("foreign object = %q, %v", data, err)
	}
}

// TestMultipart stores objects above the multipart threshold and checks them whole and in ranges.
func TestMultipart(t *testing.T) {
	srv := s3test.Start(t)
	ctx := t.Context()
	cfg := srv.Config("")
	cfg.MultipartThreshold, cfg.PartSize = s3.MinPartSize, s3.MinPartSize
	s := open(t, cfg)
	if err := s.CreateBucket(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{2*s3.MinPartSize + 12345, 3 * s3.MinPartSize} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*7 + i>>13)
		}
		if err := s.Put(ctx, "big", "obj", data); err != nil {
			t.Fatalf("Put of %d bytes: %v", size, err)
		}
		got, err := s.Get(ctx, "big", "obj", 0, -1)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get of a %d-byte multipart object: %d bytes, %v", size, len(got), err)
		}
		off := int64(s3.MinPartSize - 100)
		got, err = s.Get(ctx, "big", "obj", off, 200)
		if err != nil || !bytes.Equal(got, data[off:off+200]) {
			t.Fatalf("ranged Get across a part boundary: %d bytes, %v", len(got), err)
		}
		info, err := s.Stat(ctx, "big", "obj")
		if err != nil || info.Size != int64(size) {
			t.Fatalf("Stat = %+v, %v", info, err)
		}
	}
	// A multipart Put into a missing bucket fails cleanly.
	if err := s.Put(ctx, "nobucket", "obj", make([]byte, 2*s3.MinPartSize)); !errors.Is(err, objstore.ErrBucketNotFound) {
		t.Fatalf("multipart Put into a missing bucket: %v, want ErrBucketNotFound", err)
	}
}

// TestCreate checks the conditional create.
func TestCreate(t *testing.T) {
	srv := s3test.Start(t)
	ctx := t.Context()
	s := open(t, srv.Config(""))
	c, ok := s.(s3.Creator)
	if !ok {
		t.Fatal("the store Open returns is not an s3.Creator")
	}
	if err := s.CreateBucket(ctx, "cond"); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, "cond", "k", []byte("first")); err != nil {
		t.Fatalf("Create of a free key: %v", err)
	}
	if err := c.Create(ctx, "cond", "k", []byte("second")); !errors.Is(err, s3.ErrObjectExists) {
		t.Fatalf("Create of a taken key: %v, want ErrObjectExists", err)
	}
	if got, err := s.Get(ctx, "cond", "k", 0, -1); err != nil || string(got) != "first" {
		t.Fatalf("object after a refused Create = %q, %v", got, err)
	}
	if err := c.Create(ctx, "nobucket", "k", []byte("x")); !errors.Is(err, objstore.ErrBucketNotFound) {
		t.Fatalf("Create in a missing bucket: %v, want ErrBucketNotFound", err)
	}
}

// TestSyncer checks that the store is a no-op Syncer.
func TestSyncer(t *testing.T) {
	srv := s3test.Start(t)
	s := open(t, srv.Config(""))
	sy, ok := s.(objstore.Syncer)
	if !ok {
		t.Fatal("not an objstore.Syncer")
	}
	if err := sy.Sync(t.Context()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}
