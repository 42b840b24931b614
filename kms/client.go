package kms

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gemalto/kmip-go"
	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/kmipfs/kmipfs/kms/internal/wire"
)

const (
	// maxIdle is how many idle connections the pool keeps. kmipfs needs few: the Cache turns a busy mount
	// into one round trip per key per TTL.
	maxIdle = 4
	// maxOpen bounds connections in use at once, so a burst of misses cannot open hundreds of TLS sessions
	// against a server such as PyKMIP that handles requests one at a time anyway. It equals maxIdle, so a
	// busy client reuses its connections instead of dialing and dropping the surplus.
	maxOpen = maxIdle
	// idleTimeout drops pooled connections that sat unused this long; servers and middleboxes close idle
	// sessions, and a fresh dial is cheaper than a failed request plus retry.
	idleTimeout = time.Minute
	// maxAttempts bounds how often one request is tried after transport failures (all within one
	// Config.Timeout).
	maxAttempts = 3
	// backoff is the pause before the first retry on a fresh connection; it doubles with each further
	// retry (50 ms, 100 ms), so a restarting server gets a moment. A dead pooled connection is replaced at
	// once.
	backoff = 50 * time.Millisecond
	// discoverMinor is the KMIP 1.x minor version in the header of Discover Versions, sent before a
	// version is agreed. 1.2 is what PyKMIP parses by default and what every 1.x server since 1.2 accepts.
	discoverMinor = 2
)

// clientVersions are the KMIP versions this client speaks, newest first. The messages it sends are the
// same in all of them; the agreed version only goes into the request header.
var clientVersions = []kmip.ProtocolVersion{
	{ProtocolVersionMajor: 1, ProtocolVersionMinor: 4},
	{ProtocolVersionMajor: 1, ProtocolVersionMinor: 3},
	{ProtocolVersionMajor: 1, ProtocolVersionMinor: 2},
	{ProtocolVersionMajor: 1, ProtocolVersionMinor: 1},
	{ProtocolVersionMajor: 1, ProtocolVersionMinor: 0},
}

// Client is a KMIP 1.x client over mutual TLS (TLS 1.2 or newer, server certificate verified against the
// configured CA). Every new connection starts with Discover Versions and then speaks the highest 1.x
// version both sides support. It keeps a small pool of connections (at most 4, idle or in use), bounds
// every call by Config.Timeout (dial, handshake, request and retries share that budget, so a call never
// takes longer), and retries after transport errors with backoff. Safe for concurrent use.
type Client struct {
	cfg     Config
	tlsConf *tls.Config
	leaf    *x509.Certificate    // the client certificate, for error hints
	auth    *kmip.Authentication // the Username and Password credential, or nil
	log     *slog.Logger
	slots   chan struct{} // one token per connection in use

	mu     sync.Mutex
	idle   []*conn // protected by mu; most recently used last
	closed bool    // protected by mu

	// noStateFilter is set once the server refused a Locate filtered on State; from then on the state
	// of each match is checked with Get Attributes.
	noStateFilter atomic.Bool
	// version is the minor version agreed on the most recent connection, plus one (0: none yet).
	version atomic.Int32

	nLocate, nGet, nCreate, nActivate, nDiscover, nOther, nErrors, nDials atomic.Uint64
}

// ClientStats counts requests the client sent (retries included) and calls that failed.
type ClientStats struct {
	Locate, Get, Create, Activate uint64
	Discover                      uint64 // Discover Versions: one per new connection
	Other                         uint64 // Get Attributes, Revoke, Destroy
	Errors                        uint64 // calls that returned an error
	Dials                         uint64 // connections dialed (failed dials included)
}

// conn is one pooled TLS connection. Only one request is on a conn at a time.
type conn struct {
	tc       *tls.Conn
	version  kmip.ProtocolVersion // agreed with Discover Versions when the connection was opened
	lastUsed time.Time
}

