package kms_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/kms/certs"
)

func TestKeyName(t *testing.T) {
	tests := []struct{ template, id, want string }{
		{"pykmip-$keyid", "mybucketkey", "pykmip-mybucketkey"},
		{"$keyid", "k", "k"},
		{"", "k", "k"}, // empty template means the default
		{"$keyid-$keyid", "a", "a-a"},
		{"prefix/$keyid/suffix", "x y", "prefix/x y/suffix"},
		{"pykmip-$keyid", "", "pykmip-"},
		{"$KEYID-$keyid", "a", "$KEYID-a"}, // case-sensitive, like Ceph
		{"$keyi$keyidd", "a", "$keyiad"},
	}
	for _, tt := range tests {
		if got := kms.KeyName(tt.template, tt.id); got != tt.want {
			t.Errorf("KeyName(%q, %q) = %q, want %q", tt.template, tt.id, got, tt.want)
		}
	}
}

func testPKI(t *testing.T) certs.Files {
	t.Helper()
	f, err := certs.Generate(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestKeyID(t *testing.T) {
	tests := []struct {
		template, name, want string
		ok                   bool
	}{
		{"pykmip-$keyid", "pykmip-mybucketkey", "mybucketkey", true},
		{"$keyid", "mybucketkey", "mybucketkey", true},
		{"", "k", "k", true},
		{"pykmip-$keyid", "other-mybucketkey", "", false},
		{"pykmip-$keyid", "pykmip-", "", false},
		{"a-$keyid-b", "a-x-b-b", "x-b", true},
		{"$keyid/$keyid", "ab/ab", "ab", true},
		{"$keyid/$keyid", "ab/cd", "", false},
	}
	for _, tt := range tests {
		got, ok := kms.KeyID(tt.template, tt.name)
		if got != tt.want || ok != tt.ok {
			t.Errorf("KeyID(%q, %q) = %q, %v; want %q, %v", tt.template, tt.name, got, ok, tt.want, tt.ok)
		}
		if ok && kms.KeyName(tt.template, got) != tt.name {
			t.Errorf("KeyName(%q, KeyID(...)) != %q", tt.template, tt.name)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	pki := testPKI(t)
	other := testPKI(t)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	password, empty := filepath.Join(dir, "password"), filepath.Join(dir, "empty")
	if err := os.WriteFile(password, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := kms.Config{Addr: "127.0.0.1:5696", CAPath: pki.CA, ClientCert: pki.ClientCert, ClientKey: pki.ClientKey}
	tests := []struct {
		name   string
		modify func(*kms.Config)
		want   []string // substrings of the error; none means valid
	}{
		{"valid", func(*kms.Config) {}, nil},
		{"valid with options", func(c *kms.Config) {
			c.Addr, c.KeyTemplate, c.ServerName = "kmip.example.com:5696", "pykmip-$keyid", "kmip.example.com"
			c.Timeout.Duration, c.CacheTTL.Duration, c.NegativeTTL.Duration = time.Second, time.Hour, time.Minute
		}, nil},
		{"ipv6 addr", func(c *kms.Config) { c.Addr = "[::1]:5696" }, nil},
		{"missing addr", func(c *kms.Config) { c.Addr = "" }, []string{"kms.addr: expected host:port"}},
		{"addr without port", func(c *kms.Config) { c.Addr = "x" }, []string{`kms.addr: expected host:port, got "x"`}},
		{"addr without host", func(c *kms.Config) { c.Addr = ":5696" }, []string{`kms.addr: expected host:port, got ":5696"`}},
		{"bad port", func(c *kms.Config) { c.Addr = "h:99999" }, []string{`kms.addr: expected a port between 1 and 65535, got "99999"`}},
		{"named port", func(c *kms.Config) { c.Addr = "h:kmip" }, []string{`kms.addr: expected a port`}},
		{"missing CA", func(c *kms.Config) { c.CAPath = "" }, []string{"kms.ca_path: expected the path"}},
		{"CA file missing", func(c *kms.Config) { c.CAPath = filepath.Join(dir, "nope.crt") }, []string{"kms.ca_path:", "nope.crt", "no such file"}},
		{"CA not PEM", func(c *kms.Config) { c.CAPath = notPEM }, []string{"kms.ca_path:", "not.pem", "no PEM certificate"}},
		{"missing cert and key", func(c *kms.Config) { c.ClientCert, c.ClientKey = "", "" },
			[]string{"kms.client_cert: expected the path", "kms.client_key: expected the path"}},
		{"cert file missing", func(c *kms.Config) { c.ClientCert = filepath.Join(dir, "gone.crt") }, []string{"kms.client_cert:", "gone.crt"}},
		{"key file missing", func(c *kms.Config) { c.ClientKey = filepath.Join(dir, "gone.key") }, []string{"kms.client_key:", "gone.key"}},
		{"key does not match cert", func(c *kms.Config) { c.ClientKey = other.ClientKey },
			[]string{"kms.client_cert, kms.client_key:", "client.crt", "private key does not match"}},
		{"key is not PEM", func(c *kms.Config) { c.ClientKey = notPEM }, []string{"kms.client_cert, kms.client_key:", "not.pem"}},
		{"template without $keyid", func(c *kms.Config) { c.KeyTemplate = "pykmip-key" },
			[]string{`kms.key_template: expected a template containing "$keyid", got "pykmip-key"`}},
		{"negative timeout", func(c *kms.Config) { c.Timeout.Duration = -time.Second }, []string{`kms.timeout: expected a positive duration, got "-1s"`}},
		{"negative cache ttl", func(c *kms.Config) { c.CacheTTL.Duration = -time.Second }, []string{"kms.cache_ttl:"}},
		{"negative negative ttl", func(c *kms.Config) { c.NegativeTTL.Duration = -time.Second }, []string{"kms.negative_ttl:"}},
		{"several problems", func(c *kms.Config) { c.Addr, c.KeyTemplate = "x", "k" }, []string{"kms.addr:", "kms.key_template:"}},
		{"negative error ttl", func(c *kms.Config) { c.ErrorTTL.Duration = -time.Second }, []string{"kms.error_ttl:"}},
		{"negative stale ttl", func(c *kms.Config) { c.StaleTTL.Duration = -time.Second }, []string{"kms.stale_ttl:"}},
		{"valid credential", func(c *kms.Config) { c.Username, c.PasswordFile = "alice", password }, nil},
		{"username only", func(c *kms.Config) { c.Username = "alice" }, nil},
		{"password without username", func(c *kms.Config) { c.PasswordFile = password }, []string{"kms.password_file: a password needs kms.username"}},
		{"password file missing", func(c *kms.Config) { c.Username, c.PasswordFile = "alice", filepath.Join(dir, "nopw") },
			[]string{"kms.password_file:", "nopw"}},
		{"password file empty", func(c *kms.Config) { c.Username, c.PasswordFile = "alice", empty }, []string{"kms.password_file:", "is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.modify(&cfg)
			err := cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v", cfg)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if _, err := kms.NewClient(cfg, nil); err == nil {
				t.Errorf("NewClient accepted a config that Validate refused")
			}
		})
	}
}

func TestConfigTOML(t *testing.T) {
	pki := testPKI(t)
	header := "[kms]\naddr = \"127.0.0.1:5696\"\nca_path = " + quote(pki.CA) + "\nclient_cert = " + quote(pki.ClientCert) +
		"\nclient_key = " + quote(pki.ClientKey) + "\n"
	tests := []struct {
		name    string
		extra   string
		want    kms.Config // only the durations and template are compared
		wantErr string
	}{
		{"defaults", "", kms.Config{KeyTemplate: "$keyid", Timeout: dur(10 * time.Second), CacheTTL: dur(5 * time.Minute), NegativeTTL: dur(10 * time.Second), ErrorTTL: dur(time.Second), StaleTTL: dur(50 * time.Minute)}, ""},
		{"set", "key_template = \"pykmip-$keyid\"\ntimeout = \"2s\"\ncache_ttl = \"1h30m\"\nnegative_ttl = \"500ms\"\nerror_ttl = \"3s\"\nstale_ttl = \"2h\"\n",
			kms.Config{KeyTemplate: "pykmip-$keyid", Timeout: dur(2 * time.Second), CacheTTL: dur(90 * time.Minute), NegativeTTL: dur(500 * time.Millisecond), ErrorTTL: dur(3 * time.Second), StaleTTL: dur(2 * time.Hour)}, ""},
		{"bad unit", "timeout = \"10 seconds\"\n", kms.Config{}, `"kms.timeout"): expected a duration such as "10s" or "5m", got "10 seconds"`},
		{"no unit", "cache_ttl = \"5\"\n", kms.Config{}, `"kms.cache_ttl"): expected a duration such as "10s" or "5m", got "5"`},
		{"number", "negative_ttl = 10\n", kms.Config{}, `"kms.negative_ttl"): expected a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var file struct {
				KMS kms.Config `toml:"kms"`
			}
			md, err := toml.Decode(header+tt.extra, &file)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u := md.Undecoded(); len(u) != 0 {
				t.Fatalf("undecoded keys %v", u)
			}
			cfg := file.KMS
			cfg.SetDefaults()
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if cfg.KeyTemplate != tt.want.KeyTemplate || cfg.Timeout != tt.want.Timeout || cfg.CacheTTL != tt.want.CacheTTL || cfg.NegativeTTL != tt.want.NegativeTTL || cfg.ErrorTTL != tt.want.ErrorTTL || cfg.StaleTTL != tt.want.StaleTTL {
				t.Errorf("decoded %+v, want %+v", cfg, tt.want)
			}
			// Durations survive a round trip through TOML.
			var out strings.Builder
			if err := toml.NewEncoder(&out).Encode(file); err != nil {
				t.Fatal(err)
			}
			var again struct {
				KMS kms.Config `toml:"kms"`
			}
			if _, err := toml.Decode(out.String(), &again); err != nil || again.KMS != file.KMS {
				t.Errorf("round trip: %+v, %v; want %+v", again.KMS, err, file.KMS)
			}
		})
	}
}

func dur(d time.Duration) kms.Duration { return kms.Duration{Duration: d} }

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }
