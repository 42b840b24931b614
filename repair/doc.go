// Package repair works on an unmounted kmipfs filesystem: Check is kmipfs fsck (metadata against
// the object store, every block authenticated with its file's data key, orphan objects found and
// optionally deleted) and Rekey is kmipfs rekey (data keys re-wrapped from one KMIP key to
// another, without touching file data).
//
// Like fs for a mount, repair is where meta, objstore, crypt and the KMIP secrets meet; it takes
// them through the same narrow interfaces (a *meta.DB, an objstore.Store and a Secrets source,
// normally a kms.Cache in front of a kms.Client). It does not import fs: it needs none of FUSE,
// and the few data-path rules it shares with fs (the object naming "<file id>/<16 hex gen>", slot
// i of an object at byte i*crypt.CipherBS, the associated data of blocks and wrapped keys) are the
// on-store format of docs/FORMAT.md, which both follow.
//
// # Concurrency
//
// Neither Check nor Rekey may run while the filesystem is mounted: the caller opens the metadata
// database, and Badger's directory lock already keeps a mount out. Check reads the database and
// the store and changes nothing but the orphan objects it deletes when asked to. Rekey changes each
// file in its own meta transaction, so an interrupted run leaves every file either on the old key
// or on the new one, and a second run skips the files already done.
//
// # Errors
//
// A problem in the filesystem (a damaged block, a missing object, a data key that does not
// unwrap) is a Problem in the report, not an error. An error means the check or the re-keying
// could not go on: the store or the KMIP server failed, or the context ended.
package repair