// NewClient checks cfg (after SetDefaults), loads the CA, the client key pair and the password file, and
// returns a client. It does not dial: the first call does (Ping at start-up).
func NewClient(cfg Config, logger *slog.Logger) (*Client, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pool, err := loadCAPool(cfg.CAPath)
	if err != nil {
		return nil, fmt.Errorf("kms: ca_path: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(cfg.ClientCert, cfg.ClientKey)
	if err != nil {
		return nil, fmt.Errorf("kms: load client certificate %q and key %q: %w", cfg.ClientCert, cfg.ClientKey, err)
	}
	serverName := cfg.ServerName
	if serverName == "" {
		serverName, _, _ = net.SplitHostPort(cfg.Addr)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		cfg:  cfg,
		leaf: pair.Leaf,
		tlsConf: &tls.Config{
			RootCAs:      pool,
			Certificates: []tls.Certificate{pair},
			ServerName:   serverName,
			MinVersion:   tls.VersionTLS12,
			CipherSuites: cipherSuites(),
		},
		log:   logger,
		slots: make(chan struct{}, maxOpen),
	}
	if cfg.Username != "" {
		cred := kmip.UsernameAndPasswordCredentialValue{Username: cfg.Username}
		if cfg.PasswordFile != "" {
			if cred.Password, err = readPassword(cfg.PasswordFile); err != nil {
				return nil, fmt.Errorf("kms: password_file: %w", err)
			}
		}
		c.auth = &kmip.Authentication{Credential: []kmip.Credential{{
			CredentialType: kmip14.CredentialTypeUsernameAndPassword, CredentialValue: cred}}}
	}
	return c, nil
}

// cipherSuites are the TLS 1.2 suites offered: Go's ECDHE suites, plus ECDHE with AES-128-CBC-SHA256,
// which Go leaves out by default but which are the only ones PyKMIP 0.10 accepts with an RSA server
// certificate (its TLS1.2 suite has no RSA-GCM cipher). TLS 1.3 suites are not configurable and always on.
// Suites without forward secrecy (static RSA key exchange) are not offered.
func cipherSuites() []uint16 {
	var ids []uint16
	for _, s := range tls.CipherSuites() {
		if strings.HasPrefix(s.Name, "TLS_ECDHE_") && slices.Contains(s.SupportedVersions, tls.VersionTLS12) {
			ids = append(ids, s.ID)
		}
	}
	return append(ids, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256)
}

// Stats returns the request counters. Tests use them to check that the cache saves round trips.
func (c *Client) Stats() ClientStats {
	return ClientStats{
		Locate:   c.nLocate.Load(),
		Get:      c.nGet.Load(),
		Create:   c.nCreate.Load(),
		Activate: c.nActivate.Load(),
		Discover: c.nDiscover.Load(),
		Other:    c.nOther.Load(),
		Errors:   c.nErrors.Load(),
		Dials:    c.nDials.Load(),
	}
}

// Version returns the KMIP version agreed on the most recent connection ("1.4"), or "" before the first.
func (c *Client) Version() string {
	v := c.version.Load()
	if v == 0 {
		return ""
	}
	return fmt.Sprintf("1.%d", v-1)
}

// Close closes idle connections; connections in use are closed when their call ends. Calls after Close
// return ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, cn := range idle {
		_ = cn.tc.Close()
	}
	return nil
}

// CloseIdle closes the pooled connections that no call is using, like http.Transport's
// CloseIdleConnections. The next call dials again.
func (c *Client) CloseIdle() { c.dropIdle() }

// Ping opens a fresh connection, which runs Discover Versions, and keeps it in the pool. It is the
// start-up check: when TLS fails (unknown CA, a client certificate the server rejects or that expired,
// nothing listening) or the server speaks no KMIP 1.x, the error wraps ErrUnavailable and carries the
// cause and a hint naming the option to check, so one log line says what to fix.
func (c *Client) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return c.fail(&opError{op: "ping", cause: err})
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout.Duration)
	defer cancel()
	if err := c.acquire(parent, ctx, "ping", ""); err != nil {
		return err
	}
	defer c.release()
	for attempt := 0; ; attempt++ {
		cn, err := c.getConn(ctx, true)
		if err == nil {
			c.putConn(cn)
			return nil
		}
		if errors.Is(err, ErrClosed) {
			return c.fail(&opError{op: "ping", kind: ErrClosed})
		}
		if attempt+1 < maxAttempts && c.retryable(parent, ctx, err) && sleepCtx(ctx, backoff<<attempt) {
			c.log.Debug("kms: connect failed, retrying", "addr", c.cfg.Addr, "err", err)
			continue
		}
		return c.fail(c.transportError(parent, "ping", "", err))
	}
}

