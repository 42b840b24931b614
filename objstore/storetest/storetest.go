package storetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kmipfs/kmipfs/objstore"
)

// Run runs the conformance suite against the Store that newStore returns. newStore is called once per subtest
// with that subtest's t and must return a new, empty Store (no buckets), releasing it with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) objstore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s objstore.Store)
	}{
		{"Bucket/Create", testBucketCreate},
		{"Bucket/Delete", testBucketDelete},
		{"Bucket/NotEmpty", testBucketNotEmpty},
		{"Bucket/InvalidNames", testBucketInvalidNames},
		{"Bucket/Lister", testBucketLister},
		{"PutGet/Whole", testPutGetWhole},
		{"PutGet/Ranges", testPutGetRanges},
		{"PutGet/Empty", testPutGetEmpty},
		{"PutGet/NegativeOffset", testNegativeOffset},
		{"Overwrite", testOverwrite},
		{"Missing/Object", testMissingObject},
		{"Missing/Bucket", testMissingBucket},
		{"Stat", testStat},
		{"Delete", testDelete},
		{"List/PrefixAndOrder", testListPrefixOrder},
		{"List/Empty", testListEmpty},
		{"List/StopOnError", testListStop},
		{"List/CallsStore", testListCallsStore},
		{"List/StaysInBucket", testListStaysInBucket},
		{"KeyPrefixCollision", testKeyCollision},
		{"Concurrent", testConcurrent},
		{"Large", testLarge},
		{"NoRetain", testNoRetain},
		{"InvalidKeys", testInvalidKeys},
		{"LongKey", testLongKey},
		{"Canceled", testCanceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

// payload returns deterministic test data for id: an 8-byte big-endian id followed by pseudo-random bytes, size
// bytes in all (at least 8). verifyPayload can check any complete payload without knowing its id in advance.
func payload(id uint64, size int) []byte {
	size = max(size, 8)
	buf := make([]byte, size)
	binary.BigEndian.PutUint64(buf, id)
	x := id*0x9e3779b97f4a7c15 + 1
	for i := 8; i < size; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		buf[i] = byte(x)
	}
	return buf
}

// payloadSize gives each id its own size, so that a torn or mixed object is detected by its length as well.
func payloadSize(id uint64) int { return 64 + int(id*7919%4000) }

// verifyPayload reports whether data is exactly payload(id, payloadSize(id)) for the id in its header.
func verifyPayload(data []byte) error {
	if len(data) < 8 {
		return fmt.Errorf("object of %d bytes is too short for a header", len(data))
	}
	id := binary.BigEndian.Uint64(data)
	if want := payload(id, payloadSize(id)); !bytes.Equal(data, want) {
		return fmt.Errorf("object with id %d: %d bytes, not the %d bytes that were written", id, len(data), len(want))
	}
	return nil
}

func mustCreateBucket(t testing.TB, s objstore.Store, bucket string) {
	t.Helper()
	if err := s.CreateBucket(t.Context(), bucket); err != nil {
		t.Fatalf("CreateBucket(%q): %v", bucket, err)
	}
}

func mustPut(t testing.TB, s objstore.Store, bucket, key string, data []byte) {
	t.Helper()
	if err := s.Put(t.Context(), bucket, key, data); err != nil {
		t.Fatalf("Put(%q, %q, %d bytes): %v", bucket, key, len(data), err)
	}
}

func mustGet(t testing.TB, s objstore.Store, bucket, key string, off, length int64) []byte {
	t.Helper()
	got, err := s.Get(t.Context(), bucket, key, off, length)
	if err != nil {
		t.Fatalf("Get(%q, %q, %d, %d): %v", bucket, key, off, length, err)
	}
	return got
}

func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want one wrapping %v", what, err, want)
	}
}

// listAll returns every object with the prefix, in the order List gave them.
func listAll(t testing.TB, s objstore.Store, bucket, prefix string) []objstore.Info {
	t.Helper()
	var got []objstore.Info
	err := s.List(t.Context(), bucket, prefix, func(info objstore.Info) error {
		got = append(got, info)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q, %q): %v", bucket, prefix, err)
	}
	return got
}

func keysOf(infos []objstore.Info) []string {
	keys := make([]string, len(infos))
	for i, info := range infos {
		keys[i] = info.Key
	}
	return keys
}

