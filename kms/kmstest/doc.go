// Package kmstest starts KMIP servers for tests of kms and of the packages that use it (fs, cmd, tests/):
// the embedded server on loopback TLS ([Start]) and a real PyKMIP server ([RunPyKMIP], [StartPyKMIP]);
// and it provides a slog logger that turns warnings into test failures.
//
// # Use
//
//	env := kmstest.Start(t, kmstest.Logger(t))
//	env.CreateKey(t, "pykmip-mybucketkey")
//	c, err := kms.NewClient(env.Config, kmstest.Logger(t))
//
//	p := kmstest.RunPyKMIP(t, kmstest.PyKMIPOptions{}) // skips without PyKMIP, fails in CI
//	c, err := kms.NewClient(p.Config, nil)
//	out, err := p.Python(ctx, script)                 // PyKMIP's own client, config in argv[1]
//
// Everything lives in t.TempDir and is closed or stopped by t.Cleanup, also when the test fails. A PyKMIP
// server runs in a process group of its own; Stop sends SIGINT and then makes sure no process of that
// group is left. Freeze and Thaw (SIGSTOP, SIGCONT) turn it into a server that accepts connections and
// never answers.
package kmstest