// Secret locates the one Active SymmetricKey object called name and returns its raw key bytes, which must
// be a 32-byte AES secret. The Locate filters on Name, Object Type = Symmetric Key and State = Active
// (where the server cannot filter on State, the client checks the state of each match). No match is
// ErrKeyNotFound, with the number of objects of that name in other states (revoked, deactivated, not
// yet activated); several are ErrAmbiguous, with the count; anything but a plain 32-byte AES key is
// ErrBadKey. The caller owns the returned slice and should zero it after use.
//
// So a key that is revoked, deactivated or destroyed stops working for kmipfs at the next fetch: files
// under it fail with ENOKEY until it is replaced, the way fscrypt treats a removed key.
func (c *Client) Secret(ctx context.Context, name string) ([]byte, error) {
	if name == "" {
		// Locate with an empty Name would match unnamed objects on some servers.
		return nil, c.fail(&opError{op: "secret", kind: ErrKeyNotFound, cause: errors.New("empty key name")})
	}
	uids, others, err := c.locateActive(ctx, name)
	if err != nil {
		return nil, err
	}
	switch len(uids) {
	case 0:
		return nil, c.fail(c.notFound(ctx, name, others))
	case 1:
	default:
		return nil, c.fail(&opError{op: "locate", name: name, kind: ErrAmbiguous,
			cause: fmt.Errorf("%d Active Symmetric Keys carry this name, expected exactly one; revoke the extra ones", len(uids))})
	}
	payload, raw, err := c.call(ctx, "get", name, kmip14.OperationGet, kmip.GetRequestPayload{UniqueIdentifier: uids[0]}, true)
	defer wire.Zero(raw)
	if err != nil {
		return nil, err
	}
	key, err := symmetricKey(payload)
	if err != nil {
		return nil, c.fail(&opError{op: "get", name: name, kind: ErrBadKey, cause: fmt.Errorf("object %s: %w", uids[0], err)})
	}
	return key, nil
}

// locateActive returns the UIDs of the Active SymmetricKeys called name. others is the number of objects
// of that name in other states when it is known (the server cannot filter on State), else -1.
func (c *Client) locateActive(ctx context.Context, name string) (active []string, others int, err error) {
	if !c.noStateFilter.Load() {
		uids, err := c.locate(ctx, "locate", name, kmip14.StateActive)
		var rerr *resultError
		if err == nil || !errors.As(err, &rerr) {
			return uids, -1, err
		}
		// The server answered, but refused the filter: filter here from now on.
		c.noStateFilter.Store(true)
		c.log.Info("kms: the server does not filter Locate on State; checking the state of each match instead",
			"addr", c.cfg.Addr, "err", err)
	}
	uids, err := c.locate(ctx, "locate", name, 0)
	if err != nil {
		return nil, -1, err
	}
	for _, uid := range uids {
		a, err := c.attributes(ctx, uid, "State")
		if errors.Is(err, ErrKeyNotFound) {
			continue // destroyed since the Locate
		}
		if err != nil {
			return nil, -1, err
		}
		if a.State == kmip14.StateActive.String() {
			active = append(active, uid)
		}
	}
	return active, len(uids) - len(active), nil
}

// notFound builds the ErrKeyNotFound error for name, saying whether objects of that name exist in other
// states; that costs one more Locate when others is unknown (-1), which the Cache's negative TTL bounds.
func (c *Client) notFound(ctx context.Context, name string, others int) error {
	if others < 0 {
		if uids, err := c.locate(ctx, "locate", name, 0); err == nil {
			others = len(uids)
		}
	}
	var cause error
	switch {
	case others > 0:
		cause = fmt.Errorf("no Active Symmetric Key carries this name; %d object(s) with it are revoked, deactivated or not yet activated", others)
	case others == 0:
		cause = errors.New("no Symmetric Key carries this name (0 found)")
	default:
		cause = errors.New("no Active Symmetric Key carries this name (0 found)")
	}
	return &opError{op: "locate", name: name, kind: ErrKeyNotFound, cause: cause}
}

// Locate returns the UIDs of the SymmetricKey objects called name, in any state, newest first where the
// server sorts them so (PyKMIP and kmipserver do). An empty name lists every SymmetricKey. It is for
// `kmipfs key` style tools; file access uses Secret.
func (c *Client) Locate(ctx context.Context, name string) ([]string, error) {
	return c.locate(ctx, "locate", name, 0)
}

// LocateActive is Locate restricted to Active keys, the ones Secret would consider.
func (c *Client) LocateActive(ctx context.Context, name string) ([]string, error) {
	uids, _, err := c.locateActive(ctx, name)
	return uids, err
}