func buckets(t testing.TB, s objstore.Store) ([]string, bool) {
	t.Helper()
	bl, ok := s.(objstore.BucketLister)
	if !ok {
		return nil, false
	}
	names, err := bl.Buckets(t.Context())
	if err != nil {
		t.Fatalf("Buckets: %v", err)
	}
	return names, true
}

func testBucketCreate(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	mustCreateBucket(t, s, "alpha")
	wantErr(t, "CreateBucket of an existing bucket", s.CreateBucket(ctx, "alpha"), objstore.ErrBucketExists)
	// The bucket works and the failed create did not empty it.
	mustPut(t, s, "alpha", "k", []byte("v"))
	wantErr(t, "CreateBucket of an existing bucket", s.CreateBucket(ctx, "alpha"), objstore.ErrBucketExists)
	if got := mustGet(t, s, "alpha", "k", 0, -1); string(got) != "v" {
		t.Fatalf("Get after a refused CreateBucket = %q, want %q", got, "v")
	}
	mustCreateBucket(t, s, "beta")
	if _, err := s.Stat(ctx, "beta", "k"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Stat in a new bucket of a key from another bucket: %v, want ErrNotFound", err)
	}
}

func testBucketDelete(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	mustCreateBucket(t, s, "gamma")
	if err := s.DeleteBucket(ctx, "gamma"); err != nil {
		t.Fatalf("DeleteBucket: %v", err)
	}
	wantErr(t, "DeleteBucket twice", s.DeleteBucket(ctx, "gamma"), objstore.ErrBucketNotFound)
	wantErr(t, "DeleteBucket of a bucket never created", s.DeleteBucket(ctx, "never"), objstore.ErrBucketNotFound)
	wantErr(t, "Put into a deleted bucket", s.Put(ctx, "gamma", "k", []byte("v")), objstore.ErrBucketNotFound)
	// A deleted bucket can be created again, empty.
	mustCreateBucket(t, s, "gamma")
	if got := listAll(t, s, "gamma", ""); len(got) != 0 {
		t.Fatalf("recreated bucket lists %v, want nothing", keysOf(got))
	}
}

