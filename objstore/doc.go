// Package objstore defines Store, the small interface kmipfs uses to keep encrypted file data as immutable
// objects, together with its sentinel errors and the naming rules every backend enforces.
//
// The filesystem names objects by ids, not by paths (for example "<32 hex file id>/<16 hex generation>"), writes
// each object exactly once with Put, reads byte ranges of it with Get, and deletes it when every block in it has been
// superseded. Top-level directories of the mount are buckets. Because objects are never modified in place, the
// interface has no append, no partial write and no rename: that keeps it implementable on S3 and keeps a crash from
// ever leaving a torn object behind.
//
// # Backends
//
// Implementations live in subpackages: objstore/local (a directory tree, the default), objstore/mem (an in-memory
// store with fault injection, for unit tests of the layers above) and, later, objstore/s3. Every backend runs the
// conformance suite in objstore/storetest, so the fs package can rely on the contract written on Store and not on
// the quirks of one backend.
//
// # Buckets and keys
//
// Bucket names follow S3's rules (see ValidBucketName) so that a tree created on the local backend can move to S3
// unchanged and so that mkdir at the mount root fails the same way on both. Keys are restricted to a portable,
// path-safe alphabet (see ValidKey): the local backend maps the segments of a key to subdirectories, so "." and ".."
// segments, empty segments and a leading '/' are refused everywhere rather than only where they would escape a
// directory. Every method refuses an invalid bucket name with ErrInvalidBucketName and an invalid key with
// ErrInvalidKey before it touches anything.
//
// A backend that maps keys to files cannot hold both "a" and "a/b"; it refuses the second one with an error wrapping
// ErrInvalidKey. kmipfs never creates such pairs (its keys all have the same shape), and S3-like backends accept them.
//
// # Errors
//
// Methods return errors that wrap one of the sentinels below, or ctx.Err(), or an I/O error of the backend; test them
// with errors.Is. Messages name the operation and the object, as in `objstore: get "bucket/key": ...`. Backends do
// not log the errors they return; the caller decides whether an error is worth a log line.
//
// # Concurrency and buffers
//
// All methods of a Store are safe for concurrent use. Put does not retain the slice it is given, and the slice Get
// returns belongs to the caller, in the sense of io.Writer's "must not retain p".
//
// # Optional abilities
//
// Abilities that not every backend has are separate interfaces found by type assertion, such as BucketLister.
package objstore