// locate sends one Locate for SymmetricKeys, filtered on name and state when they are set. A server that
// answers "no match" with Item Not Found gets the same nil result as one that returns an empty list.
func (c *Client) locate(ctx context.Context, op, name string, state kmip14.State) ([]string, error) {
	req := wire.LocateRequestPayload{}
	if name != "" {
		req.Attribute = append(req.Attribute, wire.NameAttribute(name))
	}
	req.Attribute = append(req.Attribute, kmip.Attribute{
		AttributeName:  kmip14.TagObjectType.CanonicalName(),
		AttributeValue: kmip14.ObjectTypeSymmetricKey,
	})
	if state != 0 {
		req.Attribute = append(req.Attribute, kmip.Attribute{AttributeName: kmip14.TagState.CanonicalName(), AttributeValue: state})
	}
	payload, raw, err := c.call(ctx, op, name, kmip14.OperationLocate, req, true)
	defer wire.Zero(raw)
	if errors.Is(err, ErrKeyNotFound) {
		c.unfail() // not a failure: zero matches
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var resp wire.LocateResponsePayload
	if len(payload) > 0 {
		if err := wire.Unmarshal(payload, &resp); err != nil {
			return nil, c.fail(&opError{op: op, name: name, addr: c.cfg.Addr, kind: ErrUnavailable, cause: fmt.Errorf("decode locate response: %w", err)})
		}
	}
	return resp.UniqueIdentifier, nil
}

// CreateKey creates an AES-256 SymmetricKey called name with usage mask Encrypt|Decrypt, then activates
// it, and returns its UID. It does not check that the name is unused (KMIP allows duplicates; Secret will
// then report ErrAmbiguous), so callers that want unique names Locate first.
//
// Create is not idempotent, so it always goes out on a fresh connection and is retried only when that
// connection could not be opened, never after the request may have reached the server. If Activate
// fails, the key exists in state Pre-Active and its UID is returned with the error.
func (c *Client) CreateKey(ctx context.Context, name string) (string, error) {
	var tmpl kmip.TemplateAttribute
	tmpl.Attribute = append(tmpl.Attribute, wire.NameAttribute(name))
	tmpl.Append(kmip14.TagCryptographicAlgorithm, kmip14.CryptographicAlgorithmAES)
	tmpl.Append(kmip14.TagCryptographicLength, 256)
	tmpl.Append(kmip14.TagCryptographicUsageMask, kmip14.CryptographicUsageMaskEncrypt|kmip14.CryptographicUsageMaskDecrypt)
	payload, raw, err := c.call(ctx, "create", name, kmip14.OperationCreate,
		kmip.CreateRequestPayload{ObjectType: kmip14.ObjectTypeSymmetricKey, TemplateAttribute: tmpl}, false)
	defer wire.Zero(raw)
	if err != nil {
		return "", err
	}
	var resp kmip.CreateResponsePayload
	if err := wire.Unmarshal(payload, &resp); err != nil || resp.UniqueIdentifier == "" {
		if err == nil {
			err = errors.New("no unique identifier")
		}
		return "", c.fail(&opError{op: "create", name: name, addr: c.cfg.Addr, kind: ErrUnavailable, cause: fmt.Errorf("decode create response: %w", err)})
	}
	if err := c.Activate(ctx, resp.UniqueIdentifier); err != nil {
		return resp.UniqueIdentifier, err
	}
	return resp.UniqueIdentifier, nil
}

// Activate moves the object uid from Pre-Active to Active.
func (c *Client) Activate(ctx context.Context, uid string) error {
	_, raw, err := c.call(ctx, "activate", uid, kmip14.OperationActivate, wire.ActivateRequestPayload{UniqueIdentifier: uid}, true)
	wire.Zero(raw)
	return err
}

// Revoke revokes the object uid: it becomes Compromised if compromised is true, else Deactivated. Either
// way Secret no longer finds it, so files under it fail with ENOKEY once the Cache's TTL has passed.
func (c *Client) Revoke(ctx context.Context, uid string, compromised bool) error {
	code := kmip14.RevocationReasonCodeCessationOfOperation
	if compromised {
		code = kmip14.RevocationReasonCodeKeyCompromise
	}
	req := wire.RevokeRequestPayload{UniqueIdentifier: uid, RevocationReason: wire.RevocationReason{RevocationReasonCode: code}}
	if compromised {
		now := time.Now()
		req.CompromiseOccurrenceDate = &now
	}
	_, raw, err := c.call(ctx, "revoke", uid, kmip14.OperationRevoke, req, true)
	wire.Zero(raw)
	return err
}

// Destroy destroys the object uid. KMIP servers refuse to destroy an Active object; Revoke it first.
func (c *Client) Destroy(ctx context.Context, uid string) error {
	_, raw, err := c.call(ctx, "destroy", uid, kmip14.OperationDestroy, kmip.DestroyRequestPayload{UniqueIdentifier: uid}, true)
	wire.Zero(raw)
	return err
}

// KeyAttributes are the attributes of a managed object that `kmipfs key show` prints. Fields the server
// did not return are zero.
type KeyAttributes struct {
	UID              string
	Name             string
	ObjectType       string // "SymmetricKey"
	Algorithm        string // "AES"
	Length           int    // bits
	UsageMask        uint32 // KMIP Cryptographic Usage Mask bits
	State            string // "PreActive", "Active", "Deactivated", "Compromised", ...
	InitialDate      time.Time
	ActivationDate   time.Time
	DeactivationDate time.Time
	CompromiseDate   time.Time
	LastChangeDate   time.Time
}

// Attributes fetches the attributes of the object uid with Get Attributes.
func (c *Client) Attributes(ctx context.Context, uid string) (KeyAttributes, error) {
	return c.attributes(ctx, uid)
}

// attributes sends Get Attributes for the named attributes, or all of them when none are named.
func (c *Client) attributes(ctx context.Context, uid string, names ...string) (KeyAttributes, error) {
	payload, raw, err := c.call(ctx, "get attributes", uid, kmip14.OperationGetAttributes,
		wire.GetAttributesRequestPayload{UniqueIdentifier: uid, AttributeName: names}, true)
	defer wire.Zero(raw)
	if err != nil {
		return KeyAttributes{}, err
	}
	a, err := decodeAttributes(payload)
	if err != nil {
		return KeyAttributes{}, c.fail(&opError{op: "get attributes", name: uid, addr: c.cfg.Addr, kind: ErrUnavailable, cause: err})
	}
	if a.UID == "" {
		a.UID = uid
	}
	return a, nil
}

// fail counts a failed call and returns err.
func (c *Client) fail(err error) error {
	c.nErrors.Add(1)
	return err
}

// unfail takes back the count of a failure that the caller turns into a normal result.
func (c *Client) unfail() { c.nErrors.Add(^uint64(0)) }

// count bumps the counter of op; it runs once per request sent.
func (c *Client) count(op kmip14.Operation) {
	switch op {
	case kmip14.OperationLocate:
		c.nLocate.Add(1)
	case kmip14.OperationGet:
		c.nGet.Add(1)
	case kmip14.OperationCreate:
		c.nCreate.Add(1)
	case kmip14.OperationActivate:
		c.nActivate.Add(1)
	case kmip14.OperationDiscoverVersions:
		c.nDiscover.Add(1)
	default:
		c.nOther.Add(1)
	}
}

// encode builds a request message with one batch item, in protocol version v, with the credential if one
// is configured. The caller zeroes it after sending (it may hold the password).
func (c *Client) encode(v kmip.ProtocolVersion, op kmip14.Operation, payload any) ([]byte, error) {
	return wire.Marshal(kmip.RequestMessage{
		RequestHeader: kmip.RequestHeader{ProtocolVersion: v, Authentication: c.auth, BatchCount: 1},
		BatchItem:     []kmip.RequestBatchItem{{Operation: op, RequestPayload: payload}},
	})
}

// acquire takes a connection slot, waiting at most until ctx ends.
func (c *Client) acquire(parent, ctx context.Context, op, name string) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return c.fail(c.transportError(parent, op, name, fmt.Errorf("all %d connections stayed busy for kms.timeout (%s)", maxOpen, c.cfg.Timeout.Duration)))
	}
}