func testBucketNotEmpty(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	mustCreateBucket(t, s, "full")
	mustPut(t, s, "full", "x/y/z", []byte("deep"))
	mustPut(t, s, "full", "top", []byte("top"))
	wantErr(t, "DeleteBucket of a bucket with objects", s.DeleteBucket(ctx, "full"), objstore.ErrBucketNotEmpty)
	if got := mustGet(t, s, "full", "x/y/z", 0, -1); string(got) != "deep" {
		t.Fatalf("object after a refused DeleteBucket = %q, want %q", got, "deep")
	}
	if err := s.Delete(ctx, "full", "top"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantErr(t, "DeleteBucket with one object left", s.DeleteBucket(ctx, "full"), objstore.ErrBucketNotEmpty)
	if err := s.Delete(ctx, "full", "x/y/z"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := s.DeleteBucket(ctx, "full"); err != nil {
		t.Fatalf("DeleteBucket after deleting every object: %v", err)
	}
}

var invalidBucketNames = []string{
	"", strings.Repeat("a", 64), "Upper", "under_score", "sp ace", "a/b", "../etc", ".tmp", "-abc", "abc-",
	".abc", "abc.", "a..b", "192.168.5.4", "xn--abc", "abc-s3alias", "caf\u00e9",
}

func testBucketInvalidNames(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	for _, name := range invalidBucketNames {
		wantErr(t, fmt.Sprintf("CreateBucket(%q)", name), s.CreateBucket(ctx, name), objstore.ErrInvalidBucketName)
		wantErr(t, fmt.Sprintf("DeleteBucket(%q)", name), s.DeleteBucket(ctx, name), objstore.ErrInvalidBucketName)
		wantErr(t, fmt.Sprintf("Put(%q)", name), s.Put(ctx, name, "k", []byte("v")), objstore.ErrInvalidBucketName)
		_, err := s.Get(ctx, name, "k", 0, -1)
		wantErr(t, fmt.Sprintf("Get(%q)", name), err, objstore.ErrInvalidBucketName)
		_, err = s.Stat(ctx, name, "k")
		wantErr(t, fmt.Sprintf("Stat(%q)", name), err, objstore.ErrInvalidBucketName)
		wantErr(t, fmt.Sprintf("Delete(%q)", name), s.Delete(ctx, name, "k"), objstore.ErrInvalidBucketName)
		err = s.List(ctx, name, "", func(objstore.Info) error { return nil })
		wantErr(t, fmt.Sprintf("List(%q)", name), err, objstore.ErrInvalidBucketName)
	}
	if names, ok := buckets(t, s); ok && len(names) != 0 {
		t.Fatalf("Buckets after refused creates = %q, want none", names)
	}
	// The longest and shortest valid names work.
	for _, name := range []string{"abc", strings.Repeat("a", 63), "a.b-c", "1-2", "192.168.5", "xn-abc"} {
		mustCreateBucket(t, s, name)
	}
}

func testBucketLister(t *testing.T, s objstore.Store) {
	if _, ok := s.(objstore.BucketLister); !ok {
		t.Skip("the store does not implement objstore.BucketLister")
	}
	if names, _ := buckets(t, s); len(names) != 0 {
		t.Fatalf("Buckets of a new store = %q, want none", names)
	}
	for _, name := range []string{"mid", "zed", "abc", "a-1", "a.0"} {
		mustCreateBucket(t, s, name)
	}
	mustPut(t, s, "mid", "k", []byte("v")) // objects are not buckets
	want := []string{"a-1", "a.0", "abc", "mid", "zed"}
	if names, _ := buckets(t, s); !slices.Equal(names, want) {
		t.Fatalf("Buckets = %q, want %q", names, want)
	}
	if err := s.DeleteBucket(t.Context(), "abc"); err != nil {
		t.Fatalf("DeleteBucket: %v", err)
	}
	want = []string{"a-1", "a.0", "mid", "zed"}
	if names, _ := buckets(t, s); !slices.Equal(names, want) {
		t.Fatalf("Buckets after DeleteBucket = %q, want %q", names, want)
	}
}

func testPutGetWhole(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "data")
	for i, key := range []string{"plain", "0123456789abcdef0123456789abcdef/0000000000000001", "a/b/c/d", "A.b_c-D"} {
		data := payload(uint64(i), payloadSize(uint64(i)))
		mustPut(t, s, "data", key, data)
		if got := mustGet(t, s, "data", key, 0, -1); !bytes.Equal(got, data) {
			t.Fatalf("Get(%q) returned %d bytes that differ from the %d put", key, len(got), len(data))
		}
		if got := mustGet(t, s, "data", key, 0, int64(len(data))); !bytes.Equal(got, data) {
			t.Fatalf("Get(%q, 0, len) returned %d bytes that differ from the %d put", key, len(got), len(data))
		}
	}
}

func testPutGetRanges(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "ranges")
	data := payload(7, 10000)
	n := int64(len(data))
	mustPut(t, s, "ranges", "obj", data)
	tests := []struct {
		name        string
		off, length int64
		want        []byte
	}{
		{"whole", 0, -1, data},
		{"exact length", 0, n, data},
		{"first byte", 0, 1, data[:1]},
		{"middle", 4096, 4096, data[4096:8192]},
		{"tail to end", 8192, -1, data[8192:]},
		{"last byte", n - 1, 1, data[n-1:]},
		{"zero length", 100, 0, nil},
		{"length past end is short", n - 10, 100, data[n-10:]},
		{"huge length is short", 1, 1 << 60, data[1:]},
		{"off at end is empty", n, -1, nil},
		{"off at end with length", n, 10, nil},
		{"off beyond end is empty", n + 4096, 4096, nil},
		{"off far beyond end is empty", 1 << 50, -1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mustGet(t, s, "ranges", "obj", tc.off, tc.length)
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("Get(off=%d, length=%d) returned %d bytes, want %d bytes", tc.off, tc.length, len(got),
					len(tc.want))
			}
		})
	}
}

func testPutGetEmpty(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "empty")
	mustPut(t, s, "empty", "nil", nil)
	mustPut(t, s, "empty", "zero", []byte{})
	for _, key := range []string{"nil", "zero"} {
		if got := mustGet(t, s, "empty", key, 0, -1); len(got) != 0 {
			t.Fatalf("Get(%q) of an empty object = %d bytes", key, len(got))
		}
		info, err := s.Stat(t.Context(), "empty", key)
		if err != nil || info.Size != 0 {
			t.Fatalf("Stat(%q) of an empty object = %+v, %v", key, info, err)
		}
	}
	if got := keysOf(listAll(t, s, "empty", "")); !slices.Equal(got, []string{"nil", "zero"}) {
		t.Fatalf("List = %q, want the two empty objects", got)
	}
}

