package s3

import (
	"encoding"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// Defaults applied by Config.SetDefaults.
const (
	DefaultRegion             = "us-east-1"
	DefaultProfile            = "default"
	DefaultTimeout            = 60 * time.Second
	DefaultConnectTimeout     = 10 * time.Second
	DefaultConcurrency        = 32
	DefaultRetries            = 5
	DefaultMultipartThreshold = 64 << 20
	DefaultPartSize           = 16 << 20

	// MinPartSize is S3's smallest part of a multipart upload (all but the last part).
	MinPartSize = 5 << 20
	// maxPartSize is S3's largest part.
	maxPartSize = 5 << 30
	// maxPrefixLen leaves room for a bucket name of at least three characters (S3 allows 63).
	maxPrefixLen = 60
)

// Config is the S3 part of the [store] section of kmipfs.toml (backend = "s3"). cmd/kmipfs decodes TOML into
// it; the zero value of an optional field means its default. Credentials are never part of it: they come from
// CredentialsFile or from the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) environment
// variables, so that a config file can be world-readable and no secret is ever logged with the config.
type Config struct {
	// Endpoint is the service URL, "https://rgw.example.com:8000". Empty means AWS S3 itself, found by region.
	Endpoint string `toml:"endpoint,omitempty,omitzero"`
	// Region signs requests (SigV4); default "us-east-1", which Ceph and most S3-compatible servers accept.
	Region string `toml:"region,omitempty,omitzero"`
	// PathStyle addresses buckets as endpoint/bucket/key instead of bucket.endpoint/key (virtual-hosted).
	// Most self-hosted servers (Ceph without wildcard DNS, versitygw, MinIO) need it.
	PathStyle bool `toml:"path_style,omitempty,omitzero"`
	// BucketPrefix is prepended to every kmipfs bucket name to make the S3 bucket name, so that kmipfs buckets
	// live in a shared account under their own names ("kmipfs-" + "photos"). Only buckets with the prefix are
	// listed by Buckets.
	BucketPrefix string `toml:"bucket_prefix,omitempty,omitzero"`
	// CredentialsFile is a file in the AWS shared-credentials format ([default] aws_access_key_id = ...,
	// aws_secret_access_key = ..., optional aws_session_token). Empty: the AWS_* environment variables.
	CredentialsFile string `toml:"credentials_file,omitempty,omitzero"`
	// Profile is the section of CredentialsFile to use; default "default".
	Profile string `toml:"profile,omitempty,omitzero"`
	// CAPath is a PEM file of extra CA certificates to trust for an https endpoint (added to the system pool).
	CAPath string `toml:"ca_path,omitempty,omitzero"`
	// Timeout bounds one request (one part of a multipart upload, one page of a listing), including reading
	// the response body; default 60s. A request that times out is retried.
	Timeout Duration `toml:"timeout,omitempty,omitzero"`
	// ConnectTimeout bounds the TCP and TLS handshake of a new connection; default 10s.
	ConnectTimeout Duration `toml:"connect_timeout,omitempty,omitzero"`
	// Concurrency is the most store operations in flight at once; default 32.
	Concurrency int `toml:"concurrency,omitempty,omitzero"`
	// Retries is how many times a failed request that may succeed later (a network error, a timeout, a 5xx,
	// throttling) is retried with exponential backoff; default 5. Set it to -1 for no retries.
	Retries int `toml:"retries,omitempty,omitzero"`
	// MultipartThreshold is the object size from which Put uses a multipart upload; default 64 MiB.
	MultipartThreshold int64 `toml:"multipart_threshold,omitempty,omitzero"`
	// PartSize is the size of each part of a multipart upload; default 16 MiB, at least 5 MiB.
	PartSize int64 `toml:"part_size,omitempty,omitzero"`
}

// Duration is a time.Duration written in TOML as a string such as "30s", so that a config file says what unit
// it means.
type Duration struct{ time.Duration }

var (
	_ encoding.TextUnmarshaler = (*Duration)(nil)
	_ encoding.TextMarshaler   = Duration{}
)

// UnmarshalText parses a Go duration string ("1m30s").
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("expected a duration such as \"30s\" or \"2m\", got %q", text)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as Go's String form, which UnmarshalText reads back.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// SetDefaults fills every optional field that is unset.
func (c *Config) SetDefaults() {
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if c.Profile == "" {
		c.Profile = DefaultProfile
	}
	if c.Timeout.Duration == 0 {
		c.Timeout.Duration = DefaultTimeout
	}
	if c.ConnectTimeout.Duration == 0 {
		c.ConnectTimeout.Duration = DefaultConnectTimeout
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Retries == 0 {
		c.Retries = DefaultRetries
	}
	if c.MultipartThreshold == 0 {
		c.MultipartThreshold = DefaultMultipartThreshold
	}
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
}

// Validate checks every option and returns all problems joined, one per line, each naming the option (as
// "store.<name>") and what was expected. It reads CAPath and CredentialsFile, so a wrong path is reported at
// start and not at the first write. Unset optional fields are valid (they mean the default).
func (c *Config) Validate() error {
	var errs []error
	bad := func(option, format string, args ...any) {
		errs = append(errs, fmt.Errorf("store.%s: "+format, append([]any{option}, args...)...))
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		switch {
		case err != nil:
			bad("endpoint", "expected a URL such as \"https://s3.example.com:8000\": %v", err)
		case u.Scheme != "http" && u.Scheme != "https":
			bad("endpoint", "expected an http:// or https:// URL, got %q", c.Endpoint)
		case u.Host == "":
			bad("endpoint", "expected a host in %q", c.Endpoint)
		case u.User != nil:
			bad("endpoint", "must not contain credentials (use store.credentials_file or the AWS_* variables)")
		case u.Path != "" && u.Path != "/", u.RawQuery != "":
			bad("endpoint", "expected no path or query, got %q", c.Endpoint)
		}
	}
	if err := validPrefix(c.BucketPrefix); err != nil {
		bad("bucket_prefix", "%v", err)
	}
	if c.CredentialsFile != "" {
		if _, err := loadCredentials(c.CredentialsFile, c.Profile); err != nil {
			bad("credentials_file", "%v", err)
		}
	} else if os.Getenv("AWS_ACCESS_KEY_ID") == "" || os.Getenv("AWS_SECRET_ACCESS_KEY") == "" {
		bad("credentials_file", "not set, and AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both in the environment")
	}
	if c.CAPath != "" {
		if _, err := loadCAPool(c.CAPath); err != nil {
			bad("ca_path", "%v", err)
		}
	}
	if c.Timeout.Duration < 0 {
		bad("timeout", "expected a positive duration, got %v", c.Timeout.Duration)
	}
	if c.ConnectTimeout.Duration < 0 {
		bad("connect_timeout", "expected a positive duration, got %v", c.ConnectTimeout.Duration)
	}
	if c.Concurrency < 0 {
		bad("concurrency", "expected a positive number, got %d", c.Concurrency)
	}
	if c.Retries < -1 {
		bad("retries", "expected -1 (none) or a positive number, got %d", c.Retries)
	}
	if c.PartSize != 0 && (c.PartSize < MinPartSize || c.PartSize > maxPartSize) {
		bad("part_size", "expected %d (5 MiB) to %d (5 GiB) bytes, got %d", MinPartSize, int64(maxPartSize), c.PartSize)
	}
	if c.MultipartThreshold < 0 {
		bad("multipart_threshold", "expected a positive size in bytes, got %d", c.MultipartThreshold)
	}
	return errors.Join(errs...)
}

// validPrefix checks that prefix can start an S3 bucket name: S3's alphabet, a letter or digit first, and room
// for a name of at least three characters after it.
func validPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if len(prefix) > maxPrefixLen {
		return fmt.Errorf("expected at most %d characters, got %d", maxPrefixLen, len(prefix))
	}
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return fmt.Errorf("expected only lowercase letters, digits, '.' and '-', got %q", prefix)
		}
	}
	if c := prefix[0]; c == '.' || c == '-' {
		return fmt.Errorf("expected a letter or digit first, got %q", prefix)
	}
	if strings.Contains(prefix, "..") || strings.HasPrefix(prefix, "xn--") {
		return fmt.Errorf("%q cannot start a valid S3 bucket name", prefix)
	}
	return nil
}
