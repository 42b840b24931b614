// Package meta is the trusted metadata database of kmipfs, kept in Badger:
// inodes, directory entries, extended attributes, extent maps (which object
// slot holds which file block, sealed at which write generation), wrapped
// data keys, per-object reference counts and the GC queue.
//
// meta knows nothing of FUSE, permissions or cryptography. fs does every
// POSIX permission check and calls meta for each change; meta makes each
// change one atomic Badger transaction, so create, link, unlink, rename and
// a data commit are atomic and crash-safe. Wrapped keys are opaque bytes.
//
// # Transactions
//
// Every change runs as a closure in a read-write transaction that is retried
// on badger.ErrConflict (up to 50 times, with jittered exponential backoff
// from 50µs to 20ms), as juicefs pkg/meta/tkv_badger.go does. The context is
// checked before each attempt. Badger detects conflicts on the keys a
// transaction read, not on key ranges, so the schema keeps one rule that
// makes range checks safe: every operation that adds an entry to a directory
// also writes the directory's inode (its Mtime), and every operation that
// needs a directory to be empty (Rmdir, Rename over a directory) reads that
// inode. The same holds for the ancestor walk of Rename, which reads the
// Parent chain that any concurrent move of an ancestor writes.
//
// Reads (Get, Lookup, ReadDir, Extents, ...) use read-only snapshot
// transactions and never conflict.
//
// # Key schema
//
// Every key starts with one prefix byte naming its table. Integers in keys
// are big-endian so that keys of one inode sort, and iterate, in numeric
// order.
//
//	'V'                                   format record: "kmipfs-meta" + uvarint schema version (1)
//	'I' ino(8)                            inode record
//	'D' parent(8) name                    directory entry: ino and file type; names sort bytewise
//	'X' ino(8) name                       xattr value, raw bytes (at most 64 KiB)
//	'E' ino(8) firstBlock(8)              extent: count, object, slot, gen
//	'R' len(bucket)(2) bucket objectKey   live-block count of an object (absent at 0)
//	'G' len(bucket)(2) bucket objectKey   GC queue entry, empty value
//	'O' ino(8)                            orphan mark (Nlink 0), empty value
//	'C' 0x00                              counter base: inodes, bytes
//	'C' 0x01 session(8) n(8)              counter delta (see Counters)
//	'C' 0x02                              last session number
//	'S' "ino"                             Badger sequence lease for inode numbers
//
// Inode numbers come from the Badger sequence (leases of 256, so a crash
// skips at most that many); they are never reused. RootIno is 1 and is
// created with the format record on first open. Open refuses a database
// whose format version it does not know, and a non-empty Badger database
// without a format record, with ErrFormat.
//
// # Record encoding
//
// Values are a compact binary form written with encoding/binary: a version
// byte (1), then uvarints, zigzag varints for times and counter deltas, and
// uvarint-length-prefixed bytes for strings.
//
//	inode:  ver flags ino parent mode uid gid nlink size rdev atime mtime ctime
//	        bucket target [fileID(16) keyID keyName wrappedKey gen]
//	        (the bracketed part is present exactly when flags bit 0 is set,
//	        which it is exactly for regular files)
//	dirent: ver ino type            (type = mode & S_IFMT)
//	extent: ver count object slot gen
//	refcount, session: ver n
//	counters (base and delta): ver inodes bytes
//
// Decoders never panic and reject with ErrFormat: unknown versions or flags,
// truncated input, lengths past the end, values out of range (a uint32 field
// above 2^32-1, an inode without a file type, an empty extent, block or slot
// numbers past MaxBlocks), and trailing bytes. They are fuzzed
// (FuzzDecodeInode, FuzzDecodeExtent, ... with seeds in testdata/fuzz/).
// Records are at most a few hundred bytes (xattr values excepted), so with
// Badger's default ValueThreshold (1 MiB) they all live in the LSM tree.
//
// # Extent maps
//
// A file's extent map is the set of 'E' keys of its inode: runs of blocks
// [Block, Block+Count) that are slots [Slot, Slot+Count) of one immutable
// object, sealed at generation Gen. The map is kept non-overlapping and
// canonical: neighbouring extents that continue each other (same object and
// generation, contiguous slots) are merged. CommitWrite loads only the
// extents that overlap or touch the blocks it changes (a reverse seek finds
// the one that starts before them), splits or trims them, and writes the
// difference, so a small write to a large file costs little. ExtentsIn does
// the same for reads: the extents of a block range, not the whole map. A
// Write may also carry Holes, block ranges whose extents are dropped
// (fallocate PUNCH_HOLE and ZERO_RANGE), applied after its truncate and
// before its new blocks.
//
// For every object with live blocks an 'R' key counts them. CommitWrite and
// Release keep the counts in the same transaction as the extents; an object
// whose count reaches 0 loses its 'R' key and gets a 'G' key in the same
// transaction, so it is queued exactly once and survives a crash in the
// queue until DoneGC. An object is named by its bucket (the inode's Bucket,
// which never changes: cross-bucket moves are refused) and its key.
//
// A compaction copies the live ciphertext blocks of a fragmented file into
// one new object without re-encrypting them, so its Write carries a
// generation per block (Gens); with Compact set a block moves only if it is
// still sealed at that generation, so writes that raced the copy win.
// Objects lists the objects with live blocks, for fsck.
//
// # Orphans
//
// Unlink (or a Rename over a file) that drops Nlink to 0 does not delete the
// inode, because open files stay usable. It writes an 'O' key instead. fs
// calls Release when the last handle goes; after a crash no file is open, so
// fs releases everything Orphans lists at mount. Release deletes the extents
// in transactions of at most 2000, then the xattrs and the inode. CreateTmp
// (O_TMPFILE) makes an inode that is an orphan from the start; LinkOrphan
// gives it its first name and clears the mark (linkat of the open file).
//
// # Counters
//
// Stats must be cheap, but one counter key written by every transaction
// would make all creates and writes conflict with each other. So each
// transaction that changes the number of inodes or the total size of regular
// files writes its change blind to a fresh delta key ('C' 0x01 plus this
// open's session number and a per-session sequence number), which no other
// transaction reads and so cannot conflict on. The change is computed from
// the inodes the transaction created, changed and deleted, not by each
// operation. Stats sums the base and the deltas in one snapshot; a
// background fold merges the deltas into the base once 512 have piled up, and
// Open and Close fold too. Only folds write the base, one at a time.
//
// # Checking
//
// Check reads the whole database in one snapshot and reports every broken
// invariant (dangling entries, wrong Nlink, refcounts that differ from the
// extents, counters that differ from the inodes, undecodable records, ...),
// for kmipfs fsck and for the tests, which run it after every test.
//
// # Sizing
//
// Badger's defaults suit large servers. Open uses 2 memtables of 16 MiB, a
// 16 MiB block cache and an 8 MiB index cache (about 56 MiB in all), 64 MiB
// value log files, and Badger's logs go to the Logger from Options at Debug
// (Badger's Info and Debug) or Warn (its Warning and Error). One transaction
// can hold about 2.4 MiB of writes (15% of a memtable), some 20,000 extents:
// plenty for namespace operations, and the reason Release and DoneGC work in
// batches. A CommitWrite beyond that fails with ErrTooBig.
package meta
