package fs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/kmipfs/kmipfs/meta"
	"github.com/kmipfs/kmipfs/objstore"
)

// background runs fn on queued items in one goroutine, started when items arrive and stopped
// when the queue is empty. kmipfs uses two: deleting objects that no longer hold live blocks
// (doing that on the request path would make unlink and every overwriting flush wait for the
// store; the meta GC queue stays the durable record, so a crash or unmount in between leaves the
// objects queued for the next mount), and releasing unlinked inodes that the kernel has
// forgotten (an rm -rf of a tree forgets thousands at once; releasing each in a goroutine of its
// own made the unlinks still to come wait behind a crowd of transactions).
type background[T any] struct {
	fn      func(batch []T)
	mu      sync.Mutex
	pending []T
	running bool          // a worker goroutine is draining pending
	idle    chan struct{} // closed when the worker stops; replaced when one starts
	// queued counts the items enqueued and not yet handled, for Stats.
	queued atomic.Int64
}

func newBackground[T any](fn func(batch []T)) *background[T] {
	b := &background[T]{fn: fn, idle: make(chan struct{})}
	close(b.idle)
	return b
}

// enqueue hands items to the worker, starting it if it is not running.
func (b *background[T]) enqueue(items ...T) {
	if len(items) == 0 {
		return
	}
	b.queued.Add(int64(len(items)))
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pending = append(b.pending, items...)
	if b.running {
		return
	}
	b.running = true
	b.idle = make(chan struct{})
	go b.work(b.idle)
}

// work runs fn on what is queued until the queue is empty.
func (b *background[T]) work(idle chan struct{}) {
	defer close(idle)
	for {
		b.mu.Lock()
		batch := b.pending
		b.pending = nil
		if len(batch) == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.fn(batch)
		b.queued.Add(-int64(len(batch)))
	}
}

// wait returns when every item enqueued before the call has been handled, or ctx ends.
func (b *background[T]) wait(ctx context.Context) {
	b.mu.Lock()
	idle := b.idle
	b.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
	}
}

// deleteObjects removes objects from the store and takes them off the GC queue. Failures are
// logged and the objects stay queued for the next mount.
func (f *FS) deleteObjects(ctx context.Context, refs []meta.ObjectRef) {
	if len(refs) == 0 {
		return
	}
	done := refs[:0:0]
	for _, r := range refs {
		if err := f.store.Delete(ctx, r.Bucket, r.Key); err != nil && !errors.Is(err, objstore.ErrBucketNotFound) {
			f.log.Warn("delete of superseded object failed; it stays queued", "bucket", r.Bucket, "object", r.Key, "err", err)
			f.stats.gcErrors.Add(1)
			continue
		}
		f.stats.gcDeleted.Add(1)
		done = append(done, r)
	}
	if err := f.meta.DoneGC(ctx, done); err != nil {
		f.log.Warn("gc queue update failed", "err", err)
	}
}
