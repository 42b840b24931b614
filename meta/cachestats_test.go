package meta_test

import (
	"testing"

	"github.com/kmipfs/kmipfs/meta"
)

// TestCacheStats: the first Get of an inode misses and fills the cache, the next one hits; a
// change drops the record, so the Get after it misses again.
func TestCacheStats(t *testing.T) {
	db := openDB(t, t.TempDir(), meta.Options{})
	ctx := t.Context()
	b := mkdir(t, db, meta.RootIno, "b")
	f := mkfile(t, db, b.Ino, "f")
	get := func() {
		t.Helper()
		if _, err := db.Get(ctx, f.Ino); err != nil {
			t.Fatal(err)
		}
	}
	get() // may hit or miss, depending on what Create left cached
	s0 := db.CacheStats()
	get()
	s1 := db.CacheStats()
	if s1.Hits != s0.Hits+1 || s1.Misses != s0.Misses {
		t.Fatalf("a cached Get: stats %+v -> %+v, want one more hit", s0, s1)
	}
	if s1.Entries == 0 {
		t.Fatalf("stats %+v: the cache holds the inode, want Entries > 0", s1)
	}
	if _, err := db.Update(ctx, f.Ino, func(in *meta.Inode) error { in.Size = 1; return nil }); err != nil {
		t.Fatal(err)
	}
	s2 := db.CacheStats()
	get()
	s3 := db.CacheStats()
	if s3.Misses != s2.Misses+1 || s3.Hits != s2.Hits {
		t.Fatalf("a Get after a change: stats %+v -> %+v, want one more miss", s2, s3)
	}
}