func testNegativeOffset(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "neg")
	mustPut(t, s, "neg", "k", []byte("data"))
	if got, err := s.Get(t.Context(), "neg", "k", -1, 2); err == nil {
		t.Fatalf("Get with a negative offset = %q, nil; want an error", got)
	}
}

func testOverwrite(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "over")
	long, short := payload(1, 5000), payload(2, 100)
	mustPut(t, s, "over", "k/obj", long)
	mustPut(t, s, "over", "k/obj", short)
	if got := mustGet(t, s, "over", "k/obj", 0, -1); !bytes.Equal(got, short) {
		t.Fatalf("Get after overwrite returned %d bytes, want the %d bytes of the new object", len(got), len(short))
	}
	if got := mustGet(t, s, "over", "k/obj", 200, 100); len(got) != 0 {
		t.Fatalf("Get past the end of the shorter new object returned %d bytes of the old one", len(got))
	}
	info, err := s.Stat(t.Context(), "over", "k/obj")
	if err != nil || info.Size != int64(len(short)) {
		t.Fatalf("Stat after overwrite = %+v, %v; want size %d", info, err, len(short))
	}
	if got := listAll(t, s, "over", ""); len(got) != 1 || got[0] != (objstore.Info{Key: "k/obj", Size: 100}) {
		t.Fatalf("List after overwrite = %+v, want one object of 100 bytes", got)
	}
	mustPut(t, s, "over", "k/obj", long)
	if got := mustGet(t, s, "over", "k/obj", 0, -1); !bytes.Equal(got, long) {
		t.Fatalf("Get after growing overwrite returned %d bytes, want %d", len(got), len(long))
	}
}

func testMissingObject(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	mustCreateBucket(t, s, "miss")
	mustPut(t, s, "miss", "dir/obj", []byte("x"))
	for _, key := range []string{"nothing", "no/such/key", "dir", "dir/obj/below", "dir/ob"} {
		_, err := s.Get(ctx, "miss", key, 0, -1)
		wantErr(t, fmt.Sprintf("Get(%q)", key), err, objstore.ErrNotFound)
		_, err = s.Stat(ctx, "miss", key)
		wantErr(t, fmt.Sprintf("Stat(%q)", key), err, objstore.ErrNotFound)
		if errors.Is(err, objstore.ErrBucketNotFound) {
			t.Fatalf("Stat(%q) in an existing bucket says the bucket is missing: %v", key, err)
		}
	}
	if got := mustGet(t, s, "miss", "dir/obj", 0, -1); string(got) != "x" {
		t.Fatalf("Get(dir/obj) = %q after probing missing neighbours", got)
	}
}

func testMissingBucket(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	mustCreateBucket(t, s, "gone")
	if err := s.DeleteBucket(ctx, "gone"); err != nil {
		t.Fatalf("DeleteBucket: %v", err)
	}
	for _, bucket := range []string{"never", "gone"} {
		wantErr(t, "Put", s.Put(ctx, bucket, "k", []byte("v")), objstore.ErrBucketNotFound)
		wantErr(t, "Put of a nested key", s.Put(ctx, bucket, "a/b/c", []byte("v")), objstore.ErrBucketNotFound)
		_, err := s.Get(ctx, bucket, "k", 0, -1)
		wantErr(t, "Get", err, objstore.ErrBucketNotFound)
		_, err = s.Stat(ctx, bucket, "k")
		wantErr(t, "Stat", err, objstore.ErrBucketNotFound)
		wantErr(t, "Delete", s.Delete(ctx, bucket, "k"), objstore.ErrBucketNotFound)
		err = s.List(ctx, bucket, "", func(objstore.Info) error { return nil })
		wantErr(t, "List", err, objstore.ErrBucketNotFound)
	}
	// The failed Puts must not have brought a bucket back.
	wantErr(t, "DeleteBucket", s.DeleteBucket(ctx, "never"), objstore.ErrBucketNotFound)
	if names, ok := buckets(t, s); ok && len(names) != 0 {
		t.Fatalf("Buckets after Puts into missing buckets = %q, want none", names)
	}
}

func testStat(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "stat")
	for _, size := range []int{8, 4095, 4096, 4097, 100000} {
		key := fmt.Sprintf("size/%d", size)
		mustPut(t, s, "stat", key, payload(uint64(size), size))
		info, err := s.Stat(t.Context(), "stat", key)
		if err != nil {
			t.Fatalf("Stat(%q): %v", key, err)
		}
		if want := (objstore.Info{Key: key, Size: int64(size)}); info != want {
			t.Fatalf("Stat(%q) = %+v, want %+v", key, info, want)
		}
	}
}

