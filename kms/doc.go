// Package kms fetches the secrets (KEKs) that protect kmipfs data keys from a KMIP key manager, the way
// Ceph's Object Gateway does for SSE-KMS with KMIP: a key id such as "mybucketkey" becomes a KMIP object
// name through a template ("pykmip-$keyid" gives "pykmip-mybucketkey", see [KeyName]); the [Client]
// Locates that name over mutual TLS and Gets the 32-byte AES secret; the [Cache] keeps it for a while so a
// busy mount makes one round trip per key per TTL.
//
// kms hands out secrets and nothing else: wrapping data keys is crypt's job, and file data never passes
// through here. The embedded KMIP server used by `kmipfs demo`, `kmipfs kms serve` and the tests is in
// the subpackage kmipserver; certs makes a loopback PKI for it; kmstest starts one (or a real PyKMIP
// server) for tests. docs/KMIP.md describes the protocol as kmipfs uses it and the servers it was tested
// with.
//
// # Protocol
//
// The client speaks KMIP 1.0 to 1.4 in binary TTLV over TLS 1.2 or newer, with a client certificate, and
// verifies the server certificate against Config.CAPath for the host of Config.Addr (or
// Config.ServerName). Every new connection starts with Discover Versions listing 1.4 to 1.0, and then uses
// the highest version the server also lists (1.4 with PyKMIP 0.10 and kmipserver); a server without
// Discover Versions gets 1.0. Besides Go's ECDHE suites the client offers ECDHE with AES-128-CBC-SHA256,
// the only suites PyKMIP accepts with an RSA certificate. With Config.Username every request carries a
// Username and Password credential.
//
// A secret takes two round trips: Locate with Name, Object Type = Symmetric Key and State = Active, which
// must match exactly one object, then Get, which must return a Raw (or Transparent Symmetric Key) AES key
// of 32 bytes. So a revoked, deactivated or destroyed key is not found (ErrKeyNotFound, ENOKEY in fs); the
// error says whether objects of that name exist in other states. A server that refuses the State filter
// is asked without it, and the state of each match is checked with Get Attributes. Messages are framed
// and size-limited by kms/internal/wire; every byte from the server is decoded without trusting it (see
// the Fuzz tests).
//
// # Connections, timeouts and retries
//
// A Client keeps at most 4 connections, idle or in use; a fifth concurrent call waits for one. Every call
// gets one budget of Config.Timeout covering the wait for a connection, the dial, the TLS handshake,
// Discover Versions, the request and all retries, so no call takes longer than Timeout (or the caller's
// context, if sooner), also against a server that accepts connections and never answers. A transport
// failure (refused, reset, EOF, timeout, undecodable response) closes the connection and the pool; an
// idempotent request is tried up to 3 times in all: at once on a fresh connection after a dead pooled
// one, then after 50 and 100 ms of backoff. Create is not idempotent: it always uses a fresh connection
// and is retried only when that connection could not be opened. Certificate and TLS alert failures are
// not retried. A failed batch item (the server answered "no") is not retried and keeps the connection.
//
// # Errors
//
// Errors wrap one sentinel: [ErrKeyNotFound] (no Active key of that name, fs gives ENOKEY),
// [ErrUnavailable] (the server could not be reached or did not answer; the message names the cause and,
// for the common mistakes, the option to check: kms.ca_path, kms.client_cert and its expiry,
// kms.server_name, kms.addr), [ErrAmbiguous] (with the count), [ErrBadKey], [ErrClosed]. When the
// caller's context ends, the error wraps context.Canceled or context.DeadlineExceeded instead of
// ErrUnavailable. The network cause of an ErrUnavailable matches errors.Is but not errors.As, so that no
// syscall.Errno (ECONNREFUSED) leaks out as if it were the errno for the application.
//
// # Caching
//
// [Cache] serves a secret for CacheTTL, remembers "not found" for NegativeTTL and other failures for
// ErrorTTL, shares one fetch among concurrent misses, and during an outage (ErrUnavailable) keeps
// serving a secret up to StaleTTL old (default ten times CacheTTL), logging once per key; while the
// outage lasts the copy is served at once and the refetch runs in the background. Secrets are zeroed
// when evicted and on Close, and every caller gets its own copy to zero.
//
// # Logging
//
// Loggers are passed in; nil means silent. Key names, UIDs and addresses are logged; key material and
// passwords never. At Debug level the client logs every request with its operation, name, protocol
// version and duration; [Client.Stats] counts them.
package kms
