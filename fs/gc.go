package fs

import (
	"context"
	"errors"
	"sync"

	"github.com/kmipfs/kmipfs/meta"
	"github.com/kmipfs/kmipfs/objstore"
)

// collector deletes objects that no longer hold live blocks, in the background. Deleting them
// on the request path would make unlink and every overwriting flush wait for the store (for S3,
// one round trip per object; for rm -rf of a tree, one per file). The meta GC queue is the
// durable record: an object is queued in the same transaction that stops referencing it, and
// taken off only after the store deleted it, so a crash or unmount in between leaves it queued
// for the next mount.
type collector struct {
	f       *FS
	mu      sync.Mutex
	pending []meta.ObjectRef
	running bool          // a worker goroutine is draining pending
	idle    chan struct{} // closed when the worker stops; replaced when one starts
}

func newCollector(f *FS) *collector {
	c := &collector{f: f, idle: make(chan struct{})}
	close(c.idle)
	return c
}

// enqueue hands refs to the background worker, starting it if it is not running.
func (c *collector) enqueue(refs []meta.ObjectRef) {
	if len(refs) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, refs...)
	if c.running {
		return
	}
	c.running = true
	c.idle = make(chan struct{})
	go c.work(c.idle)
}

// work deletes batches until the queue is empty.
func (c *collector) work(idle chan struct{}) {
	defer close(idle)
	for {
		c.mu.Lock()
		batch := c.pending
		c.pending = nil
		if len(batch) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.f.deleteObjects(c.f.bgCtx, batch)
	}
}

// wait returns when every object enqueued before the call has been deleted (or its deletion
// failed and was logged), or ctx ends.
func (c *collector) wait(ctx context.Context) {
	c.mu.Lock()
	idle := c.idle
	c.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
	}
}

// releaser frees unlinked inodes that the kernel has forgotten (releaseOrphan), in the
// background and one at a time: an rm -rf of a tree forgets thousands at once, and releasing each
// in a goroutine of its own made the unlinks still to come wait behind a crowd of transactions.
type releaser struct {
	f       *FS
	mu      sync.Mutex
	pending []meta.Ino
	running bool
	idle    chan struct{} // closed when the worker stops
}

func newReleaser(f *FS) *releaser {
	r := &releaser{f: f, idle: make(chan struct{})}
	close(r.idle)
	return r
}

func (r *releaser) enqueue(ino meta.Ino) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = append(r.pending, ino)
	if r.running {
		return
	}
	r.running = true
	r.idle = make(chan struct{})
	go r.work(r.idle)
}

func (r *releaser) work(idle chan struct{}) {
	defer close(idle)
	for {
		r.mu.Lock()
		if len(r.pending) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		ino := r.pending[0]
		r.pending = r.pending[1:]
		r.mu.Unlock()
		r.f.releaseOrphan(r.f.bgCtx, ino)
	}
}

// wait returns when every inode enqueued before the call has been released, or ctx ends.
func (r *releaser) wait(ctx context.Context) {
	r.mu.Lock()
	idle := r.idle
	r.mu.Unlock()
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
			continue
		}
		done = append(done, r)
	}
	if err := f.meta.DoneGC(ctx, done); err != nil {
		f.log.Warn("gc queue update failed", "err", err)
	}
}
