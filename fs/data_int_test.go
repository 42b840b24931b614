package fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/kmipfs/kmipfs/crypt"
	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/meta"
	"github.com/kmipfs/kmipfs/objstore"
	"github.com/kmipfs/kmipfs/objstore/mem"
)

// fakeKeys is a SecretSource over a fixed map: a unit-test stand-in for the kms cache.
type fakeKeys struct {
	mu   sync.Mutex
	keys map[string][]byte
}

func (k *fakeKeys) Secret(ctx context.Context, name string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s, ok := k.keys[name]
	if !ok {
		return nil, kms.ErrKeyNotFound
	}
	return bytes.Clone(s), nil
}

type testFS struct {
	*FS
	store *mem.Store
}

func newTestFS(t *testing.T) *testFS {
	t.Helper()
	db, err := meta.Open("", meta.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	secret := make([]byte, 32)
	rand.Read(secret)
	store := mem.New()
	f, err := New(context.Background(), Options{
		Meta:       db,
		Store:      store,
		Keys:       &fakeKeys{keys: map[string][]byte{"k1": secret}},
		Logger:     slog.New(slog.DiscardHandler),
		FlushBytes: 64 * blockSize,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateBucket(context.Background(), "bkt"); err != nil {
		t.Fatal(err)
	}
	return &testFS{FS: f, store: store}
}

// newFile creates an empty file in a fresh bucket directory and opens its data state.
func (tf *testFS) newFile(t *testing.T, name string) *openFile {
	t.Helper()
	ctx := context.Background()
	bucket, err := tf.meta.Lookup(ctx, meta.RootIno, "bkt")
	if errors.Is(err, meta.ErrNotFound) {
		bucket, err = tf.meta.Create(ctx, meta.RootIno, "bkt", meta.Inode{Mode: syscall.S_IFDIR | 0o755})
	}
	if err != nil {
		t.Fatal(err)
	}
	rec := meta.Inode{Mode: syscall.S_IFREG | 0o644}
	if err := tf.newFileKey(ctx, &rec, "k1", "k1"); err != nil {
		t.Fatal(err)
	}
	in, err := tf.meta.Create(ctx, bucket.Ino, name, rec)
	if err != nil {
		t.Fatal(err)
	}
	of, errno := tf.acquire(ctx, in, "/bkt/"+name)
	if errno != 0 {
		t.Fatal(errno)
	}
	return of
}

// reopen drops the data state and builds it again from meta, as a new open after close does.
func (tf *testFS) reopen(t *testing.T, of *openFile) *openFile {
	t.Helper()
	ctx := context.Background()
	tf.releaseFile(ctx, of)
	in, err := tf.meta.Get(ctx, of.ino)
	if err != nil {
		t.Fatal(err)
	}
	nof, errno := tf.acquire(ctx, in, of.path)
	if errno != 0 {
		t.Fatal(errno)
	}
	if nof == of {
		t.Fatal("data state was not dropped at the last release")
	}
	return nof
}

func (of *openFile) write(t *testing.T, off int64, data []byte) {
	t.Helper()
	of.mu.Lock()
	defer of.mu.Unlock()
	if err := of.writeLocked(context.Background(), data, off); err != nil {
		t.Fatal(err)
	}
}

func (of *openFile) flush() error {
	of.mu.Lock()
	defer of.mu.Unlock()
	return of.flushLocked(context.Background())
}

func (of *openFile) readAll(t *testing.T) ([]byte, error) {
	t.Helper()
	of.mu.Lock()
	defer of.mu.Unlock()
	buf := make([]byte, of.size+10)
	n, err := of.readLocked(context.Background(), buf, 0)
	return buf[:n], err
}

func TestFlushRoundTrip(t *testing.T) {
	tf := newTestFS(t)
	of := tf.newFile(t, "f")
	want := make([]byte, 10*blockSize+123)
	rand.Read(want)
	of.write(t, 0, want)
	of.write(t, 5000, []byte("partial block overwrite"))
	copy(want[5000:], "partial block overwrite")
	if err := of.flush(); err != nil {
		t.Fatal(err)
	}
	of = tf.reopen(t, of)
	got, err := of.readAll(t)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after reopen: %v, equal=%v", err, bytes.Equal(got, want))
	}
}

// TestStoreFailureKeepsDirtyData: a flush that the store refuses returns an error and loses
// nothing; once the store is back the same data lands.
func TestStoreFailureKeepsDirtyData(t *testing.T) {
	tf := newTestFS(t)
	of := tf.newFile(t, "f")
	want := bytes.Repeat([]byte("kept "), 3000)
	of.write(t, 0, want)
	down := errors.New("store down")
	tf.store.SetFault(func(op, bucket, key string) error {
		if op == "put" {
			return down
		}
		return nil
	})
	if err := of.flush(); !errors.Is(err, down) {
		t.Fatalf("flush with the store down: %v", err)
	}
	if errno := tf.toErrno(of.flush(), "flush"); errno != syscall.EIO {
		t.Fatalf("errno %v, want EIO", errno)
	}
	tf.store.SetFault(nil)
	if err := of.flush(); err != nil {
		t.Fatal(err)
	}
	of = tf.reopen(t, of)
	if got, err := of.readAll(t); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after recovery: %v", err)
	}
}

// TestSupersededObjectsDeleted: overwriting every block of a file leaves only the new object.
func TestSupersededObjectsDeleted(t *testing.T) {
	tf := newTestFS(t)
	of := tf.newFile(t, "f")
	for i := 0; i < 3; i++ {
		of.write(t, 0, bytes.Repeat([]byte{byte(i)}, 4*blockSize))
		if err := of.flush(); err != nil {
			t.Fatal(err)
		}
	}
	tf.gc.wait(context.Background()) // superseded objects go in the background
	var keys []string
	tf.store.List(context.Background(), "bkt", "", func(i objstore.Info) error { keys = append(keys, i.Key); return nil })
	if len(keys) != 1 || !strings.HasSuffix(keys[0], "/0000000000000003") {
		t.Fatalf("objects left: %v", keys)
	}
}

func TestTamperedBlockIsAuthError(t *testing.T) {
	tf := newTestFS(t)
	of := tf.newFile(t, "f")
	of.write(t, 0, make([]byte, 2*blockSize))
	if err := of.flush(); err != nil {
		t.Fatal(err)
	}
	key := objectKey(of.fileID, of.gen)
	ctx := context.Background()
	body, err := tf.store.Get(ctx, "bkt", key, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	body[crypt.CipherBS+crypt.NonceSize+7] ^= 0x80
	if err := tf.store.Put(ctx, "bkt", key, body); err != nil {
		t.Fatal(err)
	}
	of = tf.reopen(t, of)
	_, err = of.readAll(t)
	if !errors.Is(err, crypt.ErrAuth) {
		t.Fatalf("read of tampered block: %v", err)
	}
	if errno := tf.toErrno(err, "read"); errno != syscall.EIO {
		t.Fatalf("errno %v", errno)
	}
}

// TestDirtyBoundAcrossFiles: when the dirty blocks of all files pass the mount's bound, the file
// being written flushes even though its own buffer is below FlushBytes, and the count of dirty
// blocks follows flushes and releases.
func TestDirtyBoundAcrossFiles(t *testing.T) {
	tf := newTestFS(t)
	tf.maxDirty = 40 * blockSize // FlushBytes is 64 blocks
	a, b := tf.newFile(t, "a"), tf.newFile(t, "b")
	a.write(t, 0, make([]byte, 30*blockSize))
	if got := tf.dirtyBlocks.Load(); got != 30 {
		t.Fatalf("dirty blocks after 30 written: %d", got)
	}
	b.write(t, 0, make([]byte, 20*blockSize)) // 50 > 40: b flushes its 20
	if len(b.dirty) != 0 || len(a.dirty) != 30 {
		t.Fatalf("dirty a=%d b=%d, want a=30 b=0", len(a.dirty), len(b.dirty))
	}
	if got := tf.dirtyBlocks.Load(); got != 30 {
		t.Fatalf("dirty blocks after b's flush: %d", got)
	}
	tf.releaseFile(context.Background(), a) // the last close stores a's blocks
	if got := tf.dirtyBlocks.Load(); got != 0 {
		t.Fatalf("dirty blocks after a's release: %d", got)
	}
}
