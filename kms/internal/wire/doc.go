// Package wire holds the KMIP 1.x pieces that the kms client and the embedded kmipserver share and that
// gemalto/kmip-go v0.1.0 does not provide: message framing with a size limit, the 1.x payload types it lacks
// (Locate, Activate, GetAttributes, Revoke, and a full Get request), and helpers that read attribute values
// decoded into interface{} fields.
//
// # Framing
//
// A KMIP message over TLS is one TTLV structure: a 3-byte tag, a type byte, a 4-byte big-endian length and
// the value. [ReadMessage] reads exactly one such message, refuses a length over its limit before
// allocating, and checks every nested header (tags, types, lengths, padding, nesting depth) so that the
// ttlv decoder only ever sees well-formed bytes. kmip-go's own ttlv.Decoder.NextTTLV allocates whatever
// length the peer claims, which is why neither side uses it on a network stream.
//
// # Why not kmip20
//
// Importing github.com/gemalto/kmip-go/kmip20 registers an enumeration for the Unique Identifier tag, and
// from then on numeric UIDs such as PyKMIP's "1" are encoded as enumerations, which PyKMIP rejects. This
// module therefore never imports kmip20 and defines the 1.x payloads here.
//
// # Untrusted input
//
// Everything here may be handed bytes from a peer. Nothing panics on them; [Unmarshal] also recovers from
// panics inside kmip-go's reflection decoder, which does panic on some type mismatches.
package wire