func (c *Client) release() { <-c.slots }

// retryable reports whether a transport failure may be retried: neither the caller's context nor the
// call's budget has ended, and the failure is not one a retry cannot fix.
func (c *Client) retryable(parent, ctx context.Context, err error) bool {
	return parent.Err() == nil && ctx.Err() == nil && !permanent(err)
}

// call sends one request with one batch item and returns the response payload (a slice of raw) and raw,
// the whole response message, which the caller zeroes after decoding. Transport failures are retried up
// to maxAttempts times in all, within one Timeout budget: at once after a dead pooled connection, with
// backoff after a failed dial or a failure on a fresh connection. A request that is not idempotent
// (Create) is retried only when its connection could not be opened. A failed batch item is not a
// transport failure and is returned at once, mapped to ErrKeyNotFound where the server says Item Not
// Found.
func (c *Client) call(ctx context.Context, opName, name string, op kmip14.Operation, payload any, idempotent bool) (ttlv.TTLV, []byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, c.fail(&opError{op: opName, name: name, cause: err})
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout.Duration)
	defer cancel()
	if err := c.acquire(parent, ctx, opName, name); err != nil {
		return nil, nil, err
	}
	defer c.release()

	wait := backoff
	for attempt := 0; ; attempt++ {
		last := attempt+1 >= maxAttempts
		fresh := attempt > 0 || !idempotent
		cn, err := c.getConn(ctx, fresh)
		if errors.Is(err, ErrClosed) {
			return nil, nil, c.fail(&opError{op: opName, name: name, kind: ErrClosed})
		}
		if err != nil {
			// Nothing of this request was sent, so a retry is safe even for Create.
			if !last && c.retryable(parent, ctx, err) && sleepCtx(ctx, wait) {
				c.log.Debug("kms: connect failed, retrying", "op", op.String(), "addr", c.cfg.Addr, "err", err)
				wait *= 2
				continue
			}
			return nil, nil, c.fail(c.transportError(parent, opName, name, err))
		}
		msg, err := c.encode(cn.version, op, payload)
		if err != nil {
			// Only our own request types get here, so this is a programming error, but not worth a panic.
			c.putConn(cn)
			return nil, nil, c.fail(&opError{op: opName, name: name, cause: fmt.Errorf("encode request: %w", err)})
		}
		c.count(op)
		start := time.Now()
		raw, err := cn.roundTrip(ctx, msg)
		wire.Zero(msg)
		if err != nil {
			_ = cn.tc.Close()
			c.dropIdle() // the others are probably just as dead (server restart)
			if !last && idempotent && c.retryable(parent, ctx, err) && (!fresh || sleepCtx(ctx, wait)) {
				if fresh {
					wait *= 2
				}
				c.log.Debug("kms: request failed, retrying on a fresh connection", "op", op.String(), "addr", c.cfg.Addr, "err", err)
				continue
			}
			return nil, nil, c.fail(c.transportError(parent, opName, name, err))
		}
		respPayload, err := decodeResponse(raw, op)
		c.log.Debug("kms: request", "op", op.String(), "name", name, "version", fmt.Sprintf("%d.%d",
			cn.version.ProtocolVersionMajor, cn.version.ProtocolVersionMinor), "took", time.Since(start), "err", err)
		var rerr *resultError
		switch {
		case err == nil:
			c.putConn(cn)
			return respPayload, raw, nil
		case errors.As(err, &rerr):
			c.putConn(cn) // the server answered; the connection is fine
			wire.Zero(raw)
			oe := &opError{op: opName, name: name, cause: err}
			if rerr.reason == kmip14.ResultReasonItemNotFound {
				oe.kind = ErrKeyNotFound
			}
			return nil, nil, c.fail(oe)
		default:
			// A response we cannot parse leaves the stream in an unknown state: drop the connection.
			_ = cn.tc.Close()
			wire.Zero(raw)
			return nil, nil, c.fail(c.transportError(parent, opName, name, err))
		}
	}
}

