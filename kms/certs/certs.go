package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

const (
	// ClientCN is the common name of the generated client certificate.
	ClientCN = "kmipclient"

	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 825 * 24 * time.Hour // the longest lifetime common TLS stacks accept for a leaf
	// renewBefore: reused certificates must stay valid at least this long, so a demo does not start with
	// a certificate that expires halfway through.
	renewBefore = 7 * 24 * time.Hour
)

// Files are the paths of the PEM files that Generate wrote or reused.
type Files struct {
	Dir        string
	CA         string // CA certificate: the client's kms.ca_path and the server's client CA
	CAKey      string
	ServerCert string
	ServerKey  string
	ClientCert string
	ClientKey  string
}

// paths returns the file names under dir.
func paths(dir string) Files {
	return Files{
		Dir:        dir,
		CA:         filepath.Join(dir, "ca.crt"),
		CAKey:      filepath.Join(dir, "ca.key"),
		ServerCert: filepath.Join(dir, "server.crt"),
		ServerKey:  filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.crt"),
		ClientKey:  filepath.Join(dir, "client.key"),
	}
}

// Generate creates, or reuses if all exist and check out, an EC P-256 CA, a server certificate for
// 127.0.0.1, ::1 and localhost (EKU serverAuth) and a client certificate (CN kmipclient, EKU clientAuth)
// under dir. Keys are written with mode 0600.
func Generate(dir string) (Files, error) {
	f := paths(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Files{}, fmt.Errorf("certs: create %q: %w", dir, err)
	}
	if err := f.check(time.Now(), false); err == nil {
		return f, nil
	}
	if err := f.generate(time.Now(), false); err != nil {
		return Files{}, fmt.Errorf("certs: generate in %q: %w", dir, err)
	}
	return f, nil
}

// GenerateRSA is Generate with RSA 2048 keys instead of EC P-256, for testing servers such as PyKMIP
// whose cipher suites depend on the key type. Files of the other key type are replaced.
func GenerateRSA(dir string) (Files, error) {
	f := paths(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Files{}, fmt.Errorf("certs: create %q: %w", dir, err)
	}
	if err := f.check(time.Now(), true); err == nil {
		return f, nil
	}
	if err := f.generate(time.Now(), true); err != nil {
		return Files{}, fmt.Errorf("certs: generate in %q: %w", dir, err)
	}
	return f, nil
}

// ServerTLSConfig returns the server side of the mutual TLS: the server certificate, client certificates
// required and verified against the CA, TLS 1.2 or newer.
func ServerTLSConfig(f Files) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	if err != nil {
		return nil, fmt.Errorf("certs: load server certificate %q: %w", f.ServerCert, err)
	}
	pool, err := caPool(f.CA)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// ClientTLSConfig returns the client side: the client certificate, the server verified against the CA
// for the name 127.0.0.1, TLS 1.2 or newer. kms.Client builds its own from kms.Config; this is for tools
// and tests that speak to the server directly.
func ClientTLSConfig(f Files) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey)
	if err != nil {
		return nil, fmt.Errorf("certs: load client certificate %q: %w", f.ClientCert, err)
	}
	pool, err := caPool(f.CA)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ServerName:   "127.0.0.1",
		MinVersion:   tls.VersionTLS12,
	}, nil
}

func caPool(path string) (*x509.CertPool, error) {
	ca, err := readCert(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, nil
}

// check verifies that all files exist, parse, belong together, have the wanted key type and stay valid for
// renewBefore.
func (f Files) check(now time.Time, wantRSA bool) error {
	ca, err := readCert(f.CA)
	if err != nil {
		return err
	}
	caKey, err := readKey(f.CAKey)
	if err != nil {
		return err
	}
	if _, isRSA := caKey.(*rsa.PrivateKey); isRSA != wantRSA {
		return errors.New("certs: CA key is of the other type")
	}
	if pub, ok := caKey.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(ca.PublicKey) || !ca.IsCA {
		return errors.New("certs: CA key does not match CA certificate")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, leaf := range []struct {
		cert, key string
		usage     x509.ExtKeyUsage
	}{{f.ServerCert, f.ServerKey, x509.ExtKeyUsageServerAuth}, {f.ClientCert, f.ClientKey, x509.ExtKeyUsageClientAuth}} {
		if _, err := tls.LoadX509KeyPair(leaf.cert, leaf.key); err != nil {
			return err
		}
		c, err := readCert(leaf.cert)
		if err != nil {
			return err
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now.Add(renewBefore), KeyUsages: []x509.ExtKeyUsage{leaf.usage}}); err != nil {
			return err
		}
	}
	return nil
}

// newKey makes a private key of the wanted type.
func newKey(wantRSA bool) (crypto.Signer, error) {
	if wantRSA {
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func (f Files) generate(now time.Time, wantRSA bool) error {
	caKey, err := newKey(wantRSA)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "kmipfs loopback CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, ca, err := sign(caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return err
	}
	if err := writeKey(f.CAKey, caKey); err != nil {
		return err
	}
	if err := writePEM(f.CA, "CERTIFICATE", caDER, 0o644); err != nil {
		return err
	}
	for _, leaf := range []struct {
		cert, key string
		tmpl      *x509.Certificate
	}{
		{f.ServerCert, f.ServerKey, &x509.Certificate{
			Subject:     pkix.Name{CommonName: "127.0.0.1"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			DNSNames:    []string{"localhost"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}},
		{f.ClientCert, f.ClientKey, &x509.Certificate{
			Subject:     pkix.Name{CommonName: ClientCN},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}},
	} {
		key, err := newKey(wantRSA)
		if err != nil {
			return err
		}
		leaf.tmpl.NotBefore = now.Add(-time.Hour)
		leaf.tmpl.NotAfter = now.Add(leafValidity)
		leaf.tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if wantRSA {
			leaf.tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
		}
		leaf.tmpl.BasicConstraintsValid = true
		der, _, err := sign(leaf.tmpl, ca, key.Public(), caKey)
		if err != nil {
			return err
		}
		if err := writeKey(leaf.key, key); err != nil {
			return err
		}
		if err := writePEM(leaf.cert, "CERTIFICATE", der, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// sign issues tmpl signed by parent's key, with a random 128-bit serial number.
func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, priv crypto.Signer) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return der, c, err
}

// writeKey writes k as a PKCS #8 PEM file with mode 0600.
func writeKey(path string, k crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	defer clear(der)
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

// writePEM writes one PEM block to path with perm, replacing any older file atomically.
func writePEM(path, typ string, der []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		_ = f.Close()
		return err
	}
	if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("certs: %q holds no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: parse %q: %w", path, err)
	}
	return c, nil
}

// ReadKey reads a PKCS #8 PEM private key (EC or RSA) as Generate writes it, e.g. the CA key, for tests
// that issue extra certificates.
func ReadKey(path string) (crypto.Signer, error) { return readKey(path) }

// ReadCert reads a PEM certificate.
func ReadCert(path string) (*x509.Certificate, error) { return readCert(path) }

func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("certs: %q holds no PEM key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: parse %q: %w", path, err)
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("certs: %q is a %T, not an EC or RSA key", path, k)
}