func testDelete(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	mustCreateBucket(t, s, "del")
	mustPut(t, s, "del", "f/0001", []byte("one"))
	mustPut(t, s, "del", "f/0002", []byte("two"))
	mustPut(t, s, "del", "g/h/0003", []byte("three"))
	for range 2 { // the second round checks idempotency
		if err := s.Delete(ctx, "del", "f/0001"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if err := s.Delete(ctx, "del", "g/h/0003"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	for _, key := range []string{"never/existed", "f", "g/h"} {
		if err := s.Delete(ctx, "del", key); err != nil {
			t.Fatalf("Delete(%q) of a missing object: %v, want nil", key, err)
		}
	}
	_, err := s.Get(ctx, "del", "f/0001", 0, -1)
	wantErr(t, "Get of a deleted object", err, objstore.ErrNotFound)
	_, err = s.Stat(ctx, "del", "g/h/0003")
	wantErr(t, "Stat of a deleted object", err, objstore.ErrNotFound)
	if got := mustGet(t, s, "del", "f/0002", 0, -1); string(got) != "two" {
		t.Fatalf("neighbour of a deleted object = %q, want %q", got, "two")
	}
	if got := keysOf(listAll(t, s, "del", "")); !slices.Equal(got, []string{"f/0002"}) {
		t.Fatalf("List after Delete = %q, want [f/0002]", got)
	}
	// A deleted key can be put again, also below a directory that the delete may have removed.
	mustPut(t, s, "del", "g/h/0003", []byte("again"))
	if got := mustGet(t, s, "del", "g/h/0003", 0, -1); string(got) != "again" {
		t.Fatalf("Get after re-Put = %q", got)
	}
}

func testListPrefixOrder(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "list")
	// Keys chosen so that a directory walk in name order is not key order: '-' and '.' sort before '/', which
	// sorts before digits and letters.
	keys := []string{
		"a-b", "a.c", "a/b-c", "a/b/c", "a/b.c", "a/b/c-d", "a0", "a/c", "A", "Z/z", "_x", "b", "ab/c", "a/b0",
		"0123456789abcdef0123456789abcdef/0000000000000001", "0123456789abcdef0123456789abcdef/0000000000000002",
		"0123456789abcdef0123456789abcdef/000000000000000a", "0123456789abcdef0123456789abcdee/0000000000000001",
	}
	sizes := map[string]int64{}
	for i, key := range keys {
		data := payload(uint64(i), i+8)
		mustPut(t, s, "list", key, data)
		sizes[key] = int64(len(data))
	}
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	prefixes := []string{
		"", "a", "a/", "a/b", "a/b/", "a/b/c", "a-", "ab", "A", "Z/", "_", "zz", "0123456789abcdef0123456789abcdef/",
		"0123456789abcdef0123456789abcde", "0123456789abcdef0123456789abcdef/000000000000000",
		"a//", "/a", "../", "./a", "a/./b", "a/../a", "a/b/c/", "a/b/c-d/more", "bad prefix", "\x00",
	}
	for _, prefix := range prefixes {
		t.Run(fmt.Sprintf("%q", prefix), func(t *testing.T) {
			var want []string
			for _, k := range sorted {
				if strings.HasPrefix(k, prefix) {
					want = append(want, k)
				}
			}
			infos := listAll(t, s, "list", prefix)
			if got := keysOf(infos); !slices.Equal(got, want) {
				t.Fatalf("List(%q) =\n%q\nwant\n%q", prefix, got, want)
			}
			for _, info := range infos {
				if info.Size != sizes[info.Key] {
					t.Fatalf("List(%q): %q has size %d, want %d", prefix, info.Key, info.Size, sizes[info.Key])
				}
			}
		})
	}
}

func testListEmpty(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "void")
	for _, prefix := range []string{"", "a", "a/"} {
		if got := listAll(t, s, "void", prefix); len(got) != 0 {
			t.Fatalf("List(%q) of an empty bucket = %+v", prefix, got)
		}
	}
	// A bucket whose objects were all deleted is empty again.
	mustPut(t, s, "void", "x/y", []byte("1"))
	if err := s.Delete(t.Context(), "void", "x/y"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got := listAll(t, s, "void", ""); len(got) != 0 {
		t.Fatalf("List after deleting the only object = %+v", got)
	}
}

func testListStop(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "stop")
	for i := range 10 {
		mustPut(t, s, "stop", fmt.Sprintf("d%d/k", i), []byte("v"))
	}
	errStop := errors.New("stop here")
	var seen []string
	err := s.List(t.Context(), "stop", "", func(info objstore.Info) error {
		seen = append(seen, info.Key)
		if len(seen) == 3 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("List returned %v, want the callback's error", err)
	}
	if want := []string{"d0/k", "d1/k", "d2/k"}; !slices.Equal(seen, want) {
		t.Fatalf("List called fn for %q before stopping, want %q", seen, want)
	}
}

func testListCallsStore(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	mustCreateBucket(t, s, "reentrant")
	for i := range 5 {
		mustPut(t, s, "reentrant", fmt.Sprintf("k%d", i), payload(uint64(i), payloadSize(uint64(i))))
	}
	// fn reads each object and deletes the next one, as a garbage collector might.
	var seen []string
	err := s.List(ctx, "reentrant", "", func(info objstore.Info) error {
		seen = append(seen, info.Key)
		data, err := s.Get(ctx, "reentrant", info.Key, 0, -1)
		if err != nil {
			return err
		}
		if err := verifyPayload(data); err != nil {
			return err
		}
		return s.Delete(ctx, "reentrant", info.Key)
	})
	if err != nil {
		t.Fatalf("List with a callback that uses the store: %v", err)
	}
	if len(seen) != 5 {
		t.Fatalf("List saw %q, want 5 objects", seen)
	}
	if got := listAll(t, s, "reentrant", ""); len(got) != 0 {
		t.Fatalf("objects left after the callback deleted them all: %+v", got)
	}
}

func testListStaysInBucket(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "mine")
	mustCreateBucket(t, s, "other")
	mustPut(t, s, "other", "secret", []byte("not yours"))
	mustPut(t, s, "other", "dir/secret", []byte("not yours"))
	for _, prefix := range []string{"../other/", "../other/s", "../other/dir/", "/other/", "..", "../"} {
		if got := listAll(t, s, "mine", prefix); len(got) != 0 {
			t.Fatalf("List(mine, %q) = %+v, want nothing", prefix, got)
		}
	}
}

func testKeyCollision(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	mustCreateBucket(t, s, "coll")
	check := func(first, second string) {
		t.Helper()
		mustPut(t, s, "coll", first, []byte(first))
		err := s.Put(ctx, "coll", second, []byte(second))
		switch {
		case err == nil:
			if got := mustGet(t, s, "coll", second, 0, -1); string(got) != second {
				t.Fatalf("Get(%q) = %q", second, got)
			}
		case errors.Is(err, objstore.ErrInvalidKey):
			if _, serr := s.Stat(ctx, "coll", second); !errors.Is(serr, objstore.ErrNotFound) {
				t.Fatalf("refused Put(%q) left something behind: Stat = %v", second, serr)
			}
		default:
			t.Fatalf("Put(%q) with %q present: %v, want nil or ErrInvalidKey", second, first, err)
		}
		if got := mustGet(t, s, "coll", first, 0, -1); string(got) != first {
			t.Fatalf("Get(%q) = %q after Put(%q)", first, got, second)
		}
	}
	check("p", "p/q")
	check("r/s/t", "r/s")
	check("u/v", "u/v/w/x")
}

func testConcurrent(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	mustCreateBucket(t, s, "conc")
	const (
		workers = 8
		perW    = 25
		shared  = 4
	)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			for i := range perW {
				id := uint64(w*1000 + i)
				data := payload(id, payloadSize(id))
				own := fmt.Sprintf("own/%d/%03d", w, i)
				if err := s.Put(ctx, "conc", own, data); err != nil {
					t.Errorf("Put(%q): %v", own, err)
					return
				}
				if got, err := s.Get(ctx, "conc", own, 0, -1); err != nil || !bytes.Equal(got, data) {
					t.Errorf("Get(%q) right after Put: %d bytes, %v", own, len(got), err)
					return
				}
				if got, err := s.Get(ctx, "conc", own, 8, 16); err != nil || !bytes.Equal(got, data[8:24]) {
					t.Errorf("ranged Get(%q): %d bytes, %v", own, len(got), err)
					return
				}
				// Many writers replacing the same few objects: every read must be one whole version.
				sk := fmt.Sprintf("shared/%d", i%shared)
				if err := s.Put(ctx, "conc", sk, data); err != nil {
					t.Errorf("Put(%q): %v", sk, err)
					return
				}
				if got, err := s.Get(ctx, "conc", sk, 0, -1); err != nil {
					t.Errorf("Get(%q): %v", sk, err)
					return
				} else if err := verifyPayload(got); err != nil {
					t.Errorf("Get(%q): %v", sk, err)
					return
				}
				// Puts and Deletes racing in one directory (directories come and go in a local store).
				ck := fmt.Sprintf("churn/dir/%d", w)
				if err := s.Put(ctx, "conc", ck, data); err != nil {
					t.Errorf("Put(%q): %v", ck, err)
					return
				}
				if err := s.Delete(ctx, "conc", ck); err != nil {
					t.Errorf("Delete(%q): %v", ck, err)
					return
				}
			}
		})
	}
	var readers sync.WaitGroup
	for r := range 2 {
		readers.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				default:
				}
				sk := fmt.Sprintf("shared/%d", (n+r)%shared)
				got, err := s.Get(ctx, "conc", sk, 0, -1)
				switch {
				case errors.Is(err, objstore.ErrNotFound):
				case err != nil:
					t.Errorf("concurrent Get(%q): %v", sk, err)
					return
				default:
					if err := verifyPayload(got); err != nil {
						t.Errorf("concurrent Get(%q) saw a torn object: %v", sk, err)
						return
					}
				}
				err = s.List(ctx, "conc", "churn/", func(info objstore.Info) error {
					if !strings.HasPrefix(info.Key, "churn/dir/") {
						return fmt.Errorf("List(churn/) returned %q", info.Key)
					}
					return nil
				})
				if err != nil {
					t.Errorf("concurrent List: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	readers.Wait()
	if t.Failed() {
		return
	}
	infos := listAll(t, s, "conc", "own/")
	if len(infos) != workers*perW {
		t.Fatalf("List(own/) found %d objects, want %d", len(infos), workers*perW)
	}
	if !slices.IsSortedFunc(infos, func(a, b objstore.Info) int { return strings.Compare(a.Key, b.Key) }) {
		t.Fatalf("List(own/) is not in key order")
	}
	for _, info := range infos {
		var w, i int
		if _, err := fmt.Sscanf(info.Key, "own/%d/%d", &w, &i); err != nil {
			t.Fatalf("unexpected key %q", info.Key)
		}
		if want := int64(payloadSize(uint64(w*1000 + i))); info.Size != want {
			t.Fatalf("%q has size %d, want %d", info.Key, info.Size, want)
		}
	}
	if got := listAll(t, s, "conc", "churn/"); len(got) != 0 {
		t.Fatalf("deleted churn objects are still listed: %+v", got)
	}
	for k := range shared {
		sk := fmt.Sprintf("shared/%d", k)
		if err := verifyPayload(mustGet(t, s, "conc", sk, 0, -1)); err != nil {
			t.Fatalf("%s: %v", sk, err)
		}
	}
}

func testLarge(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "large")
	const size = 8 << 20
	data := payload(42, size)
	mustPut(t, s, "large", "big/object", data)
	if got := mustGet(t, s, "large", "big/object", 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("Get of the 8 MiB object returned %d bytes that differ", len(got))
	}
	off := int64(3<<20 + 4095)
	if got := mustGet(t, s, "large", "big/object", off, 1<<20); !bytes.Equal(got, data[off:off+1<<20]) {
		t.Fatalf("ranged Get of the 8 MiB object returned %d bytes that differ", len(got))
	}
	if got := mustGet(t, s, "large", "big/object", size-4096, 8192); !bytes.Equal(got, data[size-4096:]) {
		t.Fatalf("Get of the tail returned %d bytes, want 4096", len(got))
	}
	info, err := s.Stat(t.Context(), "large", "big/object")
	if err != nil || info.Size != size {
		t.Fatalf("Stat = %+v, %v; want size %d", info, err, size)
	}
}

