package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gemalto/kmip-go/kmip14"

	"github.com/kmipfs/kmipfs/kms"
)

const keyUsage = `Usage:
  kmipfs key create [--config FILE] KEYID                   create an active AES-256 key for KEYID
  kmipfs key list   [--config FILE] [--all]                 list the keys the key template can name
  kmipfs key show   [--config FILE] KEYID                   state, algorithm, length, usage mask, dates
  kmipfs key revoke [--config FILE] [--compromised] [--uid UID] KEYID
                                                            revoke the active key of KEYID

The key commands talk KMIP to the server in the [kms] section of the config file, the same one a mount
uses, and name keys as a mount does: KEYID through kms.key_template ("pykmip-$keyid" turns
"mybucketkey" into the KMIP name "pykmip-mybucketkey"). "create" does what the Python snippet in Ceph's
KMIP documentation does: Create (AES, 256 bits, usage Encrypt|Decrypt, that name), then Activate.
A revoked key is no longer handed out: files under it fail with ENOKEY once the mounts' kms.cache_ttl
has passed, and their data stays unreadable until the key is active again somewhere (KMIP has no
un-revoke; keep revocation for keys you mean to retire).

Exit codes: 0 done, 1 failed (no such key, already exists, refused), 2 bad command line or config,
3 KMIP server unreachable or refused the connection.
`

func cmdKey(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, keyUsage)
		if len(args) == 0 {
			return &exitError{code: exitUsage, err: errHelp}
		}
		return &exitError{code: exitOK, err: errHelp}
	}
	sub := args[0]
	fl := flag.NewFlagSet("key "+sub, flag.ContinueOnError)
	fl.SetOutput(stderr)
	configPath := fl.String("config", "/etc/kmipfs/kmipfs.toml", "the config file; its [kms] section names the KMIP server")
	var all, compromised *bool
	var uid *string
	nargs := 1
	switch sub {
	case "create", "show":
	case "list":
		all = fl.Bool("all", false, "list every symmetric key, also those the key template does not name")
		nargs = 0
	case "revoke":
		compromised = fl.Bool("compromised", false, "revoke with reason Key Compromise (state Compromised) instead of Cessation of Operation (Deactivated)")
		uid = fl.String("uid", "", "the KMIP unique identifier to revoke, when several active keys carry the name")
	default:
		fmt.Fprintf(stderr, "kmipfs key: unknown command %q\n\n%s", sub, keyUsage)
		return &exitError{code: exitUsage, err: errHelp}
	}
	fl.Usage = func() {
		fmt.Fprint(stderr, keyUsage+"\nOptions:\n")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &exitError{code: exitOK, err: errHelp}
		}
		return &exitError{code: exitUsage, err: errHelp}
	}
	if fl.NArg() != nargs {
		fl.Usage()
		return &exitError{code: exitUsage, err: errHelp}
	}
	keyID := fl.Arg(0)
	if nargs == 1 && (keyID == "" || strings.ContainsAny(keyID, "\x00\n\r/")) {
		return fail(exitUsage, "key id %q: expected a non-empty id without '/', NUL or newlines", keyID)
	}
	cfg, err := loadKMSConfig(*configPath)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	client, err := kms.NewClient(cfg.KMS, nil)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	defer client.Close()
	// One budget for the whole command: a few round trips per key.
	ctx, cancel := context.WithTimeout(context.Background(), 4*cfg.KMS.Timeout.Duration)
	defer cancel()
	if err := client.Ping(ctx); err != nil {
		return fail(exitKMS, "%v", err)
	}
	k := keyCmd{cfg: cfg, client: client, out: stdout}
	switch sub {
	case "create":
		err = k.create(ctx, keyID)
	case "list":
		err = k.list(ctx, *all)
	case "show":
		err = k.show(ctx, keyID)
	case "revoke":
		err = k.revoke(ctx, keyID, *uid, *compromised)
	}
	var ee *exitError
	switch {
	case err == nil, errors.As(err, &ee):
		return err
	case errors.Is(err, kms.ErrUnavailable):
		return fail(exitKMS, "%v", err)
	default:
		return fail(exitFailure, "%v", err)
	}
}

type keyCmd struct {
	cfg    *Config
	client *kms.Client
	out    io.Writer
}

func (k keyCmd) name(keyID string) string { return kms.KeyName(k.cfg.KMS.KeyTemplate, keyID) }

func (k keyCmd) create(ctx context.Context, keyID string) error {
	name := k.name(keyID)
	active, err := k.client.LocateActive(ctx, name)
	if err != nil {
		return err
	}
	if len(active) > 0 {
		return fail(exitFailure, "key id %q already has an active key: KMIP name %q, uid %s", keyID, name, strings.Join(active, ", "))
	}
	uid, err := k.client.CreateKey(ctx, name)
	if err != nil {
		if uid != "" {
			return fmt.Errorf("created key %s (%q) but could not activate it: %w", uid, name, err)
		}
		return err
	}
	fmt.Fprintf(k.out, "created key id %s: KMIP name %q, uid %s, AES-256, usage Encrypt|Decrypt, Active\n", keyID, name, uid)
	return nil
}

