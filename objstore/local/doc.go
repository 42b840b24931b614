// Package local is the default objstore.Store: buckets and objects kept as directories and files under one root
// directory.
//
// # Layout
//
//	root/                  created 0700 if missing
//	root/.kmipfs-store     marker: "kmipfs local object store, layout 1"; New writes it into an empty root and
//	                       refuses (ErrForeignRoot) a root that holds other files and no marker
//	root/.tmp/             temporary files of Puts in flight; never a bucket (".tmp" is not a valid bucket name)
//	root/<bucket>/         one directory per bucket, 0700
//	root/<bucket>/a/b      the object with key "a/b", 0600; key segments become subdirectories, 0700
//
// Because segments become directories, "a" and "a/b" cannot both be objects; the second Put fails with an error
// wrapping objstore.ErrInvalidKey. A key segment may be at most 255 bytes (NAME_MAX); longer ones are refused the
// same way. Buckets lists the directories of root whose names are valid bucket names, so ".tmp" and a file
// system's "lost+found" never show up as buckets.
//
// # Atomicity and durability
//
// Put writes the object to a new temporary file in root/.tmp (the same file system as the buckets, so that rename
// is atomic) and renames it into place. A reader therefore sees the old object or the new one, never a part, and
// a Put that returned nil survives a crash of the process (the data is in the kernel). It survives a power loss
// once Sync returns: Sync fsyncs the objects put since the last Sync and the directories that got entries for them
// (files first, so that on a journaling file system one commit covers the lot), or, when more than a few dozen are
// waiting, writes back the whole file system with one syncfs(2). With Options.SyncEachPut, Put instead fsyncs the temporary file before the rename
// and then the directory that holds the new name, and the parent of every directory it had to create, so each
// Put alone survives a power loss (at two or more fsyncs per Put). A Put that fails at any point (a full disk,
// the bucket removed under it, a cancelled ctx) removes its temporary file and leaves the old object, if any, in
// place. Get opens the file once and reads the range with ReadAt, so it reads a consistent object even while a Put
// replaces it, and never reads more of the file than asked.
//
// Delete unlinks the file and then removes the directories it leaves empty, best effort; it does not fsync, because
// an object that reappears after a crash is an orphan that garbage collection and fsck already handle.
// CreateBucket and DeleteBucket fsync root.
//
// # Temporary files
//
// A temporary file is named "put-<pid>-<random>" after the process that writes it. New removes the files of
// processes that no longer exist (and anything else that does not look like a temporary file of ours), so files
// left by a crash do not pile up, while a second Store on the same root in a live process is left alone.
//
// # Concurrency
//
// All methods are safe for concurrent use. One read-write mutex orders the creation of key directories against
// their removal: Put holds it shared while it creates the directories of a key and renames the object into place,
// and Delete and DeleteBucket hold it exclusively only while they remove directories that became empty. Without
// it, a Delete could remove a directory between another Put's mkdir and its rename. File writes, fsyncs and reads
// happen outside the mutex.
//
// # Errors
//
// ENOSPC and EDQUOT from the OS become errors wrapping both objstore.ErrNoSpace and the OS error, so errors.Is
// works for either and the message keeps the OS's text. Get, Stat, Put, Delete and List on a bucket that does not
// exist return objstore.ErrBucketNotFound.
package local