func testNoRetain(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "retain")
	buf := payload(5, 4096)
	want := slices.Clone(buf)
	mustPut(t, s, "retain", "k", buf)
	for i := range buf {
		buf[i] = 0xff
	}
	got := mustGet(t, s, "retain", "k", 0, -1)
	if !bytes.Equal(got, want) {
		t.Fatalf("the object changed when the caller reused the buffer it passed to Put")
	}
	// The slice Get returns belongs to the caller: writing to it changes nothing stored.
	for i := range got {
		got[i] = 0
	}
	part := mustGet(t, s, "retain", "k", 100, 100)
	for i := range part {
		part[i] = 0
	}
	if again := mustGet(t, s, "retain", "k", 0, -1); !bytes.Equal(again, want) {
		t.Fatalf("the object changed when the caller wrote to a slice Get returned")
	}
}

var invalidKeys = []string{
	"", "/abs", "trailing/", "a//b", ".", "..", "./a", "a/.", "a/./b", "../x", "a/../b", "sp ace", "tab\t",
	"nul\x00", "back\\slash", "col:on", "caf\u00e9", "star*", strings.Repeat("k", objstore.MaxKeyLen+1),
}

func testInvalidKeys(t *testing.T, s objstore.Store) {
	ctx := t.Context()
	mustCreateBucket(t, s, "keys")
	for _, key := range invalidKeys {
		q := fmt.Sprintf("%.40q", key)
		wantErr(t, "Put("+q+")", s.Put(ctx, "keys", key, []byte("v")), objstore.ErrInvalidKey)
		_, err := s.Get(ctx, "keys", key, 0, -1)
		wantErr(t, "Get("+q+")", err, objstore.ErrInvalidKey)
		_, err = s.Stat(ctx, "keys", key)
		wantErr(t, "Stat("+q+")", err, objstore.ErrInvalidKey)
		wantErr(t, "Delete("+q+")", s.Delete(ctx, "keys", key), objstore.ErrInvalidKey)
	}
	if got := listAll(t, s, "keys", ""); len(got) != 0 {
		t.Fatalf("refused Puts left objects: %+v", got)
	}
	// The bucket is still usable and empty.
	if err := s.DeleteBucket(ctx, "keys"); err != nil {
		t.Fatalf("DeleteBucket after refused Puts: %v", err)
	}
}

