package meta_test

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kmipfs/kmipfs/meta"
)

// TestCacheNeverServesOldValues races readers against a writer: once a change has returned, no
// read that starts after it may return what was there before (Get, GetXattr and Lookup are
// served from the read cache, which the writer must have invalidated).
func TestCacheNeverServesOldValues(t *testing.T) {
	db := openDB(t, t.TempDir(), meta.Options{})
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	const rounds = 400
	var done atomic.Int64      // the last round whose changes have all returned
	var unlinking atomic.Int64 // the highest n<i> whose unlink has started
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := int64(1); i <= rounds; i++ {
			if _, err := db.Update(ctx, f.Ino, func(in *meta.Inode) error { in.Size = uint64(i); return nil }); err != nil {
				errs <- err
				return
			}
			if err := db.SetXattr(ctx, f.Ino, "user.n", []byte(strconv.FormatInt(i, 10)), 0); err != nil {
				errs <- err
				return
			}
			name := fmt.Sprintf("n%d", i)
			if _, err := db.Create(ctx, b.Ino, name, meta.Inode{Mode: 0o100644}); err != nil {
				errs <- err
				return
			}
			unlinking.Store(i - 1)
			if _, err := db.Unlink(ctx, b.Ino, fmt.Sprintf("n%d", i-1), 0); err != nil && i > 1 {
				errs <- err
				return
			}
			done.Store(i)
		}
	}()
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				seen := done.Load()
				if seen == rounds {
					return
				}
				in, err := db.Get(ctx, f.Ino)
				if err != nil {
					errs <- err
					return
				}
				if int64(in.Size) < seen {
					errs <- fmt.Errorf("Get: size %d after round %d returned", in.Size, seen)
					return
				}
				v, err := db.GetXattr(ctx, f.Ino, "user.n")
				if seen > 0 {
					if n, _ := strconv.ParseInt(string(v), 10, 64); err != nil || n < seen {
						errs <- fmt.Errorf("GetXattr: %q, %v after round %d returned", v, err, seen)
						return
					}
					if _, err := db.Lookup(ctx, b.Ino, fmt.Sprintf("n%d", seen)); err != nil && unlinking.Load() < seen {
						// Round seen+1 unlinks n<seen>; until it starts to, the name must be found.
						errs <- fmt.Errorf("Lookup n%d after round %d returned: %v", seen, seen, err)
						return
					}
					if _, err := db.Lookup(ctx, b.Ino, fmt.Sprintf("n%d", seen-1)); !errors.Is(err, meta.ErrNotFound) && seen > 1 {
						errs <- fmt.Errorf("Lookup n%d after its unlink returned: %v", seen-1, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