// transportError builds the error for a call that did not get an answer. If the caller's own context
// ended, that is the error (fs turns it into EINTR or ETIMEDOUT); otherwise it is ErrUnavailable with the
// cause and a hint for the common mistakes.
func (c *Client) transportError(parent context.Context, op, name string, cause error) error {
	if err := parent.Err(); err != nil {
		return &opError{op: op, name: name, cause: err}
	}
	if errors.Is(cause, context.DeadlineExceeded) {
		// Our own Timeout fired, not the caller's deadline: report a server that does not answer
		// (ErrUnavailable, EIO in fs), not a caller timeout (ETIMEDOUT).
		cause = &timeoutError{c.cfg.Timeout.Duration}
	}
	return &opError{op: op, name: name, addr: c.cfg.Addr, kind: ErrUnavailable, cause: &transportCause{cause}, hint: c.hint(cause)}
}

// transportCause holds the network or TLS error behind an ErrUnavailable. Its text is the cause's, and
// errors.Is still sees through it (ECONNREFUSED, os.ErrDeadlineExceeded), but errors.As does not: a
// syscall.Errno found there would be taken for the errno to give the application (ECONNREFUSED from a
// read), where the contract of ErrUnavailable is EIO.
type transportCause struct{ err error }

func (e *transportCause) Error() string { return e.err.Error() }

func (e *transportCause) Is(target error) bool { return errors.Is(e.err, target) }

