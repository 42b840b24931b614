// Package faulty is an objstore.Store decorator for tests that injects failures into any Store: a fraction of
// requests fail, every request waits a while, or requests fail with a given error (such as one wrapping
// objstore.ErrNoSpace), and all of it can be turned on and off while the Store is in use.
//
// It exists because the behaviour that matters most under an outage (an application gets EIO, dirty data is kept,
// and it lands once the store is back) can only be tested against a store that misbehaves on demand, and the
// backends must stay simple. objstore/mem has its own fault hook; this decorator works on every backend, including
// the local directory store that a real mount uses.
//
// # What a fault does
//
// A request of an affected operation first waits Rule.Latency (or until its ctx is done), then fails with
// probability Rule.FailRate. A failed request normally fails before it reaches the decorated Store, so it changes
// nothing. With Rule.AfterOp a failed Put, Delete, CreateBucket or DeleteBucket is carried out first and its
// result thrown away: the store did the work but the caller hears an error, as when a network drops the reply of
// a request the server completed. The error wraps Rule.Err (ErrInjected if nil), so errors.Is finds it.
package faulty
