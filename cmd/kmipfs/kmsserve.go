package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/kmipfs/kmipfs/kms/certs"
	"github.com/kmipfs/kmipfs/kms/kmipserver"
)

func cmdKMS(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprintf(stderr, "Usage: kmipfs kms serve [--dir DIR] [--addr HOST:PORT]\n")
		return &exitError{code: exitUsage, err: errHelp}
	}
	fl := flag.NewFlagSet("kms serve", flag.ContinueOnError)
	fl.SetOutput(stderr)
	dir := fl.String("dir", "kmipfs-kms", "directory for the server's certificates and key store")
	addr := fl.String("addr", "127.0.0.1:5696", "address to listen on")
	fl.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kmipfs kms serve [--dir DIR] [--addr HOST:PORT]\n\n"+
			"Runs the embedded KMIP server (KMIP 1.x over mutual TLS). It generates a CA, a server and a\n"+
			"client certificate under DIR on first start and keeps its keys in DIR/keys.json.\n"+
			"It serves Discover Versions, Create, Register, Activate, Locate, Get, Get Attributes, Revoke\n"+
			"and Destroy; PyKMIP's Python client works with it (the Ceph KMIP snippet runs unchanged).\n"+
			"It is meant for demos and tests, not as a production key manager.\n\n")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &exitError{code: exitOK, err: errHelp}
		}
		return &exitError{code: exitUsage, err: errHelp}
	}
	logger := newLogger(stderr, "info", "text")
	srv, ln, files, err := startKMS(*dir, *addr, logger)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "KMIP server listening on %s\n  ca_path     = %q\n  client_cert = %q\n  client_key  = %q\n",
		ln.Addr(), files.CA, files.ClientCert, files.ClientKey)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-sigs:
		srv.Close()
		return nil
	case err := <-errc:
		srv.Close()
		return fail(exitFailure, "kms serve: %v", err)
	}
}

// startKMS opens the embedded server's key store under dir and listens on addr with mutual TLS.
func startKMS(dir, addr string, logger *slog.Logger) (*kmipserver.Server, net.Listener, certs.Files, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, certs.Files{}, fail(exitUsage, "--dir: %v", err)
	}
	files, err := certs.Generate(dir)
	if err != nil {
		return nil, nil, certs.Files{}, fail(exitFailure, "certificates in %s: %v", dir, err)
	}
	tlsCfg, err := certs.ServerTLSConfig(files)
	if err != nil {
		return nil, nil, certs.Files{}, fail(exitFailure, "server TLS: %v", err)
	}
	srv, err := kmipserver.New(filepath.Join(dir, "keys.json"), kmipserver.Options{Logger: logger})
	if err != nil {
		return nil, nil, certs.Files{}, fail(exitFailure, "key store: %v", err)
	}
	ln, err := tls.Listen("tcp", addr, tlsCfg)
	if err != nil {
		srv.Close()
		return nil, nil, certs.Files{}, fail(exitUsage, "--addr %s: %v", addr, err)
	}
	return srv, ln, files, nil
}
