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
	// retryDelay is the pause before the one retry after a failed dial, so a server that is restarting
	// gets a moment; a stale pooled connection is retried at once.
	retryDelay = 50 * time.Millisecond
	// protocolMinor is the KMIP 1.x minor version the client speaks. 1.2 is what PyKMIP parses by default
	// and what most servers accept; nothing kmipfs needs is newer.
	protocolMinor = 2
)

// Client is a KMIP 1.x client over mutual TLS (TLS 1.2 or newer, server certificate verified against the
// configured CA). It keeps a small pool of connections (at most 4, idle or in use), bounds every call by
// Config.Timeout (dial, request and the retry share that budget, so a call never takes longer), and retries
// a request once on a fresh connection after a transport error. Safe for concurrent use.
type Client struct {
	cfg     Config
	tlsConf *tls.Config
	log     *slog.Logger
	slots   chan struct{} // one token per connection in use

	mu     sync.Mutex
	idle   []*conn // protected by mu; most recently used last
	closed bool    // protected by mu

	nLocate, nGet, nCreate, nActivate, nOther, nErrors, nDials atomic.Uint64
}

// ClientStats counts requests the client sent (retries included) and calls that failed.
type ClientStats struct {
	Locate, Get, Create, Activate uint64
	Other                         uint64 // DiscoverVersions, GetAttributes, Revoke, Destroy
	Errors                        uint64 // calls that returned an error
	Dials                         uint64 // TLS connections opened
}

// conn is one pooled TLS connection. Only one request is on a conn at a time.
type conn struct {
	tc       *tls.Conn
	lastUsed time.Time
}

// NewClient checks cfg (after SetDefaults), loads the CA and the client key pair, and returns a client. It
// does not dial: the first call does, so a mount can start while the key server is still coming up.
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
	return &Client{
		cfg: cfg,
		tlsConf: &tls.Config{
			RootCAs:      pool,
			Certificates: []tls.Certificate{pair},
			ServerName:   serverName,
			MinVersion:   tls.VersionTLS12,
		},
		log:   logger,
		slots: make(chan struct{}, maxOpen),
	}, nil
}

