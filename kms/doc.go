// Package kms fetches the secrets (KEKs) that protect kmipfs data keys from a KMIP key manager, the way
// Ceph's Object Gateway does for SSE-KMS with KMIP: a key id such as "mybucketkey" becomes a KMIP object
// name through a template ("pykmip-$keyid" gives "pykmip-mybucketkey", see [KeyName]); the [Client]
// Locates that name over mutual TLS and Gets the 32-byte AES secret; the [Cache] keeps it for a while so a
// busy mount makes one round trip per key per TTL.
//
// kms hands out secrets and nothing else: wrapping data keys is crypt's job, and file data never passes
// through here. The embedded KMIP server used by `kmipfs demo`, `kmipfs kms serve` and the tests is in
// the subpackage kmipserver; certs makes a loopback PKI for it; kmstest starts one for tests.
//
// # Protocol
//
// The client speaks KMIP 1.2 in binary TTLV over TLS 1.2 or newer (PyKMIP accepts only 1.2; Go negotiates
// it). A secret takes two round trips: Locate with the attributes Name and Object Type = Symmetric Key,
// which must match exactly one object, then Get, which must return a Raw (or Transparent Symmetric Key)
// AES key of 32 bytes. Locate does not filter on State, so Deactivated and Compromised keys still decrypt
// what they protected. Messages are framed and size-limited by kms/internal/wire; every byte from the
// server is decoded without trusting it (see the Fuzz tests).
//
// # Connections, timeouts and retries
//
// A Client keeps at most 4 connections, idle or in use; a fifth concurrent call waits for one. Every call gets one budget of
// Config.Timeout covering the dial, the TLS handshake, the request and the single retry, so no call takes
// longer than Timeout (or the caller's context, if sooner). A transport failure (refused, reset, EOF,
// timeout, undecodable response) closes the connection and the pool, and idempotent requests are
// retried once on a fresh connection. Create is not idempotent: it always uses a fresh connection and is
// retried only when the dial failed. A failed batch item (the server answered "no") is not retried and
// keeps the connection.
//
// # Errors
//
// Errors wrap one sentinel: [ErrKeyNotFound] (no such name, fs gives ENOKEY), [ErrUnavailable] (the server
// could not be reached or did not answer; the message names the cause and, for the common TLS mistakes,
// the option to check), [ErrAmbiguous], [ErrBadKey], [ErrClosed]. When the caller's context ends, the
// error wraps context.Canceled or context.DeadlineExceeded instead of ErrUnavailable.
//
// # Caching
//
// [Cache] serves a secret for CacheTTL, remembers "not found" for NegativeTTL and other failures for a
// second, shares one fetch among concurrent misses, and during an outage (ErrUnavailable) keeps serving a
// secret up to ten times CacheTTL old, logging once per key. Secrets are zeroed when evicted and on
// Close, and every caller gets its own copy to zero.
//
// # Logging
//
// Loggers are passed in; nil means silent. Key names, UIDs and addresses are logged; key material never.
package kms
