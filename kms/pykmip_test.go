package kms_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/kms/kmstest"
)

// The tests in this file talk to a real PyKMIP server and client (Debian package python3-pykmip). They
// run with KMIPFS_TEST_PYKMIP=1 (make test sets it when pykmip-server is installed) or
// KMIPFS_TEST_DISALLOW_SKIP=1 (CI), and then fail rather than skip if PyKMIP is missing.

func requirePyKMIP(t *testing.T) {
	t.Helper()
	if os.Getenv("KMIPFS_TEST_PYKMIP") != "1" && os.Getenv("KMIPFS_TEST_DISALLOW_SKIP") == "" {
		t.Skip("set KMIPFS_TEST_PYKMIP=1 to test against PyKMIP")
	}
	if err := kmstest.PyKMIPMissing(); err != nil {
		t.Fatalf("PyKMIP tests are enabled but %v", err)
	}
}

func TestPyKMIPServer(t *testing.T) {
	requirePyKMIP(t)
	p := kmstest.RunPyKMIP(t, kmstest.PyKMIPOptions{})
	c, err := kms.NewClient(p.Config, kmstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// PyKMIP 0.10 offers 2.0 and 1.4 to 1.0: the highest common 1.x version is 1.4.
	if v := c.Version(); v != "1.4" {
		t.Errorf("agreed version %q with PyKMIP, want 1.4", v)
	}
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
	if err != nil || a.Name != name || a.State != "Active" || a.Length != 256 || a.Algorithm != "AES" || a.UsageMask != 12 || a.InitialDate.IsZero() {
		t.Fatalf("Attributes: %+v, %v", a, err)
	}
	if _, err := c.Secret(ctx, "pykmip-nothing"); !errors.Is(err, kms.ErrKeyNotFound) || !strings.Contains(err.Error(), "0 found") {
		t.Fatalf("unknown name: %v", err)
	}
	uid2, err := c.CreateKey(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Secret(ctx, name); !errors.Is(err, kms.ErrAmbiguous) || !strings.Contains(err.Error(), "2 Active Symmetric Keys") {
		t.Fatalf("two keys with one name: %v", err)
	}
	// PyKMIP sorts by Initial Date, which has one-second resolution, so the order of two keys made in
	// the same second is not asserted.
	if uids, err := c.Locate(ctx, name); err != nil || len(uids) != 2 || (uids[0] != uid2 && uids[1] != uid2) {
		t.Fatalf("Locate: %v, %v; want %s and %s", uids, err, uid, uid2)
	}
	// A revoked key is no longer found by Secret (PyKMIP filters Locate on State): the other one is.
	if err := c.Revoke(ctx, uid2, false); err != nil {
		t.Fatal(err)
	}
	again, err := c.Secret(ctx, name)
	if err != nil || !bytes.Equal(again, secret) {
		t.Fatalf("Secret after revoking the duplicate: %v", err)
	}
	if err := c.Destroy(ctx, uid2); err != nil {
		t.Fatal(err)
	}
	if err := c.Revoke(ctx, uid, true); err != nil {
		t.Fatal(err)
	}
	if a, err := c.Attributes(ctx, uid); err != nil || a.State != "Compromised" {
		t.Fatalf("after revoking as compromised: %+v, %v", a, err)
	}
	if _, err := c.Secret(ctx, name); !errors.Is(err, kms.ErrKeyNotFound) || !strings.Contains(err.Error(), "1 object(s) with it are revoked") {
		t.Fatalf("Secret of a revoked key: %v; want ErrKeyNotFound saying it is revoked", err)
	}

	// A Username and Password credential is sent in every request header; PyKMIP without an
	// authentication plugin parses it and identifies the client by its certificate.
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := p.Config
	cfg.Username, cfg.PasswordFile = "alice", pw
	cc, err := kms.NewClient(cfg, kmstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := cc.CreateKey(ctx, "pykmip-with-credential"); err != nil {
		t.Fatalf("with a credential: %v", err)
	}
	if s, err := cc.Secret(ctx, "pykmip-with-credential"); err != nil || len(s) != 32 {
		t.Fatalf("with a credential: %v", err)
	}
}

// TestPyKMIPRSA: with RSA certificates PyKMIP's TLS1.2 suite offers only CBC ciphers, which Go leaves out
// by default; the client offers ECDHE-RSA-AES128-CBC-SHA256 so that it still connects.
func TestPyKMIPRSA(t *testing.T) {
	requirePyKMIP(t)
	p := kmstest.RunPyKMIP(t, kmstest.PyKMIPOptions{RSA: true})
	c, err := kms.NewClient(p.Config, kmstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.CreateKey(t.Context(), "rsa-key"); err != nil {
		t.Fatal(err)
	}
	if s, err := c.Secret(t.Context(), "rsa-key"); err != nil || len(s) != 32 {
		t.Fatalf("Secret over RSA TLS: %v", err)
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
	confPath := filepath.Join(dir, "client.conf")
	if err := kmstest.WritePyKMIPClientConf(confPath, env.Addr, env.Certs); err != nil {
		t.Fatal(err)
	}
	out, err := kmstest.RunPython(t.Context(), dir, pykmipClientScript, confPath)
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