func testLongKey(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "long")
	seg := strings.Repeat("s", 255)
	key := seg + "/" + seg + "/" + seg + "/" + seg[:254] + "/x" // exactly MaxKeyLen bytes
	if len(key) != objstore.MaxKeyLen {
		t.Fatalf("test key is %d bytes", len(key))
	}
	mustPut(t, s, "long", key, []byte("long"))
	if got := mustGet(t, s, "long", key, 0, -1); string(got) != "long" {
		t.Fatalf("Get of the longest key = %q", got)
	}
	if got := keysOf(listAll(t, s, "long", seg[:10])); !slices.Equal(got, []string{key}) {
		t.Fatalf("List of the longest key returned %d keys", len(got))
	}
}

func testCanceled(t *testing.T, s objstore.Store) {
	mustCreateBucket(t, s, "cancel")
	mustPut(t, s, "cancel", "old", []byte("old"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	wantErr(t, "Put", s.Put(ctx, "cancel", "new", []byte("new")), context.Canceled)
	wantErr(t, "Put over an object", s.Put(ctx, "cancel", "old", []byte("new")), context.Canceled)
	_, err := s.Get(ctx, "cancel", "old", 0, -1)
	wantErr(t, "Get", err, context.Canceled)
	_, err = s.Stat(ctx, "cancel", "old")
	wantErr(t, "Stat", err, context.Canceled)
	wantErr(t, "Delete", s.Delete(ctx, "cancel", "old"), context.Canceled)
	err = s.List(ctx, "cancel", "", func(objstore.Info) error { return nil })
	wantErr(t, "List", err, context.Canceled)
	wantErr(t, "CreateBucket", s.CreateBucket(ctx, "other"), context.Canceled)
	wantErr(t, "DeleteBucket", s.DeleteBucket(ctx, "cancel"), context.Canceled)
	// Nothing changed.
	if got := mustGet(t, s, "cancel", "old", 0, -1); string(got) != "old" {
		t.Fatalf("object after cancelled calls = %q, want %q", got, "old")
	}
	if got := keysOf(listAll(t, s, "cancel", "")); !slices.Equal(got, []string{"old"}) {
		t.Fatalf("List after cancelled calls = %q", got)
	}
	wantErr(t, "DeleteBucket of the bucket a cancelled CreateBucket named", s.DeleteBucket(t.Context(), "other"),
		objstore.ErrBucketNotFound)
}
