package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

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

// TestDeleteBucketAfterRacingDeletes: two Deletes of the same key race (the fs layer's background collector
// and rmdir's own cleanup do this), and DeleteBucket follows as soon as one returns. versitygw's posix backend
// answers one Delete as done (or NoSuchKey) while the other is still removing the key's now empty parent
// directory, and then refuses DeleteBucket with BucketNotEmpty although the bucket holds no object. Both
// Deletes succeed, and so does DeleteBucket.
func TestDeleteBucketAfterRacingDeletes(t *testing.T) {
	eachServer(t, testDeleteBucketAfterRacingDeletes)
}

func testDeleteBucketAfterRacingDeletes(t *testing.T, cfg s3.Config) {
	st := open(t, cfg)
	ctx := t.Context()
	for i := range 50 {
		if err := st.CreateBucket(ctx, "race"); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("%032x/%d", i, i+1)
		if err := st.Put(ctx, "race", key, []byte("ciphertext")); err != nil {
			t.Fatal(err)
		}
		other := make(chan error, 1)
		go func() { other <- st.Delete(ctx, "race", key) }()
		if err := st.Delete(ctx, "race", key); err != nil {
			t.Fatalf("round %d: Delete: %v", i, err)
		}
		if err := st.DeleteBucket(ctx, "race"); err != nil {
			t.Fatalf("round %d: DeleteBucket of a bucket whose only object was deleted: %v", i, err)
		}
		// The other Delete may come after DeleteBucket.
		if err := <-other; err != nil && !errors.Is(err, objstore.ErrBucketNotFound) {
			t.Fatalf("round %d: the racing Delete: %v", i, err)
		}
	}
}

// eachServer runs fn against versitygw and, with KMIPFS_TEST_S3_ENDPOINT set, against that server too (its
// account emptied before and after), so that the behaviour of DeleteBucket is checked where servers differ.
func eachServer(t *testing.T, fn func(t *testing.T, cfg s3.Config)) {
	t.Run("versitygw", func(t *testing.T) { fn(t, s3test.Start(t).Config("")) })
	cfg, ok := s3test.External()
	if !ok {
		return
	}
	t.Run("external", func(t *testing.T) {
		if err := s3test.WipeAccount(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s3test.WipeAccount(context.Background(), cfg) })
		fn(t, cfg)
	})
}

// rawClient is an SDK client for cfg's server, to do what the Store never does (leave an upload unfinished).
func rawClient(t *testing.T, cfg s3.Config) *awss3.Client {
	t.Helper()
	sc, err := config.LoadSharedConfigProfile(t.Context(), "default", func(o *config.LoadSharedConfigOptions) {
		o.CredentialsFiles, o.ConfigFiles = []string{cfg.CredentialsFile}, []string{}
	})
	if err != nil {
		t.Fatal(err)
	}
	return awss3.New(awss3.Options{
		Region:       cfg.Region,
		BaseEndpoint: aws.String(cfg.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(sc.Credentials.AccessKeyID, sc.Credentials.SecretAccessKey, ""),
		// Ceph 16 does not know the SDK's default CRC32 trailers (as in s3.New).
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// TestDeleteBucketUnfinishedUpload: a multipart upload of a kmipfs key that its process never completed nor
// aborted (it died) does not keep DeleteBucket from deleting the otherwise empty bucket, and is gone with it;
// an object that is not kmipfs's keeps the bucket (ErrBucketNotEmpty) and stays.
func TestDeleteBucketUnfinishedUpload(t *testing.T) {
	eachServer(t, func(t *testing.T, cfg s3.Config) {
		ctx := t.Context()
		st := open(t, cfg)
		raw := rawClient(t, cfg)
		if err := st.CreateBucket(ctx, "upl"); err != nil {
			t.Fatal(err)
		}
		up, err := raw.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{
			Bucket: aws.String("upl"), Key: aws.String("0123456789abcdef0123456789abcdef/7"),
		})
		if err != nil {
			t.Fatal(err)
		}
		part := bytes.Repeat([]byte("c"), s3.MinPartSize)
		if _, err := raw.UploadPart(ctx, &awss3.UploadPartInput{
			Bucket: aws.String("upl"), Key: up.Key, UploadId: up.UploadId, PartNumber: aws.Int32(1),
			Body: bytes.NewReader(part), ContentLength: aws.Int64(int64(len(part))),
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := raw.PutObject(ctx, &awss3.PutObjectInput{
			Bucket: aws.String("upl"), Key: aws.String("Not kmipfs's.txt"), Body: strings.NewReader("theirs"),
		}); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteBucket(ctx, "upl"); !errors.Is(err, objstore.ErrBucketNotEmpty) {
			t.Fatalf("DeleteBucket of a bucket with a foreign object: %v, want ErrBucketNotEmpty", err)
		}
		if _, err := raw.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("upl"), Key: aws.String("Not kmipfs's.txt")}); err != nil {
			t.Fatalf("the foreign object after a refused DeleteBucket: %v", err)
		}
		if _, err := raw.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String("upl"), Key: aws.String("Not kmipfs's.txt")}); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteBucket(ctx, "upl"); err != nil {
			t.Fatalf("DeleteBucket of a bucket with only an unfinished kmipfs upload: %v", err)
		}
		names, err := st.(objstore.BucketLister).Buckets(ctx)
		if err != nil || slices.Contains(names, "upl") {
			t.Fatalf("Buckets after DeleteBucket = %q, %v", names, err)
		}
	})
}