// timeoutError is a call that used up Config.Timeout.
type timeoutError struct{ d time.Duration }

func (e *timeoutError) Error() string   { return fmt.Sprintf("no answer within kms.timeout (%s)", e.d) }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }
func (e *timeoutError) Is(target error) bool {
	return target == os.ErrDeadlineExceeded
}

// versionError is a server that offers no KMIP 1.x version.
type versionError struct{ offered []kmip.ProtocolVersion }

func (e *versionError) Error() string {
	vs := make([]string, len(e.offered))
	for i, v := range e.offered {
		vs[i] = fmt.Sprintf("%d.%d", v.ProtocolVersionMajor, v.ProtocolVersionMinor)
	}
	return fmt.Sprintf("the server offers no KMIP version from 1.0 to 1.4 (offered: %s)", strings.Join(vs, ", "))
}

// permanent reports connection failures that a retry cannot fix: certificate problems on either side, a
// server that does not speak TLS or KMIP 1.x, or one that refused the session (a failed Discover
// Versions).
func permanent(err error) bool {
	var verify *tls.CertificateVerificationError
	var opErr *net.OpError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var rerr *resultError
	var verr *versionError
	return errors.As(err, &verify) || errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &record) || errors.As(err, &rerr) || errors.As(err, &verr) ||
		(errors.As(err, &opErr) && opErr.Op == "remote error")
}

// hint names the likely misconfiguration behind a transport error, in terms of the config options.
func (c *Client) hint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var rerr *resultError
	var opErr *net.OpError
	var ne net.Error
	switch {
	case errors.As(err, &unknownCA):
		issuer := ""
		if unknownCA.Cert != nil {
			issuer = fmt.Sprintf(" (it is issued by %q)", unknownCA.Cert.Issuer.String())
		}
		return "the server certificate is not signed by the CA in kms.ca_path" + issuer
	case errors.As(err, &hostname):
		return fmt.Sprintf("the server certificate is not valid for %q; set kms.server_name to a name it carries", c.tlsConf.ServerName)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "the server certificate has expired or is not yet valid (check it, and the clocks)"
	case errors.As(err, &invalid):
		return "the server certificate is not acceptable: " + invalid.Error()
	case errors.As(err, &record):
		return "the server at kms.addr does not speak TLS; check the port"
	case errors.As(err, &rerr) && (rerr.reason == kmip14.ResultReasonAuthenticationNotSuccessful || rerr.reason == kmip14.ResultReasonPermissionDenied):
		return "the server does not accept this client: check kms.client_cert (PyKMIP needs extendedKeyUsage clientAuth) and kms.username / kms.password_file"
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		return c.remoteHint(opErr.Err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing is listening at kms.addr"
	case errors.As(err, &ne) && ne.Timeout():
		var te *timeoutError
		if errors.As(err, &te) {
			return "" // says it already
		}
		return fmt.Sprintf("no answer within kms.timeout (%s)", c.cfg.Timeout.Duration)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return "the server closed the connection; if this happens at start, it probably rejected kms.client_cert"
	}
	return ""
}

// remoteHint explains a TLS alert from the server. Most alerts mean it refused the client certificate;
// the client checks the certificate's dates itself, since servers rarely say "expired".
func (c *Client) remoteHint(alert error) string {
	msg := ""
	if alert != nil {
		msg = alert.Error()
	}
	if strings.Contains(msg, "handshake failure") || strings.Contains(msg, "protocol version") || strings.Contains(msg, "insufficient security") {
		return "no TLS version or cipher suite in common with the server"
	}
	if c.leaf != nil {
		now := time.Now()
		switch {
		case now.After(c.leaf.NotAfter):
			return fmt.Sprintf("kms.client_cert expired on %s, and the server refused it", c.leaf.NotAfter.UTC().Format(time.RFC3339))
		case now.Before(c.leaf.NotBefore):
			return fmt.Sprintf("kms.client_cert is not valid before %s, and the server refused it", c.leaf.NotBefore.UTC().Format(time.RFC3339))
		}
		return fmt.Sprintf("the server refused kms.client_cert (subject %q, issued by %q): it must be signed by a CA the server trusts and allow clientAuth",
			c.leaf.Subject.String(), c.leaf.Issuer.String())
	}
	return "the server refused the TLS session; check kms.client_cert"
}

