package kms_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gemalto/kmip-go"
	"github.com/gemalto/kmip-go/kmip14"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/kms/certs"
	"github.com/kmipfs/kmipfs/kms/internal/wire"
	"github.com/kmipfs/kmipfs/kms/kmstest"
)

// storedMaterial reads the key material of uid from the server's store file, to compare what the client
// got with what the server keeps.
func storedMaterial(t *testing.T, env *kmstest.Env, uid string) []byte {
	t.Helper()
	data, err := os.ReadFile(env.StorePath)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Keys []struct {
			UID      string `json:"uid"`
			Material []byte `json:"material"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	for _, k := range f.Keys {
		if k.UID == uid {
			return k.Material
		}
	}
	t.Fatalf("uid %s not in store", uid)
	return nil
}

func TestPing(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c, err := kms.NewClient(env.Config, kmstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if s := c.Stats(); s.Dials != 1 || s.Errors != 0 {
		t.Errorf("stats after one ping: %+v", s)
	}
}

func TestCreateKeyThenSecret(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Client(t, kmstest.Logger(t))
	name := kms.KeyName("pykmip-$keyid", "mybucketkey")
	uid, err := c.CreateKey(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := c.Secret(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) != 32 {
		t.Fatalf("secret is %d bytes", len(secret))
	}
	if want := storedMaterial(t, env, uid); string(secret) != string(want) {
		t.Fatalf("secret differs from the server's material")
	}
	a, err := c.Attributes(t.Context(), uid)
	if err != nil {
		t.Fatal(err)
	}
	want := kms.KeyAttributes{UID: uid, Name: name, ObjectType: "SymmetricKey", Algorithm: "AES", Length: 256,
		UsageMask: uint32(kmip14.CryptographicUsageMaskEncrypt | kmip14.CryptographicUsageMaskDecrypt), State: "Active"}
	got := a
	got.InitialDate, got.ActivationDate, got.LastChangeDate = time.Time{}, time.Time{}, time.Time{}
	if got != want {
		t.Errorf("attributes:\n got %+v\nwant %+v", got, want)
	}
	if a.InitialDate.IsZero() || a.ActivationDate.IsZero() || time.Since(a.InitialDate) > time.Minute {
		t.Errorf("dates: initial %v, activation %v", a.InitialDate, a.ActivationDate)
	}
	if s := c.Stats(); s.Create != 1 || s.Activate != 1 || s.Locate != 1 || s.Get != 1 || s.Errors != 0 {
		t.Errorf("stats: %+v", s)
	}
	if v := c.Version(); v != "1.4" {
		t.Errorf("agreed version %q, want 1.4 (the highest both speak)", v)
	}
}

func TestSecretErrors(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Client(t, kmstest.Logger(t))
	env.CreateKey(t, "dup")
	env.CreateKey(t, "dup")
	env.CreateKey(t, "dup")
	// A 128-bit AES key: a real key, but not a kmipfs secret.
	raw := env.Dial(t)
	var tmpl kmip.TemplateAttribute
	tmpl.Append(kmip14.TagName, kmip.Name{NameValue: "short", NameType: kmip14.NameTypeUninterpretedTextString})
	tmpl.Append(kmip14.TagCryptographicAlgorithm, kmip14.CryptographicAlgorithmAES)
	tmpl.Append(kmip14.TagCryptographicLength, 128)
	resp, err := raw.Do(kmstest.Item{Op: kmip14.OperationCreate, Payload: kmip.CreateRequestPayload{ObjectType: kmip14.ObjectTypeSymmetricKey, TemplateAttribute: tmpl}},
		kmstest.Item{Op: kmip14.OperationActivate, Payload: wire.ActivateRequestPayload{}}) // the ID placeholder names the new key
	if err != nil || len(resp.BatchItem) != 2 || resp.BatchItem[1].ResultStatus != kmip14.ResultStatusSuccess {
		t.Fatalf("create and activate a 128-bit key: %v %+v", err, resp)
	}
	// A key that was never activated.
	var pre kmip.TemplateAttribute
	pre.Append(kmip14.TagName, kmip.Name{NameValue: "pre-active", NameType: kmip14.NameTypeUninterpretedTextString})
	pre.Append(kmip14.TagCryptographicAlgorithm, kmip14.CryptographicAlgorithmAES)
	if it, err := raw.One(kmip14.OperationCreate, kmip.CreateRequestPayload{ObjectType: kmip14.ObjectTypeSymmetricKey, TemplateAttribute: pre}); err != nil || it.ResultStatus != kmip14.ResultStatusSuccess {
		t.Fatalf("create a pre-active key: %v %+v", err, it)
	}

	tests := []struct {
		name    string
		wantErr error
		wantMsg string
	}{
		{"no-such-key", kms.ErrKeyNotFound, `kms: locate "no-such-key": key not found: no Symmetric Key carries this name (0 found)`},
		{"dup", kms.ErrAmbiguous, `3 Active Symmetric Keys carry this name`},
		{"pre-active", kms.ErrKeyNotFound, `1 object(s) with it are revoked, deactivated or not yet activated`},
		{"short", kms.ErrBadKey, "key is 16 bytes, want 32"},
		{"", kms.ErrKeyNotFound, "empty key name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := c.Secret(t.Context(), tt.name)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Secret(%q) = %x, %v; want %v", tt.name, s, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
			for _, other := range []error{kms.ErrKeyNotFound, kms.ErrAmbiguous, kms.ErrBadKey, kms.ErrUnavailable} {
				if other != tt.wantErr && errors.Is(err, other) {
					t.Errorf("error %q also matches %v", err, other)
				}
			}
		})
	}
}

// otherPKI returns certificates from a second, unrelated CA.
func otherPKI(t *testing.T) certs.Files {
	t.Helper()
	f, err := certs.Generate(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestUnavailable(t *testing.T) {
	env := kmstest.Start(t, kmstest.WarnLogger(t)) // the server warns about rejected handshakes
	other := otherPKI(t)

	// A port where nothing listens.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name   string
		modify func(*kms.Config)
		want   []string // substrings of the error
	}{
		{"wrong CA", func(c *kms.Config) { c.CAPath = other.CA },
			[]string{"certificate signed by unknown authority", "kms.ca_path"}},
		{"client cert from another CA", func(c *kms.Config) { c.ClientCert, c.ClientKey = other.ClientCert, other.ClientKey },
			[]string{"remote error: tls:", "kms.client_cert"}},
		{"wrong port", func(c *kms.Config) { c.Addr = closedAddr },
			[]string{"connection refused", closedAddr}},
		{"wrong server name", func(c *kms.Config) { c.ServerName = "kmip.example.com" },
			[]string{"kmip.example.com", "kms.server_name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := env.Config
			tt.modify(&cfg)
			c, err := kms.NewClient(cfg, kmstest.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, call := range []func() error{
				func() error { return c.Ping(t.Context()) },
				func() error { _, err := c.Secret(t.Context(), "k"); return err },
			} {
				err := call()
				t.Log(err)
				if !errors.Is(err, kms.ErrUnavailable) {
					t.Fatalf("got %v, want ErrUnavailable", err)
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %q", err, w)
					}
				}
				if errors.Is(err, kms.ErrKeyNotFound) {
					t.Errorf("error %q also matches ErrKeyNotFound", err)
				}
			}
		})
	}

	t.Run("server closed", func(t *testing.T) {
		c := env.Client(t, kmstest.Logger(t)) // pings, so a pooled connection exists
		env.Stop(t)
		_, err := c.Secret(t.Context(), "k")
		if !errors.Is(err, kms.ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("got %v, want ErrUnavailable naming connection refused", err)
		}
		// The cause is visible to errors.Is, but no syscall.Errno is found by errors.As: fs would
		// take it for the errno to return (ECONNREFUSED from read) instead of EIO.
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("errors.Is(err, ECONNREFUSED) = false for %v", err)
		}
		var errno syscall.Errno
		if errors.As(err, &errno) {
			t.Errorf("errors.As found errno %v in %v", errno, err)
		}
	})
}

func TestTimeout(t *testing.T) {
	// A listener that accepts and never answers, neither TLS nor KMIP.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})

	env := kmstest.Start(t, kmstest.Logger(t))
	cfg := env.Config
	cfg.Addr = ln.Addr().String()
	cfg.Timeout = kms.Duration{Duration: 300 * time.Millisecond}
	c, err := kms.NewClient(cfg, kmstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Secret(t.Context(), "k")
	took := time.Since(start)
	t.Log(err)
	if !errors.Is(err, kms.ErrUnavailable) || !strings.Contains(err.Error(), "kms.timeout") {
		t.Fatalf("got %v, want ErrUnavailable naming the timeout", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("our own timeout must not look like the caller's deadline: %v", err)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a timeout should match os.ErrDeadlineExceeded: %v", err)
	}
	if took < 250*time.Millisecond || took > 300*time.Millisecond+time.Second {
		t.Errorf("call took %v with a 300ms timeout", took)
	}

	// The caller's own deadline wins and is reported as such.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = c.Secret(ctx, "k")
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("with a short caller deadline got %v, want context.DeadlineExceeded", err)
	}
}

func TestCallerCancel(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Client(t, kmstest.Logger(t))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := c.Secret(ctx, "k")
	if !errors.Is(err, context.Canceled) || errors.Is(err, kms.ErrUnavailable) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(t.Context()); !errors.Is(err, kms.ErrClosed) {
		t.Fatalf("Ping after Close: %v", err)
	}
}

func TestRetryAfterServerRestart(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Client(t, kmstest.Logger(t))
	uid := env.CreateKey(t, "k")
	first, err := c.Secret(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	env.Restart(t) // the pooled connection is now dead
	second, err := c.Secret(t.Context(), "k")
	if err != nil {
		t.Fatalf("Secret after restart: %v", err)
	}
	if string(first) != string(second) || string(second) != string(storedMaterial(t, env, uid)) {
		t.Fatal("secret changed across restart")
	}
	if s := c.Stats(); s.Errors != 0 || s.Dials != 2 || s.Locate != 3 {
		t.Errorf("stats: %+v; want no errors, 2 dials, 3 locates (one retried)", s)
	}
}

func TestConcurrentSecrets(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Client(t, kmstest.Logger(t))
	want := map[string]string{}
	for i := range 3 {
		name := fmt.Sprintf("key-%d", i)
		want[name] = string(storedMaterial(t, env, env.CreateKey(t, name)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for g := range 20 {
		wg.Go(func() {
			for i := range 10 {
				name := fmt.Sprintf("key-%d", (g+i)%3)
				s, err := c.Secret(t.Context(), name)
				if err != nil {
					errs <- err
					return
				}
				if string(s) != want[name] {
					errs <- fmt.Errorf("wrong secret for %s", name)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := c.Stats(); s.Dials > 4 || s.Get != 200 {
		t.Errorf("stats: %+v; want at most 4 dials (the pool size) and 200 gets", s)
	}
}

func TestLifecycle(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Client(t, kmstest.Logger(t))
	ctx := t.Context()
	a, err := c.CreateKey(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.CreateKey(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	uids, err := c.Locate(ctx, "")
	if err != nil || len(uids) != 2 || uids[0] != b || uids[1] != a {
		t.Fatalf("Locate all = %v, %v; want [%s %s] (newest first)", uids, err, b, a)
	}
	if err := c.Destroy(ctx, a); err == nil || !strings.Contains(err.Error(), "revoke it first") {
		t.Fatalf("Destroy of an active key: %v", err)
	}
	if err := c.Revoke(ctx, a, false); err != nil {
		t.Fatal(err)
	}
	if at, err := c.Attributes(ctx, a); err != nil || at.State != "Deactivated" {
		t.Fatalf("after revoke: %+v, %v", at, err)
	}
	// A revoked key is no longer handed out: files under it fail with ENOKEY, as the issue asks.
	if _, err := c.Secret(ctx, "a"); !errors.Is(err, kms.ErrKeyNotFound) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("Secret of a deactivated key: %v; want ErrKeyNotFound saying it is revoked", err)
	}
	if uids, err := c.LocateActive(ctx, "a"); err != nil || len(uids) != 0 {
		t.Fatalf("LocateActive of a deactivated key: %v, %v", uids, err)
	}
	if uids, err := c.Locate(ctx, "a"); err != nil || len(uids) != 1 || uids[0] != a {
		t.Fatalf("Locate (any state) of a deactivated key: %v, %v", uids, err)
	}
	if err := c.Revoke(ctx, b, true); err != nil {
		t.Fatal(err)
	}
	if at, err := c.Attributes(ctx, b); err != nil || at.State != "Compromised" {
		t.Fatalf("after compromise: %+v, %v", at, err)
	}
	if err := c.Destroy(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Secret(ctx, "a"); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("Secret of a destroyed key: %v", err)
	}
	if _, err := c.Attributes(ctx, a); !errors.Is(err, kms.ErrKeyNotFound) {
		t.Fatalf("Attributes of a destroyed key: %v", err)
	}
}

func TestCacheSavesRoundTrips(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Client(t, kmstest.Logger(t))
	env.CreateKey(t, "pykmip-bucket")
	cache := kms.NewCache(c, kms.CacheOptions{HitTTL: time.Minute, NotFoundTTL: time.Minute, Logger: kmstest.Logger(t)})
	defer cache.Close()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 100 { // 1000 "files" in all
				s, err := cache.Secret(t.Context(), "pykmip-bucket")
				if err != nil || len(s) != 32 {
					t.Errorf("Secret: %d bytes, %v", len(s), err)
					return
				}
				clear(s)
			}
		})
	}
	wg.Wait()
	if s := c.Stats(); s.Locate != 1 || s.Get != 1 {
		t.Errorf("client stats after 1000 cached lookups: %+v; want 1 Locate and 1 Get", s)
	}
	if s := cache.Stats(); s.Fetches != 1 || s.Hits+s.Misses != 1000 {
		t.Errorf("cache stats: %+v", s)
	}
}