func (k keyCmd) list(ctx context.Context, all bool) error {
	uids, err := k.client.Locate(ctx, "")
	if err != nil {
		return err
	}
	type row struct {
		id string
		a  kms.KeyAttributes
	}
	var rows []row
	for _, uid := range uids {
		a, err := k.client.Attributes(ctx, uid)
		if errors.Is(err, kms.ErrKeyNotFound) {
			continue // destroyed meanwhile
		}
		if err != nil {
			return err
		}
		id, ok := kms.KeyID(k.cfg.KMS.KeyTemplate, a.Name)
		if !ok {
			if !all {
				continue
			}
			id = "-"
		}
		rows = append(rows, row{id, a})
	}
	slices.SortStableFunc(rows, func(a, b row) int { return strings.Compare(a.a.Name, b.a.Name) })
	tw := tabwriter.NewWriter(k.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tKMIP NAME\tUID\tSTATE\tALGORITHM\tCREATED")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.id, r.a.Name, r.a.UID, r.a.State, algorithm(r.a), date(r.a.InitialDate))
	}
	return tw.Flush()
}

func (k keyCmd) show(ctx context.Context, keyID string) error {
	name := k.name(keyID)
	uids, err := k.client.Locate(ctx, name)
	if err != nil {
		return err
	}
	if len(uids) == 0 {
		return fail(exitFailure, "no key for key id %q: the KMIP server has no symmetric key named %q (kms.key_template is %q)",
			keyID, name, k.cfg.KMS.KeyTemplate)
	}
	for i, uid := range uids {
		a, err := k.client.Attributes(ctx, uid)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(k.out)
		}
		tw := tabwriter.NewWriter(k.out, 0, 4, 1, ' ', 0)
		line := func(label, value string) {
			if value != "" {
				fmt.Fprintf(tw, "%s:\t%s\n", label, value)
			}
		}
		line("key id", keyID)
		line("kmip name", a.Name)
		line("uid", a.UID)
		line("object type", a.ObjectType)
		line("state", a.State)
		line("algorithm", a.Algorithm)
		if a.Length != 0 {
			line("length", fmt.Sprintf("%d bits", a.Length))
		}
		if a.UsageMask != 0 {
			line("usage mask", fmt.Sprintf("%s (%d)", usageMask(a.UsageMask), a.UsageMask))
		}
		line("created", date(a.InitialDate))
		line("activated", date(a.ActivationDate))
		line("deactivated", date(a.DeactivationDate))
		line("compromised", date(a.CompromiseDate))
		line("last change", date(a.LastChangeDate))
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(uids) > 1 {
		fmt.Fprintf(k.out, "\n%d keys carry the name %q; a mount uses the one that is Active, and refuses to choose between several.\n", len(uids), name)
	}
	return nil
}

func (k keyCmd) revoke(ctx context.Context, keyID, uid string, compromised bool) error {
	name := k.name(keyID)
	active, err := k.client.LocateActive(ctx, name)
	if err != nil {
		return err
	}
	switch {
	case uid != "" && !slices.Contains(active, uid):
		return fail(exitFailure, "uid %s is not an active key named %q (active: %s)", uid, name, strings.Join(active, ", "))
	case uid != "":
	case len(active) == 0:
		return fail(exitFailure, "no active key for key id %q (KMIP name %q)", keyID, name)
	case len(active) > 1:
		return fail(exitFailure, "%d active keys are named %q (uids %s); choose one with --uid", len(active), name, strings.Join(active, ", "))
	default:
		uid = active[0]
	}
	if err := k.client.Revoke(ctx, uid, compromised); err != nil {
		return err
	}
	state := "Deactivated"
	if compromised {
		state = "Compromised"
	}
	fmt.Fprintf(k.out, "revoked key id %s (KMIP name %q, uid %s): now %s; mounts refuse files under it (ENOKEY) within kms.cache_ttl (%s)\n",
		keyID, name, uid, state, k.cfg.KMS.CacheTTL.Duration)
	return nil
}

func algorithm(a kms.KeyAttributes) string {
	if a.Length == 0 {
		return a.Algorithm
	}
	return fmt.Sprintf("%s-%d", a.Algorithm, a.Length)
}

func date(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// usageMask names the bits of a KMIP Cryptographic Usage Mask ("Encrypt|Decrypt").
func usageMask(m uint32) string { return kmip14.CryptographicUsageMask(m).String() }
