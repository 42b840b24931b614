package s3

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kmipfs/kmipfs/objstore"
)

var (
	_ objstore.Store        = (*Store)(nil)
	_ objstore.BucketLister = (*Store)(nil)
	_ objstore.Syncer       = (*Store)(nil)
	_ Creator               = (*Store)(nil)
)

// Creator is the optional ability to store an object only if its key is free (S3's If-None-Match: *), found by
// type assertion on a Store of this package or on its decorators.
type Creator interface {
	// Create stores data as the object key, like Put, unless an object with that key exists: then it returns an
	// error wrapping ErrObjectExists and changes nothing. A server without conditional writes makes it return an
	// error wrapping ErrConditionalUnsupported. It does not retain data.
	Create(ctx context.Context, bucket, key string, data []byte) error
}

// collisionTries is how often Put sends a request that a file-backed server refused as a key collision.
const collisionTries = 3

// Options are the parts of a Store that do not come from the config file.
type Options struct {
	// Logger receives retries (Info) from the decorators Open adds; the backend itself logs nothing, it returns
	// errors. Nil discards.
	Logger *slog.Logger
}

// Store is an objstore.Store on an S3 bucket namespace. It sends each call as one request (or one multipart
// upload) and does not retry or limit concurrency itself: Open wraps it in Limit and Retry.
type Store struct {
	client    *awss3.Client
	prefix    string
	region    string
	timeout   time.Duration
	threshold int64
	partSize  int64
}

// Open returns the Store for cfg (after SetDefaults and Validate) wrapped in the decorators every mount uses:
// a bound of cfg.Concurrency operations in flight (Limit) and cfg.Retries retries with backoff of transient
// failures (Retry), the retry outermost so that a request waiting out its backoff holds no slot.
func Open(cfg Config, opts Options) (objstore.Store, error) {
	s, err := New(cfg)
	if err != nil {
		return nil, err
	}
	return NewRetry(NewLimit(s, cfg.Concurrency), RetryOptions{Retries: cfg.Retries, Logger: opts.Logger}), nil
}

// New returns the bare backend for cfg (after SetDefaults and Validate). It reads the credentials and the CA file
// but sends no request, so that a mount can start while the server is briefly down.
func New(cfg Config) (*Store, error) {
	cfg.SetDefaults()
	if err := validPrefix(cfg.BucketPrefix); err != nil {
		return nil, fmt.Errorf("objstore: s3: store.bucket_prefix: %w", err)
	}
	creds, err := credentialsFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("objstore: s3: %w", err)
	}
	var pool *x509.CertPool
	if cfg.CAPath != "" {
		if pool, err = loadCAPool(cfg.CAPath); err != nil {
			return nil, fmt.Errorf("objstore: s3: store.ca_path: %w", err)
		}
	}
	hc := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = cfg.ConnectTimeout.Duration }).
		WithTransportOptions(func(tr *http.Transport) {
			tr.TLSHandshakeTimeout = cfg.ConnectTimeout.Duration
			tr.MaxIdleConnsPerHost = max(cfg.Concurrency, 2)
			if pool != nil {
				if tr.TLSClientConfig == nil {
					tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
				}
				tr.TLSClientConfig.RootCAs = pool
			}
		})
	o := awss3.Options{
		Region:       cfg.Region,
		Credentials:  aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)),
		UsePathStyle: cfg.PathStyle,
		HTTPClient:   hc,
		// Retries are the Retry decorator's job, so that they are counted, logged and bounded in one place.
		Retryer: aws.NopRetryer{},
		// The SDK's default CRC32 trailers are unknown to older S3 servers (Ceph 16), and every byte kmipfs
		// stores is authenticated by AES-GCM anyway.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if cfg.Endpoint != "" {
		o.BaseEndpoint = aws.String(strings.TrimSuffix(cfg.Endpoint, "/"))
	}
	return &Store{
		client:    awss3.New(o),
		prefix:    cfg.BucketPrefix,
		region:    cfg.Region,
		timeout:   cfg.Timeout.Duration,
		threshold: cfg.MultipartThreshold,
		partSize:  cfg.PartSize,
	}, nil
}

