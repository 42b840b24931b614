// Package kmipserver is the embedded KMIP server of kmipfs, used by `kmipfs demo`, `kmipfs kms serve` and
// the tests. It speaks real KMIP 1.x (binary TTLV over mutual TLS), built from gemalto/kmip-go's
// kmip.Server, StandardProtocolHandler and OperationMux, with its own handlers and a JSON key store. It is
// not a production key manager: any client with a certificate the listener accepts has full access.
//
// # Operations
//
//   - Discover Versions: 1.4, 1.3, 1.2, 1.1, 1.0.
//   - Create: AES Symmetric Key, Cryptographic Length 128, 192 or 256 (default 256), Name, Cryptographic
//     Usage Mask (default Encrypt|Decrypt). The new key is Pre-Active.
//   - Register: a Symmetric Key as Raw or Transparent Symmetric Key material of 16, 24 or 32 bytes.
//   - Activate: Pre-Active to Active.
//   - Locate: filters on Name, Object Type, State, Cryptographic Algorithm, Cryptographic Length (all must
//     match); newest first; Offset Items and Maximum Items; Located Items for 1.3+ clients.
//   - Get: the key block in Raw (default) or Transparent Symmetric Key format, never wrapped.
//   - Get Attributes: Unique Identifier, Name, Object Type, Cryptographic Algorithm, Length and Usage Mask,
//     State, Initial, Activation, Deactivation, Compromise and Last Change Date.
//   - Revoke: Key Compromise / CA Compromise make the key Compromised, other reasons Deactivated.
//   - Destroy: deletes a key that is not Active (KMIP requires revoking first).
//
// A Username and Password credential in the request header is accepted and ignored: access is decided by
// the client certificate alone.
//
// Create, Register, Locate and Get set the ID placeholder, so later items of the same batch may omit the
// Unique Identifier (Create + Activate in one message). Any other operation is answered with a failed
// batch item, Result Reason Operation Not Supported and a Result Message; the connection stays open.
//
// # Robustness and compatibility
//
// kmip-go v0.1.0 drops the connection (by panicking) when a handler error has no Result Reason, writes
// nothing for a request that does not parse, and lets a client claim any message length. Here every
// handler error carries a reason (General Failure at worst, panics included), unparsable requests get an
// Invalid Message answer, and requests are framed by kms/internal/wire with a 1 MiB limit. For PyKMIP
// clients the response drops Server Correlation Value (a 1.4 field PyKMIP 0.10 cannot parse), answers in
// the client's protocol version, and always has a Result Message on failures. Locate sorts newest
// first, as PyKMIP does.
//
// # Store
//
// The store is one JSON file (see storeFile), mode 0600, rewritten atomically (temporary file, fsync,
// rename, fsync of the directory) before each change is answered, and locked with flock on
// <store>.lock so two servers never share it. Keys keep their UID, name, type, algorithm, length, usage
// mask, state, dates and material across restarts. UIDs are random UUIDs.
package kmipserver
