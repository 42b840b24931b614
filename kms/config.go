package kms

import (
	"crypto/tls"
	"crypto/x509"
	"encoding"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Defaults applied by [Config.SetDefaults].
const (
	DefaultKeyTemplate = "$keyid"
	DefaultTimeout     = 10 * time.Second
	DefaultCacheTTL    = 5 * time.Minute
	DefaultNegativeTTL = 10 * time.Second
	DefaultErrorTTL    = time.Second
)

// Config is the [kms] section of kmipfs.toml. The option names mirror Ceph's "rgw crypt kmip *" options.
// cmd decodes TOML into it; the zero value of an optional field means its default.
type Config struct {
	Addr        string   `toml:"addr"`         // host:port, required
	CAPath      string   `toml:"ca_path"`      // CA that signed the server certificate, required
	ClientCert  string   `toml:"client_cert"`  // required
	ClientKey   string   `toml:"client_key"`   // required
	KeyTemplate string   `toml:"key_template"` // default "$keyid"
	ServerName  string   `toml:"server_name"`  // optional: name to verify in the server cert (default: host of Addr)
	Timeout     Duration `toml:"timeout"`      // bounds one client call (dial, request, retry); default 10s
	CacheTTL    Duration `toml:"cache_ttl"`    // how long a fetched secret is reused; default 5m
	NegativeTTL Duration `toml:"negative_ttl"` // how long "not found" is remembered; default 10s
	ErrorTTL    Duration `toml:"error_ttl"`    // how long any other failure is remembered; default 1s
	// StaleTTL is how old a cached secret may get and still be served while the server is unavailable
	// (refused, timed out; never after "not found"); default 10 x cache_ttl. Set it to cache_ttl to
	// serve nothing past its TTL.
	StaleTTL Duration `toml:"stale_ttl"`
	// Username and PasswordFile add a KMIP Username and Password credential to every request, for
	// servers that authenticate users on top of the client certificate. The file holds the password
	// (one line; a trailing newline is ignored). Both are optional; a password needs a username.
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
}

// Duration is a time.Duration written in TOML as a string such as "10s" or "5m", so that a config file
// says what unit it means.
type Duration struct{ time.Duration }

var (
	_ encoding.TextUnmarshaler = (*Duration)(nil)
	_ encoding.TextMarshaler   = Duration{}
)

// UnmarshalText parses a Go duration string ("1m30s").
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("expected a duration such as \"10s\" or \"5m\", got %q", text)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as Go's String form, which UnmarshalText reads back.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.Duration.String()), nil
}

// SetDefaults fills every optional field that is unset.
func (c *Config) SetDefaults() {
	if c.KeyTemplate == "" {
		c.KeyTemplate = DefaultKeyTemplate
	}
	if c.Timeout.Duration == 0 {
		c.Timeout.Duration = DefaultTimeout
	}
	if c.CacheTTL.Duration == 0 {
		c.CacheTTL.Duration = DefaultCacheTTL
	}
	if c.NegativeTTL.Duration == 0 {
		c.NegativeTTL.Duration = DefaultNegativeTTL
	}
	if c.ErrorTTL.Duration == 0 {
		c.ErrorTTL.Duration = DefaultErrorTTL
	}
	if c.StaleTTL.Duration == 0 {
		c.StaleTTL.Duration = staleFactor * c.CacheTTL.Duration
	}
}