// credentialsFor reads the access key from cfg.CredentialsFile, or else from the environment.
func credentialsFor(cfg Config) (aws.Credentials, error) {
	if cfg.CredentialsFile != "" {
		c, err := loadCredentials(cfg.CredentialsFile, cfg.Profile)
		if err != nil {
			return aws.Credentials{}, fmt.Errorf("store.credentials_file: %w", err)
		}
		return c, nil
	}
	c := aws.Credentials{
		AccessKeyID:     os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken:    os.Getenv("AWS_SESSION_TOKEN"),
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return aws.Credentials{}, errors.New("no credentials: set store.credentials_file, or AWS_ACCESS_KEY_ID " +
			"and AWS_SECRET_ACCESS_KEY in the environment")
	}
	return c, nil
}

// loadCredentials reads profile from a file in the AWS shared-credentials format. Errors name the file and the
// profile, never a value from it.
func loadCredentials(path, profile string) (aws.Credentials, error) {
	if profile == "" {
		profile = DefaultProfile
	}
	if _, err := os.Stat(path); err != nil {
		return aws.Credentials{}, err
	}
	// The ctx only reaches the SDK's file reading, which has nothing to wait for.
	sc, err := config.LoadSharedConfigProfile(context.Background(), profile, func(o *config.LoadSharedConfigOptions) {
		o.CredentialsFiles = []string{path}
		o.ConfigFiles = []string{} // only this file, never ~/.aws/config
	})
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("%s: cannot read profile [%s] (expected the AWS shared-credentials "+
			"format): %w", path, profile, err)
	}
	if sc.Credentials.AccessKeyID == "" || sc.Credentials.SecretAccessKey == "" {
		return aws.Credentials{}, fmt.Errorf("%s: profile [%s] lacks aws_access_key_id or aws_secret_access_key",
			path, profile)
	}
	return sc.Credentials, nil
}

// loadCAPool returns the system pool plus the PEM certificates in path.
func loadCAPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}

// bucketName maps a kmipfs bucket name to its S3 bucket: the prefix and the name, which must pass S3's rules
// (3 to 63 characters among them).
func (s *Store) bucketName(bucket string) (string, error) {
	if err := objstore.ValidBucketName(bucket); err != nil {
		return "", err
	}
	full := s.prefix + bucket
	if len(full) < 3 || len(full) > 63 {
		return "", fmt.Errorf("%w %q: S3 bucket names are 3 to 63 characters, and store.bucket_prefix %q + %q is %d",
			objstore.ErrInvalidBucketName, bucket, s.prefix, bucket, len(full))
	}
	if err := objstore.ValidBucketName(full); err != nil {
		return "", fmt.Errorf("%w (the S3 bucket name is store.bucket_prefix %q + %q)", err, s.prefix, bucket)
	}
	return full, nil
}

// object checks bucket and key and returns the S3 bucket name.
func (s *Store) object(bucket, key string) (string, error) {
	b, err := s.bucketName(bucket)
	if err != nil {
		return "", err
	}
	if err := objstore.ValidKey(key); err != nil {
		return "", err
	}
	return b, nil
}

// call runs one request under Config.Timeout. The timeout is the request's own: when it fires while the caller's
// ctx is live, the error says so (and is transient); fn must read any response body inside, so that the timeout
// covers it.
func (s *Store) call(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := fn(rctx)
	if err != nil && ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
		return &timeoutError{after: s.timeout}
	}
	return err
}

