package kms_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/kms/certs"
	"github.com/kmipfs/kmipfs/kms/kmstest"
)

// The tests in this file talk to a real PyKMIP server and client (Debian package python3-pykmip). They
// run only with KMIPFS_TEST_PYKMIP=1, and then fail rather than skip if PyKMIP is missing.

const (
	pykmipServer = "/usr/bin/pykmip-server"
	pykmipPython = "/usr/bin/python3" // the Debian interpreter that has the kmip module
)

func requirePyKMIP(t *testing.T) {
	t.Helper()
	if os.Getenv("KMIPFS_TEST_PYKMIP") != "1" {
		t.Skip("set KMIPFS_TEST_PYKMIP=1 to test against PyKMIP")
	}
	for _, p := range []string{pykmipServer, pykmipPython} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("KMIPFS_TEST_PYKMIP=1 but %v (apt-get install python3-pykmip)", err)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPyKMIP runs pykmip-server on 127.0.0.1 with the loopback PKI from certs.Generate and returns a
// client config for it.
func startPyKMIP(t *testing.T) kms.Config {
	t.Helper()
	dir := t.TempDir()
	pki, err := certs.Generate(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	if err := os.MkdirAll(filepath.Join(dir, "policies"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`[server]
hostname=127.0.0.1
port=%d
certificate_path=%s
key_path=%s
ca_path=%s
auth_suite=TLS1.2
enable_tls_client_auth=True
policy_path=%s
database_path=%s
logging_level=INFO
`, port, pki.ServerCert, pki.ServerKey, pki.CA, filepath.Join(dir, "policies"), filepath.Join(dir, "pykmip.db"))
	confPath := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(pykmipServer, "-f", confPath, "-l", filepath.Join(dir, "server.log"))
	cmd.Env = append(os.Environ(), "PYTHONWARNINGS=ignore")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// SIGINT is PyKMIP's clean shutdown (about 2 s); its two children go with it.
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the process group this test started
			<-exited
		}
	})

	cfg := kms.Config{Addr: fmt.Sprintf("127.0.0.1:%d", port), CAPath: pki.CA, ClientCert: pki.ClientCert, ClientKey: pki.ClientKey,
		Timeout: kms.Duration{Duration: 5 * time.Second}}
	c, err := kms.NewClient(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.Ping(t.Context())
		if err == nil {
			return cfg
		}
		select {
		case e := <-exited:
			t.Fatalf("pykmip-server exited: %v\n%s", e, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pykmip-server not ready: %v\n%s", err, out.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func TestPyKMIPServer(t *testing.T) {
	requirePyKMIP(t)
	cfg := startPyKMIP(t)
	c, err := kms.NewClient(cfg, kmstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()
	name := kms.KeyName("pykmip-$keyid", "mybucketkey")
	uid, err := c.CreateKey(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := c.Secret(ctx, name)
	if err != nil || len(secret) != 32 {
		t.Fatalf("Secret: %d bytes, %v", len(secret), err)
	}
	a, err := c.Attributes(ctx, uid)
	if err != nil || a.Name != name || a.State != "Active" || a.Length != 256 || a.Algorithm != "AES" || a.UsageMask != 12 {
		t.Fatalf("Attributes: %+v, %v", a, err)
	}
	if _, err := c.Secret(ctx, "pykmip-nothing"); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("unknown name: %v", err)
	}
	uid2, err := c.CreateKey(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Secret(ctx, name); !errors.Is(err, kms.ErrAmbiguous) {
		t.Fatalf("two keys with one name: %v", err)
	}
	// PyKMIP sorts by Initial Date, which has one-second resolution, so the order of two keys made in
	// the same second is not asserted.
	if uids, err := c.Locate(ctx, name); err != nil || len(uids) != 2 || (uids[0] != uid2 && uids[1] != uid2) {
		t.Fatalf("Locate: %v, %v; want %s and %s", uids, err, uid, uid2)
	}
	if err := c.Revoke(ctx, uid2, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Destroy(ctx, uid2); err != nil {
		t.Fatal(err)
	}
	again, err := c.Secret(ctx, name)
	if err != nil || !bytes.Equal(again, secret) {
		t.Fatalf("Secret after destroying the duplicate: %v", err)
	}
}

// pykmipClientScript drives kmipfs's embedded server with PyKMIP's own client, the way Ceph's docs
// create a key: create, activate, get_attributes, get, locate, revoke, destroy. It prints the key in hex.
const pykmipClientScript = `
import sys
from kmip.pie.client import ProxyKmipClient
from kmip.core import enums
c = ProxyKmipClient(config='client', config_file=sys.argv[1])
c.open()
uid = c.create(enums.CryptographicAlgorithm.AES, 256, name='pykmip-mybucketkey',
               cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT])
c.activate(uid)
uid2, attrs = c.get_attributes(uid, [])
names = {a.attribute_name.value: a.attribute_value for a in attrs}
assert uid2 == uid, (uid2, uid)
assert str(names['Name'].name_value) == 'pykmip-mybucketkey', names
assert names['State'].value == enums.State.ACTIVE, names['State']
assert names['Cryptographic Length'].value == 256
found = c.locate(attributes=[c.attribute_factory.create_attribute(enums.AttributeType.NAME, 'pykmip-mybucketkey')])
assert found == [uid], found
key = c.get(uid)
print("UID", uid)
print("KEY", key.value.hex())
try:
    c.destroy(uid)
    raise SystemExit("destroy of an active key succeeded")
except Exception as e:
    print("DESTROY-ACTIVE", type(e).__name__)
c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
c.destroy(uid)
keep = c.create(enums.CryptographicAlgorithm.AES, 256, name='pykmip-keep',
                cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT])
c.activate(keep)
print("KEEP", c.get(keep).value.hex())
print("DONE")
c.close()
`

func TestPyKMIPClient(t *testing.T) {
	requirePyKMIP(t)
	env := kmstest.Start(t, kmstest.Logger(t))
	dir := t.TempDir()
	host, port, _ := net.SplitHostPort(env.Addr)
	conf := fmt.Sprintf(`[client]
host=%s
port=%s
certfile=%s
keyfile=%s
ca_certs=%s
cert_reqs=CERT_REQUIRED
ssl_version=PROTOCOL_TLSv1_2
do_handshake_on_connect=True
suppress_ragged_eofs=True
`, host, port, env.Certs.ClientCert, env.Certs.ClientKey, env.Certs.CA)
	confPath := filepath.Join(dir, "client.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "client.py")
	if err := os.WriteFile(script, []byte(pykmipClientScript), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), pykmipPython, script, confPath)
	cmd.Env = append(os.Environ(), "PYTHONWARNINGS=ignore")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("PyKMIP client: %v\n%s", err, out)
	}
	var uid, keyHex, keepHex string
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "UID "); ok {
			uid = v
		}
		if v, ok := strings.CutPrefix(line, "KEY "); ok {
			keyHex = v
		}
		if v, ok := strings.CutPrefix(line, "KEEP "); ok {
			keepHex = v
		}
	}
	if uid == "" || len(keyHex) != 64 || !strings.Contains(string(out), "DESTROY-ACTIVE") || !strings.Contains(string(out), "DONE") {
		t.Fatalf("unexpected PyKMIP client output:\n%s", out)
	}
	if keys := env.Server.Keys(); len(keys) != 1 || keys[0].Name != "pykmip-keep" || keys[0].State != "Active" {
		t.Fatalf("keys after the PyKMIP session: %+v", keys)
	}
	// What PyKMIP got is what the kms client gets.
	c := env.Client(t, kmstest.Logger(t))
	secret, err := c.Secret(t.Context(), "pykmip-keep")
	if err != nil || hex.EncodeToString(secret) != keepHex {
		t.Fatalf("kms client got %x, %v; PyKMIP got %s", secret, err, keepHex)
	}
}
