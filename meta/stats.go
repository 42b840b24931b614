package meta

import (
	"context"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// foldThreshold is how many counter deltas may pile up before a background
// fold merges them into the base; foldBatch bounds one fold transaction.
const (
	foldThreshold = 512
	foldBatch     = 4096
)

// Stats returns the number of inodes (the root and orphans included) and the
// sum of the sizes of all regular files, for statfs. It reads the counter
// base and the deltas not yet folded into it, which are kept few by a
// background fold, so its cost does not grow with the file count.
func (db *DB) Stats(ctx context.Context) (inodes uint64, bytes uint64, err error) {
	var c counters
	err = db.view(ctx, func(t *badger.Txn) error {
		var err error
		c, err = readCounters(t, 0)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("meta: stats: %w", err)
	}
	if c.inodes < 0 || c.bytes < 0 {
		return 0, 0, fmt.Errorf("meta: stats: negative counters %d, %d: %w", c.inodes, c.bytes, ErrFormat)
	}
	return uint64(c.inodes), uint64(c.bytes), nil
}

// readCounters returns the base plus the deltas (all of them when limit is
// 0).
func readCounters(t *badger.Txn, limit int) (counters, error) {
	c, _, err := sumCounters(t, limit)
	return c, err
}

// sumCounters returns the base plus up to limit deltas and the keys of the
// deltas it summed.
func sumCounters(t *badger.Txn, limit int) (counters, [][]byte, error) {
	item, err := t.Get(counterBaseKey)
	if err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			err = fmt.Errorf("counter base missing: %w", ErrFormat)
		}
		return counters{}, nil, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return counters{}, nil, err
	}
	c, err := decodeCounters(v)
	if err != nil {
		return counters{}, nil, err
	}
	it := t.NewIterator(badger.IteratorOptions{Prefix: deltaPrefix, PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		if limit > 0 && len(keys) >= limit {
			break
		}
		item := it.Item()
		if len(item.Key()) != len(deltaPrefix)+16 {
			return counters{}, nil, fmt.Errorf("counter delta key %x: %w", item.Key(), ErrFormat)
		}
		var d counters
		if err := item.Value(func(v []byte) error {
			var err error
			d, err = decodeCounters(v)
			return err
		}); err != nil {
			return counters{}, nil, fmt.Errorf("counter delta %x: %w", item.Key(), err)
		}
		c.inodes += d.inodes
		c.bytes += d.bytes
		keys = append(keys, item.KeyCopy(nil))
	}
	return c, keys, nil
}

// noteDelta counts a committed delta and starts a background fold once
// enough have piled up.
func (db *DB) noteDelta() {
	if db.pendingDeltas.Add(1) < foldThreshold || db.closed.Load() || !db.folding.CompareAndSwap(false, true) {
		return
	}
	db.wg.Add(1)
	go func() {
		defer db.wg.Done()
		defer db.folding.Store(false)
		if err := db.fold(); err != nil {
			// Nothing is lost: the deltas stay and the next fold retries.
			db.log.Warn("meta: folding counters failed", "err", err)
		}
	}()
}

// fold merges every counter delta into the base, in batches. Only fold
// writes the base, and foldMu serializes folds, so a fold never conflicts;
// deltas committed while it runs are simply left for the next one.
func (db *DB) fold() error {
	db.foldMu.Lock()
	defer db.foldMu.Unlock()
	db.pendingDeltas.Store(0)
	for {
		var n int
		err := retryConflict(func() error {
			return db.bdb.Update(func(t *badger.Txn) error {
				c, keys, err := sumCounters(t, foldBatch)
				if err != nil {
					return err
				}
				n = len(keys)
				if n == 0 {
					return nil
				}
				for _, k := range keys {
					if err := t.Delete(k); err != nil {
						return err
					}
				}
				return t.Set(counterBaseKey, encodeCounters(c))
			})
		})
		if err != nil {
			return fmt.Errorf("fold counters: %w", err)
		}
		if n < foldBatch {
			return nil
		}
	}
}

// retryConflict runs fn again while it fails with badger.ErrConflict, a few
// times. Folds should never conflict (see fold); this is a safety net.
func retryConflict(fn func() error) error {
	var err error
	for range 10 {
		if err = fn(); !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return err
}
