package s3_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/objstore"
	"github.com/kmipfs/kmipfs/objstore/s3"
	"github.com/kmipfs/kmipfs/objstore/s3/s3test"
)

// TestUnavailable: a server that refuses connections is a transient error, retried and then given up, quickly.
func TestUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := s3.Config{Endpoint: "http://" + addr, PathStyle: true, Retries: 2}
	t.Setenv("AWS_ACCESS_KEY_ID", "AKID")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "a-secret-that-must-not-leak")
	cfg.SetDefaults()
	s := open(t, cfg)
	start := time.Now()
	err = s.Put(t.Context(), "bucket", "k", []byte("v"))
	if err == nil || !s3.IsTransient(err) || !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Fatalf("Put to a closed port: %v, want a transient error given up after 3 attempts", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Put to a closed port took %v", d)
	}
	if strings.Contains(err.Error(), "a-secret-that-must-not-leak") {
		t.Fatalf("the error shows the secret key: %v", err)
	}
}

// TestRequestTimeout: a server that accepts and never answers runs into store.timeout, which is transient.
func TestRequestTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKID")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "SECRET")
	cfg := s3.Config{Endpoint: "http://" + ln.Addr().String(), PathStyle: true, Retries: -1,
		Timeout: s3.Duration{Duration: 200 * time.Millisecond}}
	cfg.SetDefaults()
	s := open(t, cfg)
	start := time.Now()
	_, err = s.Get(t.Context(), "bucket", "k", 0, -1)
	if !s3.IsTransient(err) || !strings.Contains(err.Error(), "store.timeout") {
		t.Fatalf("Get from a silent server: %v, want a transient timeout naming store.timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Get from a silent server took %v with a 200ms timeout", d)
	}
}

