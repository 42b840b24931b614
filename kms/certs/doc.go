// Package certs makes the loopback PKI that `kmipfs demo` and the tests use for mutual TLS between the kms
// client and the embedded KMIP server: an EC P-256 CA, a server certificate for 127.0.0.1, ::1 and
// localhost (serverAuth) and a client certificate with CN "kmipclient" (clientAuth), all signed by that
// CA.
//
// # Files
//
// [Generate] writes PEM files into one directory: ca.crt, ca.key, server.crt, server.key, client.crt,
// client.key. Private keys are PKCS #8 with mode 0600, the directory 0700. When all six exist, parse, match
// and verify against the CA (and are not about to expire) they are reused, so a client config that points
// at them stays valid across restarts; otherwise all six are made anew.
//
// EC keys matter: PyKMIP 0.10's TLS 1.2 suite list has no RSA-GCM cipher, so an RSA server certificate fails
// against Go's default client config, while ECDSA works with both Go and OpenSSL clients. (kms.Client adds
// the CBC suites PyKMIP offers with RSA; [GenerateRSA] makes an RSA PKI to test that.) [ReadKey] and
// [ReadCert] let tests issue more certificates from the CA, e.g. an expired client certificate.
//
// # Not for production
//
// The CA key sits next to the certificates it signs. This is for a demo on one machine.
package certs
