package certs_test

import (
	"bytes"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kmipfs/kmipfs/kms/certs"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGenerate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	f, err := certs.Generate(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f.CAKey, f.ServerKey, f.ClientKey} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode: %v, %v", fi.Mode().Perm(), err)
	}

	ca, srv, cli := readCert(t, f.CA), readCert(t, f.ServerCert), readCert(t, f.ClientCert)
	if !ca.IsCA {
		t.Error("CA is not a CA")
	}
	if !slices.Contains(srv.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || slices.Contains(srv.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("server EKU %v", srv.ExtKeyUsage)
	}
	if !slices.Contains(srv.DNSNames, "localhost") || !slices.ContainsFunc(srv.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) }) {
		t.Errorf("server names %v %v", srv.DNSNames, srv.IPAddresses)
	}
	if cli.Subject.CommonName != "kmipclient" || !slices.Contains(cli.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("client CN %q EKU %v", cli.Subject.CommonName, cli.ExtKeyUsage)
	}
	for _, c := range []*x509.Certificate{ca, srv, cli} {
		if c.PublicKeyAlgorithm != x509.ECDSA {
			t.Errorf("%s: key algorithm %v, want ECDSA (PyKMIP has no RSA-GCM suite)", c.Subject.CommonName, c.PublicKeyAlgorithm)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("server cert for 127.0.0.1: %v", err)
	}
	if _, err := cli.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert: %v", err)
	}
}

func TestGenerateReuses(t *testing.T) {
	dir := t.TempDir()
	f, err := certs.Generate(dir)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(f.CA)
	f2, err := certs.Generate(dir)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(f2.CA)
	if f2 != f || !bytes.Equal(before, after) {
		t.Fatal("valid files were not reused")
	}
	// A damaged file makes Generate start over with a consistent set.
	if err := os.WriteFile(f.ClientKey, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.Generate(dir); err != nil {
		t.Fatal(err)
	}
	renewed, _ := os.ReadFile(f.CA)
	if bytes.Equal(before, renewed) {
		t.Fatal("damaged set was not regenerated")
	}
	if _, err := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey); err != nil {
		t.Fatalf("regenerated client pair: %v", err)
	}
}

func TestTLSConfigsHandshake(t *testing.T) {
	f, err := certs.Generate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.Generate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srvConf, err := certs.ServerTLSConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	if srvConf.ClientAuth != tls.RequireAndVerifyClientCert || srvConf.MinVersion != tls.VersionTLS12 {
		t.Fatalf("server config: auth %v, min version %x", srvConf.ClientAuth, srvConf.MinVersion)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvConf)
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
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	good, err := certs.ClientTLSConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := certs.ClientTLSConfig(other)
	if err != nil {
		t.Fatal(err)
	}
	tls12 := good.Clone()
	tls12.MaxVersion = tls.VersionTLS12
	noCert := good.Clone()
	noCert.Certificates = nil
	tests := []struct {
		name string
		conf *tls.Config
		ok   bool
	}{
		{"own client cert", good, true},
		{"TLS 1.2", tls12, true},
		{"client cert from another CA", foreign, false},
		{"no client cert", noCert, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "client cert from another CA" {
				tt.conf = tt.conf.Clone()
				tt.conf.RootCAs = good.RootCAs // trust the server, present a foreign client cert
			}
			c, err := tls.Dial("tcp", ln.Addr().String(), tt.conf)
			if err == nil {
				// With TLS 1.3 the server's verdict on the client certificate arrives with the first read.
				_, err = c.Write([]byte("ping"))
				if err == nil {
					buf := make([]byte, 4)
					_, err = io.ReadFull(c, buf)
				}
				c.Close()
			}
			if tt.ok && err != nil {
				t.Fatalf("handshake failed: %v", err)
			}
			if !tt.ok && err == nil {
				t.Fatal("handshake succeeded")
			}
		})
	}
}

// TestGenerateRSA: an RSA PKI is made, reused, replaced by EC on Generate (and back), and handshakes.
func TestGenerateRSA(t *testing.T) {
	dir := t.TempDir()
	f, err := certs.GenerateRSA(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f.CA, f.ServerCert, f.ClientCert} {
		c, err := certs.ReadCert(p)
		if err != nil {
			t.Fatal(err)
		}
		if c.PublicKeyAlgorithm != x509.RSA {
			t.Fatalf("%s has a %v key", p, c.PublicKeyAlgorithm)
		}
	}
	if k, err := certs.ReadKey(f.CAKey); err != nil {
		t.Fatal(err)
	} else if _, ok := k.(*rsa.PrivateKey); !ok {
		t.Fatalf("CA key is a %T", k)
	}
	before, _ := os.ReadFile(f.CA)
	if _, err := certs.GenerateRSA(dir); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(f.CA); !bytes.Equal(before, again) {
		t.Fatal("a valid RSA set was not reused")
	}
	srv, err := certs.ServerTLSConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := certs.ClientTLSConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cli)
	if err != nil {
		t.Fatalf("RSA handshake: %v", err)
	}
	c.Close()
	ec, err := certs.Generate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := certs.ReadCert(ec.CA); c.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("Generate after GenerateRSA kept a %v CA", c.PublicKeyAlgorithm)
	}
}
