// Package mem is an in-memory objstore.Store for unit tests of the layers above it.
//
// It keeps the full contract of objstore.Store (the same errors, copy-in and copy-out of buffers, lexical List
// order) so that a test that passes against it means something, and it adds fault injection (SetFault) so that the
// fs tests can make any store operation fail and check that dirty data is kept and nothing is half-done.
//
// Unlike the local backend, it lets "a" and "a/b" exist side by side, as S3 does.
package mem