// getConn returns a pooled connection, or opens one if fresh is set or the pool is empty. A new
// connection is dialed, handshaken and then agrees on a protocol version with Discover Versions; an error
// from any of those means nothing else was sent on it.
func (c *Client) getConn(ctx context.Context, fresh bool) (*conn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if !fresh {
		for len(c.idle) > 0 {
			cn := c.idle[len(c.idle)-1]
			c.idle = c.idle[:len(c.idle)-1]
			if time.Since(cn.lastUsed) < idleTimeout {
				c.mu.Unlock()
				return cn, nil
			}
			_ = cn.tc.Close()
		}
	}
	c.mu.Unlock()

	c.nDials.Add(1)
	d := tls.Dialer{NetDialer: &net.Dialer{KeepAlive: 30 * time.Second}, Config: c.tlsConf}
	nc, err := d.DialContext(ctx, "tcp", c.cfg.Addr)
	if err != nil {
		return nil, err
	}
	cn := &conn{tc: nc.(*tls.Conn)}
	if err := c.negotiate(ctx, cn); err != nil {
		_ = cn.tc.Close()
		return nil, err
	}
	return cn, nil
}

// negotiate sends Discover Versions with the versions this client speaks and picks the highest 1.x one
// the server answers with. A server that does not know the operation (KMIP 1.0 has none) gets 1.0.
func (c *Client) negotiate(ctx context.Context, cn *conn) error {
	hdr := kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: discoverMinor}
	msg, err := c.encode(hdr, kmip14.OperationDiscoverVersions, kmip.DiscoverVersionsRequestPayload{ProtocolVersion: clientVersions})
	if err != nil {
		return fmt.Errorf("encode discover versions: %w", err)
	}
	c.count(kmip14.OperationDiscoverVersions)
	raw, err := cn.roundTrip(ctx, msg)
	wire.Zero(msg)
	if err != nil {
		return err
	}
	defer wire.Zero(raw)
	payload, err := decodeResponse(raw, kmip14.OperationDiscoverVersions)
	var rerr *resultError
	switch {
	case errors.As(err, &rerr) && rerr.reason == kmip14.ResultReasonOperationNotSupported:
		cn.version = kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: 0}
		c.version.Store(1)
		return nil
	case err != nil:
		return fmt.Errorf("discover versions: %w", err)
	}
	var resp kmip.DiscoverVersionsResponsePayload
	if len(payload) > 0 {
		if err := wire.Unmarshal(payload, &resp); err != nil {
			return fmt.Errorf("discover versions: decode response: %w", err)
		}
	}
	best := -1
	for _, v := range resp.ProtocolVersion {
		if slices.Contains(clientVersions, v) && v.ProtocolVersionMinor > best {
			best = v.ProtocolVersionMinor
		}
	}
	if best < 0 {
		return &versionError{offered: resp.ProtocolVersion}
	}
	cn.version = kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: best}
	if old := c.version.Swap(int32(best) + 1); old != int32(best)+1 {
		c.log.Debug("kms: protocol version agreed", "addr", c.cfg.Addr, "version", fmt.Sprintf("1.%d", best),
			"tls", tls.VersionName(cn.tc.ConnectionState().Version))
	}
	return nil
}

// putConn returns a healthy connection to the pool, or closes it when the pool is full or closed.
func (c *Client) putConn(cn *conn) {
	cn.lastUsed = time.Now()
	c.mu.Lock()
	if !c.closed && len(c.idle) < maxIdle {
		c.idle = append(c.idle, cn)
		cn = nil
	}
	c.mu.Unlock()
	if cn != nil {
		_ = cn.tc.Close()
	}
}

// dropIdle closes every pooled connection.
func (c *Client) dropIdle() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, cn := range idle {
		_ = cn.tc.Close()
	}
}

// roundTrip writes msg and reads one response message, under the deadline of ctx; cancelling ctx
// interrupts the blocked read or write.
func (cn *conn) roundTrip(ctx context.Context, msg []byte) ([]byte, error) {
	if dl, ok := ctx.Deadline(); ok {
		if err := cn.tc.SetDeadline(dl); err != nil {
			return nil, err
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = cn.tc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := cn.tc.Write(msg); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	raw, err := wire.ReadMessage(cn.tc, wire.MaxMessageSize)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if !stop() {
		// ctx ended while we read; the deadline was moved into the past, so the next user would fail.
		wire.Zero(raw)
		return nil, ctx.Err()
	}
	if err := cn.tc.SetDeadline(time.Time{}); err != nil {
		wire.Zero(raw)
		return nil, err
	}
	return raw, nil
}

// sleepCtx waits d or until ctx ends, and reports whether the full wait happened.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