// CreateBucket implements objstore.Store. It asks HeadBucket first, because AWS's us-east-1 answers 200 to a
// CreateBucket of a bucket the account already owns; a bucket owned by another account is ErrBucketExists too.
func (s *Store) CreateBucket(ctx context.Context, bucket string) error {
	b, err := s.bucketName(bucket)
	if err != nil {
		return fmt.Errorf("objstore: create bucket: %w", err)
	}
	exists, err := s.bucketExists(ctx, b)
	if status, _ := s3Error(err); status == http.StatusForbidden {
		// A HEAD has no body to say which: refused credentials, or a bucket of another account.
		return fmt.Errorf("objstore: create bucket %q: %w (%s; or the S3 bucket exists and belongs to another "+
			"account: choose another name or store.bucket_prefix)", b, err, credentialHint)
	}
	if err != nil {
		return wrapErr(ctx, "create bucket", b, err)
	}
	if exists {
		return fmt.Errorf("objstore: create bucket %q: %w", b, objstore.ErrBucketExists)
	}
	in := &awss3.CreateBucketInput{Bucket: aws.String(b)}
	if s.region != "us-east-1" {
		// AWS refuses a LocationConstraint of us-east-1 and needs one anywhere else; Ceph takes its zonegroup.
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{
			LocationConstraint: types.BucketLocationConstraint(s.region),
		}
	}
	err = s.call(ctx, func(ctx context.Context) error {
		_, err := s.client.CreateBucket(ctx, in)
		return err
	})
	return wrapErr(ctx, "create bucket", b, err)
}

