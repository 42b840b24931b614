// Package kmstest starts the embedded KMIP server on loopback TLS for tests of kms and of the packages
// that use it (fs, cmd, tests/), and provides a slog logger that turns warnings into test failures.
//
// # Use
//
//	env := kmstest.Start(t, kmstest.Logger(t))
//	env.CreateKey(t, "pykmip-mybucketkey")
//	c, err := kms.NewClient(env.Config, kmstest.Logger(t))
//
// Everything lives in t.TempDir and is closed by t.Cleanup.
package kmstest
