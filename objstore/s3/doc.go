// Package s3 is an objstore.Store on an S3-compatible object store: AWS S3, Ceph's Object Gateway (radosgw),
// versitygw, MinIO. It is built on aws-sdk-go-v2; docs/S3.md says why, and how to configure it.
//
// # Buckets
//
// A kmipfs bucket "b" is the S3 bucket Config.BucketPrefix + "b". kmipfs allows bucket names of one or two
// characters (objstore.ValidBucketName); S3 needs three to 63, so the prefix and the name together must pass S3's
// rules, or every method refuses the name with an error wrapping objstore.ErrInvalidBucketName that says so.
// Buckets lists only the S3 buckets that start with the prefix, with the prefix removed; buckets of the
// account without the prefix are never listed, created or deleted. With an empty prefix every bucket of the
// account whose name is a valid kmipfs name is listed, and CreateBucket of an existing one is ErrBucketExists
// (which the fs layer takes as "take it over"), so give kmipfs a prefix in an account it shares.
//
// # Objects
//
// Objects are S3 objects with the same key. Put sends one PutObject, or from Config.MultipartThreshold up a
// multipart upload that is aborted if any part fails; S3 makes an object visible only when it is complete, so a
// Put is atomic, and a Put that S3 acknowledged is durable (Sync is a no-op). Every request body is a
// bytes.Reader, which the SDK can seek to sign and to resend. Get is one ranged GET; a range that starts past
// the end of the object (S3's 416) reads as no bytes and no error, as objstore.Store says. List skips keys that
// are not valid objstore keys: kmipfs did not write them, and it does not touch them.
//
// Create stores an object only if its key is free (If-None-Match: *, which AWS S3, Ceph since Reef and
// versitygw implement); a server that does not is reported with ErrConditionalUnsupported.
//
// # Errors, retries, concurrency
//
// S3 error codes become the objstore sentinels (NoSuchKey is ErrNotFound, NoSuchBucket ErrBucketNotFound,
// BucketAlreadyOwnedByYou and BucketAlreadyExists ErrBucketExists, BucketNotEmpty ErrBucketNotEmpty,
// QuotaExceeded ErrNoSpace, and a file-backed server's refusal to hold both "a" and "a/b" ErrInvalidKey), and
// the message names the code. A refused signature or key adds a hint to check the credentials and the region; a
// refused certificate, store.ca_path. Network errors, timeouts, 5xx and throttling are transient (IsTransient).
//
// The backend (New) sends each call once, under Config.Timeout per request. Open adds two decorators, as
// STYLE.md asks: Limit bounds the operations in flight (Config.Concurrency) and Retry repeats transient
// failures with exponential backoff and jitter (Config.Retries). The SDK's own retryer is switched off, so that
// there is one retry policy. Credentials are read once by New, from Config.CredentialsFile or the environment,
// and never appear in an error or a log line.
package s3
