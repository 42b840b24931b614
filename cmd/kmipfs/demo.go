package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kmipfs/kmipfs/kms"
)

// The demo's fixed names: the key id of the demo key and the bucket that uses it.
const (
	demoKeyID  = "demo-key"
	demoBucket = "demo"
	demoPort   = "127.0.0.1:5696"
)

const demoConfigHeader = `# kmipfs configuration written by "kmipfs demo". While the demo (or
# "kmipfs kms serve --dir %s --addr %s") runs, this file also works with
#   kmipfs mount --config %s MOUNTPOINT
`

func cmdDemo(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("demo", flag.ContinueOnError)
	fl.SetOutput(stderr)
	debug := fl.Bool("debug", false, "log every FUSE request and reply")
	fl.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kmipfs demo [DIR]\n\n"+
			"Starts the embedded KMIP server on loopback with generated certificates, creates the key %q,\n"+
			"keeps objects and metadata under DIR (default ./kmipfs-demo), creates the bucket %q keyed with it,\n"+
			"and mounts at DIR/mnt. Ctrl-C unmounts. Running it again on the same DIR reuses keys and data.\n\n",
			demoKeyID, demoBucket)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &exitError{code: exitOK, err: errHelp}
		}
		return &exitError{code: exitUsage, err: errHelp}
	}
	dir := "kmipfs-demo"
	if fl.NArg() > 1 {
		fl.Usage()
		return &exitError{code: exitUsage, err: errHelp}
	} else if fl.NArg() == 1 {
		dir = fl.Arg(0)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(exitUsage, "demo directory: %v", err)
	}
	logger := newLogger(stderr, "info", "text")
	sigs := notifyStop()
	defer signal.Stop(sigs)
	configPath := filepath.Join(dir, "kmipfs.toml")
	kmsDir := filepath.Join(dir, "kms")

	// The KMIP server keeps the address it had, so the config written last time stays valid.
	addr := demoPort
	if old, err := loadConfig(configPath); err == nil {
		addr = old.KMS.Addr
	}
	srv, ln, files, err := startKMS(kmsDir, addr, logger)
	if err != nil && addr == demoPort {
		// Port 5696 is taken (a real KMIP server?): any free loopback port will do.
		srv, ln, files, err = startKMS(kmsDir, "127.0.0.1:0", logger)
	}
	if err != nil {
		return err
	}
	defer srv.Close()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			logger.Debug("kms server stopped", "err", err)
		}
	}()

	cfg := &Config{
		KMS: kms.Config{
			Addr:        ln.Addr().String(),
			CAPath:      files.CA,
			ClientCert:  files.ClientCert,
			ClientKey:   files.ClientKey,
			KeyTemplate: "$keyid",
		},
		Store: StoreConfig{Backend: "local", Path: filepath.Join(dir, "objects")},
		Meta:  MetaConfig{Path: filepath.Join(dir, "meta")},
	}
	header := fmt.Sprintf(demoConfigHeader, kmsDir, cfg.KMS.Addr, configPath)
	if err := writeConfig(configPath, cfg, header); err != nil {
		return fail(exitFailure, "write %s: %v", configPath, err)
	}
	if cfg, err = loadConfig(configPath); err != nil {
		return fail(exitFailure, "%v", err)
	}
	if err := ensureDemoKey(cfg, srv); err != nil {
		return err
	}

	mnt := filepath.Join(dir, "mnt")
	clearStaleMount(mnt)
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return fail(exitUsage, "mount point: %v", err)
	}
	m, err := startMount(cfg, mnt, nil, *debug, logger)
	if err != nil {
		return err
	}
	if err := ensureDemoBucket(mnt); err != nil {
		m.srv.Unmount()
		m.close()
		return fail(exitFailure, "demo bucket: %v", err)
	}
	b := filepath.Join(mnt, demoBucket)
	fmt.Fprintf(stdout, `kmipfs demo is mounted at %s
  KMIP server  %s (embedded; certificates in %s)
  objects      %s   (ciphertext only)
  metadata     %s
  config       %s

Try, in another shell:
  echo "hello, encrypted world" > %s/hello.txt
  cat %s/hello.txt
  getfattr -n user.kmipfs.key-id -n user.kmipfs.key-name %s/hello.txt
  mkdir %s/b1 && setfattr -n user.kmipfs.key-id -v %s %s/b1
  grep -r "encrypted world" %s || echo "no plaintext in the store"

Press Ctrl-C to unmount.
`, mnt, cfg.KMS.Addr, kmsDir, cfg.Store.Path, cfg.Meta.Path, configPath,
		b, b, b, mnt, demoKeyID, mnt, cfg.Store.Path)
	return m.serveUntilSignal(sigs, newStarter())
}

// ensureDemoKey creates the demo key in the embedded server unless KMIP already has it.
func ensureDemoKey(cfg *Config, srv interface{ CreateKey(string) (string, error) }) error {
	client, err := kms.NewClient(cfg.KMS, nil)
	if err != nil {
		return fail(exitFailure, "%v", err)
	}
	defer client.Close()
	name := kms.KeyName(cfg.KMS.KeyTemplate, demoKeyID)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	secret, err := client.Secret(ctx, name)
	switch {
	case err == nil:
		clear(secret)
		return nil
	case errors.Is(err, kms.ErrKeyNotFound):
		if _, err := srv.CreateKey(name); err != nil {
			return fail(exitFailure, "create demo key %q: %v", name, err)
		}
		return nil
	default:
		return fail(exitKMS, "embedded KMIP server: %v", err)
	}
}

// ensureDemoBucket makes the demo bucket and names its key, through the mount like a user would.
func ensureDemoBucket(mnt string) error {
	b := filepath.Join(mnt, demoBucket)
	if err := os.Mkdir(b, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return syscall.Setxattr(b, "user.kmipfs.key-id", []byte(demoKeyID), 0)
}

// clearStaleMount detaches a mount left behind by a demo that was killed, which would otherwise
// fail every access with "transport endpoint is not connected".
func clearStaleMount(mnt string) {
	if _, err := os.Stat(mnt); errors.Is(err, syscall.ENOTCONN) {
		_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
	}
}
