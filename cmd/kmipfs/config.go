package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/kmipfs/kmipfs/fs"
	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/objstore/s3"
)

// Config is the whole kmipfs.toml. Each section belongs to the package that uses it; this file
// only decodes, fills defaults, resolves relative paths and validates.
type Config struct {
	KMS   kms.Config  `toml:"kms"`
	Store StoreConfig `toml:"store"`
	Meta  MetaConfig  `toml:"meta"`
	FS    fs.Config   `toml:"fs"`
	Log   LogConfig   `toml:"log"`
	// Metrics is the [metrics] section: addr = "host:port" serves Prometheus metrics at
	// http://addr/metrics; empty (the default) serves none. Port 0 picks a free port, which the
	// log and kmipfs status show.
	Metrics MetricsConfig `toml:"metrics,omitempty"`
}

// MetricsConfig is the [metrics] section.
type MetricsConfig struct {
	Addr string `toml:"addr,omitempty"`
}

// StoreConfig is the [store] section: where ciphertext objects are kept.
type StoreConfig struct {
	Backend string `toml:"backend"`        // "local" (the default) or "s3"
	Path    string `toml:"path,omitempty"` // local: the directory holding the objects
	// s3.Config holds the options of backend "s3" (endpoint, region, path_style, bucket_prefix,
	// credentials_file, ca_path, timeouts, concurrency, ...), written directly in [store].
	s3.Config
}

// MetaConfig is the [meta] section: where the Badger metadata database lives.
type MetaConfig struct {
	Path string `toml:"path"`
	// EncryptionKeyID, when set, encrypts the database at rest (Badger's own encryption, so
	// names, attributes and wrapped keys are protected too) with the 32-byte KMIP secret this key
	// id names through kms.key_template. It must be set when the database is created and never
	// changed: a database opened with another key, or without one, is refused.
	EncryptionKeyID string `toml:"encryption_key_id,omitempty"`
}

// LogConfig is the [log] section.
type LogConfig struct {
	Level  string `toml:"level"`  // debug, info, warn, error (default info)
	Format string `toml:"format"` // text or json (default text)
}

// Default locations, as for a system service.
const (
	defaultStorePath = "/var/lib/kmipfs/objects"
	defaultMetaPath  = "/var/lib/kmipfs/meta"
)

// loadConfig reads path strictly: an unknown option or a value of the wrong type stops start-up
// with the option's name. Relative paths are taken relative to the config file's directory.
func loadConfig(path string) (*Config, error) {
	c, err := decodeConfig(path)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// loadKMSConfig reads path as strictly as loadConfig but checks only the [kms] section, for the key
// commands, which need no store or metadata (and must not create their directories).
func loadKMSConfig(path string) (*Config, error) {
	c, err := decodeConfig(path)
	if err != nil {
		return nil, err
	}
	if err := c.KMS.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// decodeConfig decodes path strictly, fills defaults and resolves relative paths.
func decodeConfig(path string) (*Config, error) {
	var c Config
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, fmt.Errorf("config %s: %s", path, perr.ErrorWithPosition())
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("config %s: unknown option %s (see the example in README.md)", path, strings.Join(keys, ", "))
	}
	c.setDefaults()
	c.resolvePaths(filepath.Dir(path))
	return &c, nil
}

func (c *Config) setDefaults() {
	c.KMS.SetDefaults()
	c.FS.SetDefaults()
	if c.Store.Backend == "" {
		c.Store.Backend = "local"
	}
	if c.Store.Backend == "s3" {
		c.Store.Config.SetDefaults()
	} else if c.Store.Path == "" {
		c.Store.Path = defaultStorePath
	}
	if c.Meta.Path == "" {
		c.Meta.Path = defaultMetaPath
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
}

func (c *Config) resolvePaths(base string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	abs(&c.KMS.CAPath)
	abs(&c.KMS.ClientCert)
	abs(&c.KMS.ClientKey)
	abs(&c.KMS.PasswordFile)
	abs(&c.Store.Path)
	abs(&c.Store.CredentialsFile)
	abs(&c.Store.CAPath)
	abs(&c.Meta.Path)
}

// Validate checks every section and names the first wrong option. It creates the store and meta
// directories if they are missing, but only once every option has passed, so a refused config
// leaves nothing behind.
func (c *Config) Validate() error {
	var dirs [][2]string // option, path
	if err := c.KMS.Validate(); err != nil {
		return err
	}
	switch c.Store.Backend {
	case "local":
		if c.Store.Config != (s3.Config{}) {
			return errors.New("store: endpoint, region, bucket_prefix, credentials_file and the other S3 options need backend = \"s3\"")
		}
		dirs = append(dirs, [2]string{"store.path", c.Store.Path})
	case "s3":
		if c.Store.Path != "" {
			return errors.New("store.path: only for backend \"local\"; backend \"s3\" keeps objects in the buckets of store.endpoint")
		}
		if err := c.Store.Config.Validate(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("store.backend: expected \"local\" or \"s3\", got %q", c.Store.Backend)
	}
	dirs = append(dirs, [2]string{"meta.path", c.Meta.Path})
	if c.Meta.EncryptionKeyID != "" {
		if err := validKeyID("meta.encryption_key_id", c.Meta.EncryptionKeyID); err != nil {
			return err
		}
	}
	if err := c.FS.Validate(); err != nil {
		return err
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return err
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return fmt.Errorf("log.format: expected \"text\" or \"json\", got %q", c.Log.Format)
	}
	if err := validMetricsAddr(c.Metrics.Addr); err != nil {
		return err
	}
	for _, d := range dirs {
		if err := checkExisting(d[0], d[1]); err != nil {
			return err
		}
	}
	for _, d := range dirs {
		if err := checkDir(d[0], d[1]); err != nil {
			return err
		}
	}
	return nil
}

// checkExisting refuses a path that exists and is not a directory, before anything is created.
func checkExisting(option, p string) error {
	if st, err := os.Stat(p); err == nil && !st.IsDir() {
		return fmt.Errorf("%s: expected a directory, %s is not one", option, p)
	}
	return nil
}

// checkDir accepts a directory that exists or can be created.
func checkDir(option, p string) error {
	st, err := os.Stat(p)
	switch {
	case err == nil && !st.IsDir():
		return fmt.Errorf("%s: expected a directory, %s is not one", option, p)
	case err == nil:
		return nil
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(p, 0o700); err != nil {
			return fmt.Errorf("%s: cannot create %s: %w", option, p, err)
		}
		return nil
	default:
		return fmt.Errorf("%s: %w", option, err)
	}
}

// writeConfig writes c as a TOML file readable only by its owner.
func writeConfig(path string, c *Config, header string) error {
	var b strings.Builder
	b.WriteString(header)
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
