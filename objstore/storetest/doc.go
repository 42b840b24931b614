// Package storetest is the conformance suite that every objstore.Store backend runs, so that the layers above can
// rely on the contract written on objstore.Store rather than on one backend's behaviour.
//
// A backend's test calls Run from a test function and Bench from a benchmark:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) objstore.Store { return newTestStore(t) })
//	}
//
//	func BenchmarkStore(b *testing.B) {
//		storetest.Bench(b, func(b *testing.B) objstore.Store { return newTestStore(b) })
//	}
//
// # What it checks
//
// Buckets (create, exists, delete, not empty, invalid names, BucketLister if implemented); Put and Get of whole
// objects and of ranges, including ranges past the end; overwrite; missing objects and missing buckets; Stat;
// idempotent Delete; List with prefixes, lexical order and keys containing '/'; concurrent Puts, Gets, Deletes and
// Lists of many objects (run it with -race, and with GOMAXPROCS=1); an 8 MiB object; that Put does not retain the
// caller's buffer and that Get's result belongs to the caller; invalid keys; cancelled contexts.
//
// The suite accepts the one documented difference between backends: a backend may refuse, with an error wrapping
// objstore.ErrInvalidKey, a key that is a path prefix of an existing object's key (or the reverse), as the local
// backend must.
package storetest