// bucketExists asks HeadBucket. A 403 is an error (the bucket may exist, owned by someone else).
func (s *Store) bucketExists(ctx context.Context, b string) (bool, error) {
	err := s.call(ctx, func(ctx context.Context) error {
		_, err := s.client.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: aws.String(b)})
		return err
	})
	if status, code := s3Error(err); status == http.StatusNotFound || code == "NoSuchBucket" || code == "NotFound" {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// emptyBucketTries bounds how often DeleteBucket sends a DeleteBucket that the server refused as not empty
// while a listing found the bucket empty; emptyBucketWait is the first pause between them, doubled each time
// (10 ms, 20 ms, ... about 0.6 s in all).
const (
	emptyBucketTries = 7
	emptyBucketWait  = 10 * time.Millisecond
)

// DeleteBucket implements objstore.Store. A refusal as not empty is checked with a listing before it is
// believed, for two reasons:
//
//   - A file-backed server (versitygw's posix backend) answers a DeleteObject of a key that a concurrent
//     DeleteObject is removing as done while the other request has yet to remove the key's empty parent
//     directory, and its DeleteBucket counts that directory as content. So a bucket whose last object has just
//     been deleted can be refused for a moment although it holds nothing; DeleteBucket asks again, a few times
//     over about half a second, while the listing stays empty.
//   - Unfinished multipart uploads (of a Put that died with its process) hold invisible parts that some servers
//     count as content. Those whose keys are objstore keys, as kmipfs's are, are aborted.
//
// It is ErrBucketNotEmpty when the bucket holds any object, kmipfs's or not, or an unfinished upload of a key
// kmipfs would not write: DeleteBucket never deletes what it did not write.
func (s *Store) DeleteBucket(ctx context.Context, bucket string) error {
	b, err := s.bucketName(bucket)
	if err != nil {
		return fmt.Errorf("objstore: delete bucket: %w", err)
	}
	wait := emptyBucketWait
	for try := 1; ; try++ {
		err = s.call(ctx, func(ctx context.Context) error {
			_, err := s.client.DeleteBucket(ctx, &awss3.DeleteBucketInput{Bucket: aws.String(b)})
			return err
		})
		if err == nil || codeOf(err) != "BucketNotEmpty" || try == emptyBucketTries {
			break
		}
		empty, cerr := s.clearForDelete(ctx, b)
		if cerr != nil {
			return wrapErr(ctx, "delete bucket", b, cerr)
		}
		if !empty {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("objstore: delete bucket %q: %w", b, ctx.Err())
		case <-time.After(wait):
		}
		wait *= 2
	}
	if err != nil {
		err = s.bucketGone(ctx, b, err)
	}
	return wrapErr(ctx, "delete bucket", b, err)
}

// clearForDelete reports whether bucket b holds no object and no unfinished multipart upload other than
// those of objstore keys, which it aborts: whether a DeleteBucket refused as not empty is worth sending again.
func (s *Store) clearForDelete(ctx context.Context, b string) (bool, error) {
	var objects int32
	err := s.call(ctx, func(ctx context.Context) error {
		out, err := s.client.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: aws.String(b), MaxKeys: aws.Int32(1)})
		if err == nil {
			objects = int32(len(out.Contents))
		}
		return err
	})
	if err != nil || objects > 0 {
		return false, err
	}
	in := &awss3.ListMultipartUploadsInput{Bucket: aws.String(b)}
	empty := true
	for {
		var out *awss3.ListMultipartUploadsOutput
		err := s.call(ctx, func(ctx context.Context) error {
			var err error
			out, err = s.client.ListMultipartUploads(ctx, in)
			return err
		})
		if err != nil {
			return false, err
		}
		for _, u := range out.Uploads {
			if objstore.ValidKey(aws.ToString(u.Key)) != nil {
				empty = false // not kmipfs's: leave it, and the bucket
				continue
			}
			err := s.call(ctx, func(ctx context.Context) error {
				_, err := s.client.AbortMultipartUpload(ctx, &awss3.AbortMultipartUploadInput{
					Bucket: aws.String(b), Key: u.Key, UploadId: u.UploadId,
				})
				return err
			})
			if err != nil && codeOf(err) != "NoSuchUpload" {
				return false, err
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			return empty, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// Buckets implements objstore.BucketLister: the S3 buckets whose names start with the configured prefix, with
// the prefix removed, and only those whose rest is a valid kmipfs bucket name. Other buckets of the account are
// not kmipfs's and are never listed.
func (s *Store) Buckets(ctx context.Context) ([]string, error) {
	var names []string
	var token *string
	for {
		var out *awss3.ListBucketsOutput
		err := s.call(ctx, func(ctx context.Context) error {
			var err error
			out, err = s.client.ListBuckets(ctx, &awss3.ListBucketsInput{
				ContinuationToken: token,
				Prefix:            nonEmpty(s.prefix),
			})
			return err
		})
		if err != nil {
			return nil, wrapErr(ctx, "list buckets", s.prefix+"*", err)
		}
		for _, bk := range out.Buckets {
			name, ok := strings.CutPrefix(aws.ToString(bk.Name), s.prefix)
			if ok && objstore.ValidBucketName(name) == nil {
				names = append(names, name)
			}
		}
		if aws.ToString(out.ContinuationToken) == "" || len(out.Buckets) == 0 {
			break
		}
		token = out.ContinuationToken
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

// Put implements objstore.Store. Objects from Config.MultipartThreshold up go up as a multipart upload of
// Config.PartSize parts, which S3 makes visible only when it completes, so a Put is atomic either way. The body
// of every request is a bytes.Reader, which the SDK can seek to sign it and to resend it.
func (s *Store) Put(ctx context.Context, bucket, key string, data []byte) error {
	return s.put(ctx, "put", bucket, key, data, false)
}

// Create implements Creator with If-None-Match: *.
func (s *Store) Create(ctx context.Context, bucket, key string, data []byte) error {
	return s.put(ctx, "create", bucket, key, data, true)
}

func (s *Store) put(ctx context.Context, op, bucket, key string, data []byte, ifAbsent bool) error {
	b, err := s.object(bucket, key)
	if err != nil {
		return fmt.Errorf("objstore: %s: %w", op, err)
	}
	name := b + "/" + key
	var ifNoneMatch *string
	if ifAbsent {
		ifNoneMatch = aws.String("*")
	}
	// A file-backed server (versitygw posix) refuses a key whose directory a concurrent Delete of a neighbour
	// is removing, with the same codes as a real "a" and "a/b" collision; a real one fails every time.
	for range collisionTries {
		if int64(len(data)) >= s.threshold && int64(len(data)) > s.partSize {
			err = s.multipart(ctx, b, key, data, ifNoneMatch)
		} else {
			err = s.call(ctx, func(ctx context.Context) error {
				_, err := s.client.PutObject(ctx, &awss3.PutObjectInput{
					Bucket:        aws.String(b),
					Key:           aws.String(key),
					Body:          bytes.NewReader(data),
					ContentLength: aws.Int64(int64(len(data))),
					IfNoneMatch:   ifNoneMatch,
				})
				return err
			})
		}
		if err == nil || !errors.Is(sentinelFor(codeOf(err)), objstore.ErrInvalidKey) {
			break
		}
	}
	if err != nil {
		err = s.bucketGone(ctx, b, err)
	}
	if ifAbsent && err != nil {
		if status, code := s3Error(err); code == "NotImplemented" || status == http.StatusNotImplemented {
			return fmt.Errorf("objstore: %s %q: %w: %w", op, name, ErrConditionalUnsupported, err)
		}
	}
	return wrapErr(ctx, op, name, err)
}

// multipart uploads data in parts, one request at a time (the concurrency bound counts the Put as one
// operation), and aborts the upload if any part fails, so that no invisible parts are left to pay for.
func (s *Store) multipart(ctx context.Context, b, key string, data []byte, ifNoneMatch *string) error {
	var id *string
	err := s.call(ctx, func(ctx context.Context) error {
		out, err := s.client.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{
			Bucket: aws.String(b), Key: aws.String(key),
		})
		if err == nil {
			id = out.UploadId
		}
		return err
	})
	if err != nil {
		return err
	}
	var parts []types.CompletedPart
	for off, n := int64(0), int32(1); off < int64(len(data)); off, n = off+s.partSize, n+1 {
		part := data[off:min(off+s.partSize, int64(len(data)))]
		err = s.call(ctx, func(ctx context.Context) error {
			out, err := s.client.UploadPart(ctx, &awss3.UploadPartInput{
				Bucket:        aws.String(b),
				Key:           aws.String(key),
				UploadId:      id,
				PartNumber:    aws.Int32(n),
				Body:          bytes.NewReader(part),
				ContentLength: aws.Int64(int64(len(part))),
			})
			if err == nil {
				parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(n)})
			}
			return err
		})
		if err != nil {
			break
		}
	}
	if err == nil {
		err = s.call(ctx, func(ctx context.Context) error {
			_, err := s.client.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{
				Bucket:          aws.String(b),
				Key:             aws.String(key),
				UploadId:        id,
				MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
				IfNoneMatch:     ifNoneMatch,
			})
			return err
		})
	}
	if err != nil {
		// Abort even when the caller's ctx is done: the parts would otherwise stay, invisible and billed.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
		_, _ = s.client.AbortMultipartUpload(actx, &awss3.AbortMultipartUploadInput{
			Bucket: aws.String(b), Key: aws.String(key), UploadId: id,
		})
		cancel()
	}
	return err
}

// Get implements objstore.Store with one ranged GET. A range that starts at or after the end of the object is
// S3's 416 InvalidRange, which Get turns into no bytes and no error, as the contract says.
func (s *Store) Get(ctx context.Context, bucket, key string, off, length int64) ([]byte, error) {
	b, err := s.object(bucket, key)
	if err != nil {
		return nil, fmt.Errorf("objstore: get: %w", err)
	}
	name := b + "/" + key
	if off < 0 {
		return nil, fmt.Errorf("objstore: get %q: negative offset %d", name, off)
	}
	if length == 0 {
		// No range header means "zero bytes"; still report a missing object or bucket.
		if _, err := s.Stat(ctx, bucket, key); err != nil {
			return nil, err
		}
		return nil, nil
	}
	in := &awss3.GetObjectInput{Bucket: aws.String(b), Key: aws.String(key)}
	switch {
	case length < 0 || length > math.MaxInt64-off:
		if off > 0 {
			in.Range = aws.String(fmt.Sprintf("bytes=%d-", off))
		}
	default:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", off, off+length-1))
	}
	var data []byte
	err = s.call(ctx, func(ctx context.Context) error {
		out, err := s.client.GetObject(ctx, in)
		if err != nil {
			return err
		}
		defer out.Body.Close()
		size := aws.ToInt64(out.ContentLength)
		if length > 0 && size > length {
			return fmt.Errorf("the server sent %d bytes for a range of %d", size, length)
		}
		data = make([]byte, 0, max(size, 0))
		buf := bytes.NewBuffer(data)
		if _, err := buf.ReadFrom(out.Body); err != nil {
			return err
		}
		data = buf.Bytes()
		if size >= 0 && int64(len(data)) != size {
			return &transientError{fmt.Errorf("read %d of %d bytes: %w", len(data), size, io.ErrUnexpectedEOF)}
		}
		return nil
	})
	if err != nil {
		if status, code := s3Error(err); code == "InvalidRange" || status == http.StatusRequestedRangeNotSatisfiable {
			return nil, nil
		}
		if status, code := s3Error(err); status == http.StatusNotFound && code == "" {
			return nil, s.notFound(ctx, "get", b, key, err)
		}
		return nil, wrapErr(ctx, "get", name, err)
	}
	if length > 0 && int64(len(data)) > length {
		data = data[:length]
	}
	return data, nil
}

// notFound tells a missing object from a missing bucket after a 404 that carried no error code (HEAD
// responses have no body), with a HeadBucket.
func (s *Store) notFound(ctx context.Context, op, b, key string, cause error) error {
	exists, err := s.bucketExists(ctx, b)
	switch {
	case err != nil:
		return wrapErr(ctx, op, b+"/"+key, cause)
	case exists:
		return fmt.Errorf("objstore: %s %q: %w", op, b+"/"+key, objstore.ErrNotFound)
	default:
		return fmt.Errorf("objstore: %s %q: %w", op, b+"/"+key, objstore.ErrBucketNotFound)
	}
}

// bucketGone turns a 404 without an S3 error code (radosgw may close the connection before the error body
// of a PUT arrives) into ErrBucketNotFound when HeadBucket confirms the bucket is missing; any other error is
// returned as it is.
func (s *Store) bucketGone(ctx context.Context, b string, err error) error {
	if status, code := s3Error(err); status != http.StatusNotFound || code != "" {
		return err
	}
	if exists, herr := s.bucketExists(ctx, b); herr == nil && !exists {
		return fmt.Errorf("%w (S3 error NoSuchBucket, by HeadBucket after a 404 without a body)", objstore.ErrBucketNotFound)
	}
	return err
}

// Stat implements objstore.Store with a HEAD request.
func (s *Store) Stat(ctx context.Context, bucket, key string) (objstore.Info, error) {
	b, err := s.object(bucket, key)
	if err != nil {
		return objstore.Info{}, fmt.Errorf("objstore: stat: %w", err)
	}
	var size int64
	err = s.call(ctx, func(ctx context.Context) error {
		out, err := s.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String(b), Key: aws.String(key)})
		if err == nil {
			size = aws.ToInt64(out.ContentLength)
		}
		return err
	})
	if err != nil {
		if status, code := s3Error(err); status == http.StatusNotFound && (code == "" || code == "NotFound") {
			return objstore.Info{}, s.notFound(ctx, "stat", b, key, err)
		}
		return objstore.Info{}, wrapErr(ctx, "stat", b+"/"+key, err)
	}
	return objstore.Info{Key: key, Size: size}, nil
}