// Stats returns the request counters. Tests use them to check that the cache saves round trips.
func (c *Client) Stats() ClientStats {
	return ClientStats{
		Locate:   c.nLocate.Load(),
		Get:      c.nGet.Load(),
		Create:   c.nCreate.Load(),
		Activate: c.nActivate.Load(),
		Other:    c.nOther.Load(),
		Errors:   c.nErrors.Load(),
		Dials:    c.nDials.Load(),
	}
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

// Ping sends DiscoverVersions. It is the start-up check: when TLS fails (unknown CA, a client certificate
// the server rejects, nothing listening) the error wraps ErrUnavailable and carries the cause and a hint,
// so one log line says what to fix.
func (c *Client) Ping(ctx context.Context) error {
	payload, raw, err := c.call(ctx, "ping", "", kmip14.OperationDiscoverVersions, kmip.DiscoverVersionsRequestPayload{}, true)
	defer wire.Zero(raw)
	if err != nil {
		return err
	}
	var resp kmip.DiscoverVersionsResponsePayload
	if len(payload) > 0 {
		if err := wire.Unmarshal(payload, &resp); err != nil {
			return c.fail(&opError{op: "ping", addr: c.cfg.Addr, kind: ErrUnavailable, cause: fmt.Errorf("decode response: %w", err)})
		}
	}
	for _, v := range resp.ProtocolVersion {
		if v.ProtocolVersionMajor == 1 {
			return nil
		}
	}
	if len(resp.ProtocolVersion) == 0 {
		return nil // a server may answer with an empty list; it answered, which is what Ping checks
	}
	return c.fail(&opError{op: "ping", addr: c.cfg.Addr, kind: ErrUnavailable,
		cause: fmt.Errorf("server offers no KMIP 1.x version (%v)", resp.ProtocolVersion)})
}

// Secret locates the one SymmetricKey object called name and returns its raw key bytes, which must be a
// 32-byte AES secret. No match is ErrKeyNotFound; several are ErrAmbiguous (with the count); anything but
// a plain 32-byte AES key is ErrBadKey. The caller owns the returned slice and should zero it after use.
//
// Locate does not filter on State: a Deactivated or Compromised key can still decrypt what it protected,
// and KMIP allows Get on it. Which keys may encrypt new data is the caller's policy.
func (c *Client) Secret(ctx context.Context, name string) ([]byte, error) {
	if name == "" {
		// Locate with an empty Name would match unnamed objects on some servers.
		return nil, c.fail(&opError{op: "secret", kind: ErrKeyNotFound, cause: errors.New("empty key name")})
	}
	uids, err := c.locate(ctx, "secret", name)
	if err != nil {
		return nil, err
	}
	switch len(uids) {
	case 0:
		return nil, c.fail(&opError{op: "locate", name: name, kind: ErrKeyNotFound})
	case 1:
	default:
		return nil, c.fail(&opError{op: "locate", name: name, kind: ErrAmbiguous,
			cause: fmt.Errorf("%d objects are named %q", len(uids), name)})
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

// Locate returns the UIDs of the SymmetricKey objects called name, newest first where the server sorts
// them so (PyKMIP and kmipserver do). An empty name lists every SymmetricKey. It is for `kmipfs key list`
// style tools; file access uses Secret.
func (c *Client) Locate(ctx context.Context, name string) ([]string, error) {
	return c.locate(ctx, "locate", name)
}

func (c *Client) locate(ctx context.Context, op, name string) ([]string, error) {
	req := wire.LocateRequestPayload{Attribute: []kmip.Attribute{{
		AttributeName:  kmip14.TagObjectType.CanonicalName(),
		AttributeValue: kmip14.ObjectTypeSymmetricKey,
	}}}
	if name != "" {
		req.Attribute = append([]kmip.Attribute{wire.NameAttribute(name)}, req.Attribute...)
	}
	payload, raw, err := c.call(ctx, "locate", name, kmip14.OperationLocate, req, true)
	defer wire.Zero(raw)
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
// dial fails, never after the request may have reached the server. If Activate fails, the key exists in
// state Pre-Active and its UID is returned with the error.
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

// Revoke revokes the object uid: it becomes Compromised if compromised is true, else Deactivated. A revoked
// key can still be fetched with Secret (to decrypt old data) but should not protect new data.
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
	UID            string
	Name           string
	ObjectType     string // "SymmetricKey"
	Algorithm      string // "AES"
	Length         int    // bits
	UsageMask      uint32 // KMIP Cryptographic Usage Mask bits
	State          string // "PreActive", "Active", "Deactivated", "Compromised", ...
	InitialDate    time.Time
	ActivationDate time.Time
}

// Attributes fetches the attributes of the object uid with GetAttributes.
func (c *Client) Attributes(ctx context.Context, uid string) (KeyAttributes, error) {
	payload, raw, err := c.call(ctx, "get attributes", uid, kmip14.OperationGetAttributes, wire.GetAttributesRequestPayload{UniqueIdentifier: uid}, true)
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
	default:
		c.nOther.Add(1)
	}
}

// call sends one request with one batch item and returns the response payload (a slice of raw) and raw,
// the whole response message, which the caller zeroes after decoding. Transport failures are retried
// once on a fresh connection, within one Timeout budget; a failed batch item is not a transport failure
// and is returned at once, mapped to ErrKeyNotFound where the server says Item Not Found.
func (c *Client) call(ctx context.Context, opName, name string, op kmip14.Operation, payload any, idempotent bool) (ttlv.TTLV, []byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, c.fail(&opError{op: opName, name: name, cause: err})
	}
	msg, err := wire.Marshal(kmip.RequestMessage{
		RequestHeader: kmip.RequestHeader{
			ProtocolVersion: kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: protocolMinor},
			BatchCount:      1,
		},
		BatchItem: []kmip.RequestBatchItem{{Operation: op, RequestPayload: payload}},
	})
	if err != nil {
		// Only our own request types get here, so this is a programming error, but not worth a panic.
		return nil, nil, c.fail(&opError{op: opName, name: name, cause: fmt.Errorf("encode request: %w", err)})
	}

	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout.Duration)
	defer cancel()
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, c.fail(c.transportError(parent, opName, name, fmt.Errorf("all %d connections stayed busy for kms.timeout (%s)", maxOpen, c.cfg.Timeout.Duration)))
	}
	defer func() { <-c.slots }()

	for attempt := 0; ; attempt++ {
		fresh := attempt > 0 || !idempotent
		cn, err := c.getConn(ctx, fresh)
		if errors.Is(err, ErrClosed) {
			return nil, nil, c.fail(&opError{op: opName, name: name, kind: ErrClosed})
		}
		if err != nil {
			// Nothing was sent, so a retry is safe even for Create.
			if attempt == 0 && parent.Err() == nil && !permanent(err) && sleepCtx(ctx, retryDelay) {
				c.log.Debug("kms: dial failed, retrying", "addr", c.cfg.Addr, "err", err)
				continue
			}
			return nil, nil, c.fail(c.transportError(parent, opName, name, err))
		}
		c.count(op)
		raw, err := cn.roundTrip(ctx, msg)
		if err != nil {
			_ = cn.tc.Close()
			c.dropIdle() // the others are probably just as dead (server restart)
			if attempt == 0 && parent.Err() == nil && ctx.Err() == nil && idempotent && !permanent(err) {
				c.log.Debug("kms: request failed, retrying on a fresh connection", "op", op.String(), "addr", c.cfg.Addr, "err", err)
				continue
			}
			return nil, nil, c.fail(c.transportError(parent, opName, name, err))
		}
		payload, err := decodeResponse(raw, op)
		var rerr *resultError
		switch {
		case err == nil:
			c.putConn(cn)
			return payload, raw, nil
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
// cause and a hint for the common TLS mistakes.
func (c *Client) transportError(parent context.Context, op, name string, cause error) error {
	if err := parent.Err(); err != nil {
		return &opError{op: op, name: name, cause: err}
	}
	if errors.Is(cause, context.DeadlineExceeded) {
		// Our own Timeout fired, not the caller's deadline: report a server that does not answer
		// (ErrUnavailable, EIO in fs), not a caller timeout (ETIMEDOUT).
		cause = &timeoutError{c.cfg.Timeout.Duration}
	}
	return &opError{op: op, name: name, addr: c.cfg.Addr, kind: ErrUnavailable, cause: cause, hint: c.hint(cause)}
}

// timeoutError is a call that used up Config.Timeout.
type timeoutError struct{ d time.Duration }

func (e *timeoutError) Error() string   { return fmt.Sprintf("no answer within kms.timeout (%s)", e.d) }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }
func (e *timeoutError) Is(target error) bool {
	return target == os.ErrDeadlineExceeded
}

// permanent reports transport errors that a retry cannot fix: certificate problems on either side.
func permanent(err error) bool {
	var verify *tls.CertificateVerificationError
	var opErr *net.OpError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	return errors.As(err, &verify) || errors.As(err, &unknownCA) || errors.As(err, &hostname) ||
		(errors.As(err, &opErr) && opErr.Op == "remote error")
}

// hint names the likely misconfiguration behind a transport error, in terms of the config options.
func (c *Client) hint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var opErr *net.OpError
	var ne net.Error
	switch {
	case errors.As(err, &unknownCA):
		return "the server certificate is not signed by the CA in kms.ca_path"
	case errors.As(err, &hostname):
		return fmt.Sprintf("the server certificate is not valid for %q; set kms.server_name", c.tlsConf.ServerName)
	case errors.As(err, &invalid):
		return "the server certificate is invalid or expired"
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		return "the server rejected the TLS session; check that kms.client_cert is signed by a CA the server trusts and has clientAuth usage"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing is listening at kms.addr"
	case errors.As(err, &ne) && ne.Timeout():
		var te *timeoutError
		if errors.As(err, &te) {
			return "" // says it already
		}
		return fmt.Sprintf("no answer within kms.timeout (%s)", c.cfg.Timeout.Duration)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return "the server closed the connection"
	}
	return ""
}

// getConn returns a pooled connection, or dials one if fresh is set or the pool is empty.
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
	return &conn{tc: nc.(*tls.Conn)}, nil
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