// TestBadCredentials: a wrong secret is refused, not retried, and the error says what to check.
func TestBadCredentials(t *testing.T) {
	srv := s3test.Start(t)
	creds := filepath.Join(t.TempDir(), "creds")
	if err := os.WriteFile(creds, []byte("[default]\naws_access_key_id = "+s3test.AccessKey+
		"\naws_secret_access_key = wrong-secret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := srv.Config("")
	cfg.CredentialsFile = creds
	s := open(t, cfg)
	err := s.CreateBucket(t.Context(), "bucket")
	if err == nil || s3.IsTransient(err) || !strings.Contains(err.Error(), "store.credentials_file") {
		t.Fatalf("CreateBucket with a wrong secret: %v, want a permanent error naming store.credentials_file", err)
	}
	if strings.Contains(err.Error(), "wrong-secret-value") {
		t.Fatalf("the error shows the secret: %v", err)
	}
}

// TestEnvCredentials: without credentials_file the AWS_* variables are used; a named profile of a file too.
func TestEnvCredentials(t *testing.T) {
	srv := s3test.Start(t)
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	cfg := srv.Config("")
	cfg.CredentialsFile = ""
	s := open(t, cfg)
	if err := s.CreateBucket(t.Context(), "env"); err != nil {
		t.Fatalf("CreateBucket with credentials from the environment: %v", err)
	}
	creds := filepath.Join(t.TempDir(), "creds")
	if err := os.WriteFile(creds, []byte("[default]\naws_access_key_id = nobody\naws_secret_access_key = x\n\n"+
		"[kmipfs]\naws_access_key_id = "+s3test.AccessKey+"\naws_secret_access_key = "+s3test.SecretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.CredentialsFile, cfg.Profile = creds, "kmipfs"
	if err := open(t, cfg).Put(t.Context(), "env", "k", []byte("v")); err != nil {
		t.Fatalf("Put with profile [kmipfs]: %v", err)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "creds")
	if err := os.WriteFile(good, []byte("[default]\naws_access_key_id = a\naws_secret_access_key = b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("[default]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	tests := []struct {
		name string
		cfg  s3.Config
		want string // "" means valid
	}{
		{"minimal", s3.Config{CredentialsFile: good}, ""},
		{"full", s3.Config{Endpoint: "https://rgw.example.com:8000", Region: "default", PathStyle: true,
			BucketPrefix: "kmipfs-", CredentialsFile: good, Concurrency: 4, Retries: -1, PartSize: 8 << 20}, ""},
		{"no credentials", s3.Config{}, "store.credentials_file"},
		{"missing credentials file", s3.Config{CredentialsFile: filepath.Join(dir, "nope")}, "store.credentials_file"},
		{"credentials file without keys", s3.Config{CredentialsFile: empty}, "lacks aws_access_key_id"},
		{"missing profile", s3.Config{CredentialsFile: good, Profile: "other"}, "store.credentials_file"},
		{"endpoint scheme", s3.Config{CredentialsFile: good, Endpoint: "ftp://x"}, "store.endpoint"},
		{"endpoint with user", s3.Config{CredentialsFile: good, Endpoint: "https://ak:sk@x"}, "store.endpoint"},
		{"endpoint with path", s3.Config{CredentialsFile: good, Endpoint: "https://x/bucket"}, "store.endpoint"},
		{"prefix upper", s3.Config{CredentialsFile: good, BucketPrefix: "Kmipfs-"}, "store.bucket_prefix"},
		{"prefix dash first", s3.Config{CredentialsFile: good, BucketPrefix: "-k"}, "store.bucket_prefix"},
		{"prefix too long", s3.Config{CredentialsFile: good, BucketPrefix: strings.Repeat("k", 61)}, "store.bucket_prefix"},
		{"ca missing", s3.Config{CredentialsFile: good, CAPath: filepath.Join(dir, "nope")}, "store.ca_path"},
		{"ca not pem", s3.Config{CredentialsFile: good, CAPath: good}, "store.ca_path"},
		{"part too small", s3.Config{CredentialsFile: good, PartSize: 1 << 20}, "store.part_size"},
		{"negative concurrency", s3.Config{CredentialsFile: good, Concurrency: -2}, "store.concurrency"},
		{"negative retries", s3.Config{CredentialsFile: good, Retries: -2}, "store.retries"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error naming %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "aws_secret_access_key = ") {
				t.Fatalf("the error shows the credentials file's content: %v", err)
			}
		})
	}
}

// TestTLS: an https endpoint with a certificate from a private CA works with store.ca_path and is refused, for
// good and with a hint, without it.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := writePKI(t, dir)
	srv := s3test.StartOpts(t, s3test.Options{CertFile: certFile, KeyFile: keyFile})
	if !strings.HasPrefix(srv.Endpoint, "https://") {
		t.Fatalf("endpoint %s is not https", srv.Endpoint)
	}
	cfg := srv.Config("")
	cfg.CAPath = caFile
	s := open(t, cfg)
	if err := s.CreateBucket(t.Context(), "tls"); err != nil {
		t.Fatalf("CreateBucket over https with store.ca_path: %v", err)
	}
	if err := s.Put(t.Context(), "tls", "k", []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	cfg.CAPath = ""
	_, err := open(t, cfg).Get(t.Context(), "tls", "k", 0, -1)
	if err == nil || s3.IsTransient(err) || !strings.Contains(err.Error(), "store.ca_path") {
		t.Fatalf("Get without the CA: %v, want a permanent certificate error naming store.ca_path", err)
	}
	if errors.Is(err, objstore.ErrNotFound) {
		t.Fatal("a certificate error reads as not found")
	}
}

// writePKI writes a CA and a server certificate for 127.0.0.1 signed by it.
func writePKI(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kmipfs test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.crt", "CERTIFICATE", caDER), write("server.crt", "CERTIFICATE", der),
		write("server.key", "EC PRIVATE KEY", keyDER)
}

// TestAddressing: with path_style the bucket is the first segment of the path; without it, a subdomain of the
// endpoint (virtual-hosted), which for "localhost" no resolver knows, so the error shows the host it tried.
func TestAddressing(t *testing.T) {
	srv := s3test.Start(t)
	cfg := srv.Config("kfs-")
	cfg.Endpoint = strings.Replace(srv.Endpoint, "127.0.0.1", "localhost", 1)
	if err := open(t, cfg).CreateBucket(t.Context(), "b"); err != nil {
		t.Fatalf("path-style CreateBucket: %v", err)
	}
	if _, err := os.Stat(filepath.Join(srv.Root, "kfs-b")); err != nil {
		t.Fatalf("path-style bucket: %v", err)
	}
	cfg.PathStyle, cfg.Retries = false, -1
	err := open(t, cfg).Put(t.Context(), "b", "k", []byte("v"))
	if err == nil || !strings.Contains(err.Error(), "kfs-b.localhost") {
		t.Fatalf("virtual-hosted Put: %v, want a request to host kfs-b.localhost", err)
	}
}