// Delete implements objstore.Store. S3 answers 204 for a missing key, so Delete is idempotent without help.
func (s *Store) Delete(ctx context.Context, bucket, key string) error {
	b, err := s.object(bucket, key)
	if err != nil {
		return fmt.Errorf("objstore: delete: %w", err)
	}
	err = s.call(ctx, func(ctx context.Context) error {
		_, err := s.client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String(b), Key: aws.String(key)})
		return err
	})
	if err != nil && errors.Is(sentinelFor(codeOf(err)), objstore.ErrInvalidKey) {
		// "key" is only a directory of other keys on a file-backed server: there is no such object to delete.
		return nil
	}
	if codeOf(err) == "NoSuchKey" {
		// S3 answers 204 for a missing key; versitygw's posix backend says NoSuchKey when a concurrent Delete
		// removed the file between its stat and its unlink. Either way the object is gone.
		return nil
	}
	if err != nil {
		err = s.bucketGone(ctx, b, err)
	}
	return wrapErr(ctx, "delete", b+"/"+key, err)
}

func codeOf(err error) string {
	_, code := s3Error(err)
	return code
}

// List implements objstore.Store with ListObjectsV2, one page (up to 1000 keys) per request; fn runs between
// requests, never inside one. S3 lists keys in UTF-8 binary order, which is byte order. Keys that are not valid
// objstore keys were not written by kmipfs and are skipped.
func (s *Store) List(ctx context.Context, bucket, prefix string, fn func(objstore.Info) error) error {
	b, err := s.bucketName(bucket)
	if err != nil {
		return fmt.Errorf("objstore: list: %w", err)
	}
	name := b + "/" + prefix
	if !listablePrefix(prefix) {
		// Still report a missing bucket or a done ctx.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("objstore: list %q: %w", name, err)
		}
		exists, err := s.bucketExists(ctx, b)
		if err != nil {
			return wrapErr(ctx, "list", name, err)
		}
		if !exists {
			return fmt.Errorf("objstore: list %q: %w", name, objstore.ErrBucketNotFound)
		}
		return nil
	}
	in := &awss3.ListObjectsV2Input{Bucket: aws.String(b), Prefix: nonEmpty(prefix)}
	for {
		var out *awss3.ListObjectsV2Output
		err := s.call(ctx, func(ctx context.Context) error {
			var err error
			out, err = s.client.ListObjectsV2(ctx, in)
			return err
		})
		if err != nil {
			return wrapErr(ctx, "list", name, s.bucketGone(ctx, b, err))
		}
		for _, o := range out.Contents {
			key := aws.ToString(o.Key)
			if !strings.HasPrefix(key, prefix) || objstore.ValidKey(key) != nil {
				continue
			}
			if err := fn(objstore.Info{Key: key, Size: aws.ToInt64(o.Size)}); err != nil {
				return err
			}
		}
		if !aws.ToBool(out.IsTruncated) || aws.ToString(out.NextContinuationToken) == "" {
			return nil
		}
		in.ContinuationToken = out.NextContinuationToken
	}
}

// listablePrefix reports whether some valid key can start with prefix: the key alphabet, no leading '/', and
// every complete segment (one followed by '/') neither empty nor "." nor "..". A prefix that fails lists
// nothing, without asking the server (which, if file-backed, might resolve "../").
func listablePrefix(prefix string) bool {
	if len(prefix) > objstore.MaxKeyLen {
		return false
	}
	if prefix == "" {
		return true
	}
	if prefix[0] == '/' {
		return false
	}
	segs := strings.Split(prefix, "/")
	for i, seg := range segs {
		for j := 0; j < len(seg); j++ {
			c := seg[j]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
				return false
			}
		}
		if i < len(segs)-1 && (seg == "" || seg == "." || seg == "..") {
			return false
		}
	}
	return true
}

// Sync implements objstore.Syncer. It does nothing: S3 acknowledges a PUT only once the object is durable.
func (s *Store) Sync(ctx context.Context) error { return ctx.Err() }