// Validate checks every option and returns all problems joined, one per line, each naming the option and
// what was expected (`kms.addr: expected host:port, got "x"`). It reads the CA, certificate and key files,
// so a wrong path or a key that does not match its certificate is reported at start, not at first use.
// Unset optional fields are valid (they mean the default).
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.Addr == "" {
		bad("kms.addr: expected host:port of the KMIP server, got nothing")
	} else if host, port, err := net.SplitHostPort(c.Addr); err != nil || host == "" {
		bad("kms.addr: expected host:port, got %q", c.Addr)
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		bad("kms.addr: expected a port between 1 and 65535, got %q", port)
	}

	if c.CAPath == "" {
		bad("kms.ca_path: expected the path of the CA certificate (PEM) that signed the server certificate, got nothing")
	} else if _, err := loadCAPool(c.CAPath); err != nil {
		bad("kms.ca_path: %w", err)
	}

	certOK, keyOK := true, true
	if c.ClientCert == "" {
		bad("kms.client_cert: expected the path of the client certificate (PEM), got nothing")
		certOK = false
	} else if err := readable(c.ClientCert); err != nil {
		bad("kms.client_cert: %w", err)
		certOK = false
	}
	if c.ClientKey == "" {
		bad("kms.client_key: expected the path of the client private key (PEM), got nothing")
		keyOK = false
	} else if err := readable(c.ClientKey); err != nil {
		bad("kms.client_key: %w", err)
		keyOK = false
	}
	if certOK && keyOK {
		if _, err := tls.LoadX509KeyPair(c.ClientCert, c.ClientKey); err != nil {
			bad("kms.client_cert, kms.client_key: load %q and %q: %w", c.ClientCert, c.ClientKey, err)
		}
	}

	if c.KeyTemplate != "" && !strings.Contains(c.KeyTemplate, "$keyid") {
		// Without $keyid every key id would name the same KMIP object: refuse that rather than encrypt
		// every bucket with one secret by accident.
		bad("kms.key_template: expected a template containing \"$keyid\", got %q", c.KeyTemplate)
	}
	if c.ServerName != "" && strings.ContainsAny(c.ServerName, " /:") && net.ParseIP(c.ServerName) == nil {
		bad("kms.server_name: expected a host name or IP address, got %q", c.ServerName)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"timeout", c.Timeout.Duration}, {"cache_ttl", c.CacheTTL.Duration}, {"negative_ttl", c.NegativeTTL.Duration},
		{"error_ttl", c.ErrorTTL.Duration}, {"stale_ttl", c.StaleTTL.Duration}} {
		if d.v < 0 {
			bad("kms.%s: expected a positive duration, got %q", d.name, d.v)
		}
	}
	if c.Username != "" && strings.ContainsAny(c.Username, "\x00\n\r") {
		bad("kms.username: expected a user name without NUL or line breaks, got %q", c.Username)
	}
	if c.PasswordFile != "" {
		if c.Username == "" {
			bad("kms.password_file: a password needs kms.username, which is not set")
		}
		if _, err := readPassword(c.PasswordFile); err != nil {
			bad("kms.password_file: %w", err)
		}
	}
	return errors.Join(errs...)
}

// maxPassword bounds the password file, so a wrong path (a log, a device) is refused, not read whole.
const maxPassword = 4096

// readPassword reads the password file: its first line, without the line break. An empty password is an
// error (leave password_file unset to send none). The content is never logged.
func readPassword(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := make([]byte, maxPassword+1)
	n, err := io.ReadFull(f, buf)
	defer clear(buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read %q: %w", path, err)
	}
	if n > maxPassword {
		return "", fmt.Errorf("%q is longer than %d bytes; expected a file holding only the password", path, maxPassword)
	}
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", fmt.Errorf("%q is empty; expected the password on its first line", path)
	}
	return line, nil
}

// readable reports whether path can be opened for reading, with an error that names the file.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err // *PathError names the file
	}
	return f.Close()
}

// loadCAPool reads a PEM file holding one or more CA certificates.
func loadCAPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate in %q: %w", path, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%q holds no PEM certificate", path)
	}
	return pool, nil
}

// KeyName turns a key id into a KMIP object name by replacing every "$keyid" in template, like Ceph's
// "rgw crypt kmip kms key template": KeyName("pykmip-$keyid", "mybucketkey") is "pykmip-mybucketkey".
// An empty template means the default, "$keyid".
func KeyName(template, keyID string) string {
	if template == "" {
		template = DefaultKeyTemplate
	}
	return strings.ReplaceAll(template, "$keyid", keyID)
}

// KeyID is the inverse of KeyName: the key id that template turns into name, and whether there is one.
// KeyID("pykmip-$keyid", "pykmip-mybucketkey") is "mybucketkey", true; a name the template cannot
// produce (another prefix, or an empty id) gives false. `kmipfs key list` uses it to show key ids.
func KeyID(template, name string) (string, bool) {
	if template == "" {
		template = DefaultKeyTemplate
	}
	parts := strings.Split(template, "$keyid")
	if len(parts) < 2 {
		return "", false
	}
	// The first occurrence fixes the id's length: name = p0 id p1 id p2 ... with the same id each time.
	rest, ok := strings.CutPrefix(name, parts[0])
	if !ok {
		return "", false
	}
	for n := 1; n <= len(rest); n++ {
		id := rest[:n]
		if KeyName(template, id) == name {
			return id, true
		}
	}
	return "", false
}
