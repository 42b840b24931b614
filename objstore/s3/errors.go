package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/smithy-go"

	"github.com/kmipfs/kmipfs/objstore"
)

var (
	// ErrObjectExists is returned (wrapped) by Create when the object already exists.
	ErrObjectExists = errors.New("objstore: object already exists")
	// ErrConditionalUnsupported is returned (wrapped) by Create when the server does not implement
	// conditional writes (If-None-Match: *); the caller may fall back to Put.
	ErrConditionalUnsupported = errors.New("objstore: the S3 server does not support conditional writes")
)

// transientError marks a failure that the same request may not meet again: a network error, a request that
// timed out, a 5xx, throttling. IsTransient finds it; the retry decorator retries only those.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

// IsTransient reports whether err is a failure of a Store in this package that a retry may cure. Sentinel
// errors (not found, exists, not empty, invalid names), refused credentials, certificate errors and the
// caller's own cancellation are not transient.
func IsTransient(err error) bool {
	var t *transientError
	return errors.As(err, &t)
}

// timeoutError is a request that ran into Config.Timeout (the caller's ctx was still live).
type timeoutError struct{ after time.Duration }

func (e *timeoutError) Error() string {
	return fmt.Sprintf("no answer within %v (store.timeout): %v", e.after, context.DeadlineExceeded)
}

// s3Error is what an S3 response error says: the HTTP status and the S3 error code ("" when a HEAD response
// had no body to carry one).
func s3Error(err error) (status int, code string) {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	return status, code
}

// sentinelFor maps an S3 error code to the objstore sentinel it means, or nil.
func sentinelFor(code string) error {
	switch code {
	case "NoSuchKey":
		return objstore.ErrNotFound
	case "NoSuchBucket":
		return objstore.ErrBucketNotFound
	case "BucketAlreadyOwnedByYou", "BucketAlreadyExists":
		return objstore.ErrBucketExists
	case "BucketNotEmpty":
		return objstore.ErrBucketNotEmpty
	case "InvalidBucketName":
		return objstore.ErrInvalidBucketName
	case "QuotaExceeded", "XMinioStorageFull", "StorageFull", "InsufficientStorage", "EntityTooLarge":
		// Ceph's radosgw says QuotaExceeded for bucket and user quotas; MinIO XMinioStorageFull.
		return objstore.ErrNoSpace
	case "ObjectParentIsFile", "ExistingObjectIsDirectory", "DirectoryObjectContainsData", "ObjectIsDirectory":
		// A file-backed server (versitygw posix) cannot hold both "a" and "a/b": the one documented difference
		// between backends, see the objstore package documentation.
		return objstore.ErrInvalidKey
	}
	return nil
}

// credentialHint is added to errors that mean the server refused who we are.
const credentialHint = "check store.credentials_file (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and store.region"

// wrapErr turns an error of an S3 call into the error the Store returns: `objstore: OP "NAME": ...`, wrapping
// the objstore sentinel the S3 error code means (and naming the code), the caller's ctx.Err(), or the SDK's error
// marked transient when a retry may cure it.
func wrapErr(ctx context.Context, op, name string, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		// The caller gave up; say so first, whatever the SDK made of it.
		return fmt.Errorf("objstore: %s %q: %w", op, name, cerr)
	}
	if errors.Is(err, objstore.ErrBucketNotFound) || errors.Is(err, objstore.ErrNotFound) {
		return fmt.Errorf("objstore: %s %q: %w", op, name, err) // already classified
	}
	var te *timeoutError
	if errors.As(err, &te) {
		return fmt.Errorf("objstore: %s %q: %w", op, name, &transientError{te})
	}
	status, code := s3Error(err)
	if s := sentinelFor(code); s != nil {
		return fmt.Errorf("objstore: %s %q: %w (S3 error %s)", op, name, s, code)
	}
	switch {
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		return fmt.Errorf("objstore: %s %q: %w", op, name, ErrObjectExists)
	case code == "AccessDenied" || code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" ||
		code == "AuthorizationHeaderMalformed" || status == http.StatusForbidden:
		return fmt.Errorf("objstore: %s %q: %w (%s)", op, name, err, credentialHint)
	case status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout ||
		code == "SlowDown" || code == "RequestTimeout" || code == "Throttling" || code == "OperationAborted" ||
		code == "ConditionalRequestConflict" || code == "InternalError":
		return fmt.Errorf("objstore: %s %q: %w", op, name, &transientError{err})
	case status != 0:
		// Any other 4xx: the request itself is wrong, and sending it again will not help.
		return fmt.Errorf("objstore: %s %q: %w", op, name, err)
	}
	// No HTTP response at all: a network error, unless the TLS certificate was refused.
	var (
		unknownCA   x509.UnknownAuthorityError
		invalidCert x509.CertificateInvalidError
		hostname    x509.HostnameError
		verify      *tls.CertificateVerificationError
	)
	if errors.As(err, &unknownCA) || errors.As(err, &invalidCert) || errors.As(err, &hostname) ||
		errors.As(err, &verify) {
		return fmt.Errorf("objstore: %s %q: %w (check store.ca_path and the endpoint's certificate)", op, name, err)
	}
	return fmt.Errorf("objstore: %s %q: %w", op, name, &transientError{err})
}
