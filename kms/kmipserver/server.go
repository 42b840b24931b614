package kmipserver

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/gemalto/kmip-go"
	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/kmipfs/kmipfs/kms/internal/wire"
)

const (
	// handshakeTimeout bounds the TLS handshake of a new connection.
	handshakeTimeout = 10 * time.Second
	// writeTimeout bounds writing one response, so a client that stops reading cannot pin a goroutine.
	writeTimeout = 30 * time.Second
	// maxRequest is the largest request accepted; larger ones close the connection before allocation.
	maxRequest = wire.MaxMessageSize
)

// ErrServerClosed is returned by Serve after Close, and by CreateKey on a closed server. It also matches
// net.ErrClosed, so callers that treat a closed listener as a normal stop need no special case.
var ErrServerClosed = fmt.Errorf("kmipserver: server closed (%w)", net.ErrClosed)

// Options configure a Server.
type Options struct {
	// Logger receives connection and key lifecycle events (names, UIDs, addresses; never key material).
	// Nil means silent.
	Logger *slog.Logger
}

// Server is the embedded KMIP server: kmip-go's kmip.Server, StandardProtocolHandler and OperationMux with
// handlers for the 1.x operations kmipfs and PyKMIP-style clients use, over a JSON key store. It is for
// `kmipfs demo`, `kmipfs kms serve` and tests, not a production KMS: any client whose certificate the
// listener accepts may do anything, and keys sit in one file protected only by its mode (0600).
type Server struct {
	log   *slog.Logger
	path  string
	lock  *os.File // flock held on path+".lock" while the server is open
	srv   *kmip.Server
	mux   *kmip.OperationMux
	mutMu sync.Mutex // serializes mutations, including the store write; taken before mu

	mu     sync.Mutex
	objs   map[string]*object    // protected by mu; values are never modified in place
	seq    uint64                // protected by mu; last sequence number handed out
	conns  map[*srvConn]struct{} // protected by mu
	lns    map[net.Listener]bool // protected by mu
	closed bool                  // protected by mu

	connWG sync.WaitGroup // one per accepted connection, done when its goroutine closes it
}

// KeyInfo describes a stored key for listings. It carries no key material.
type KeyInfo struct {
	UID       string
	Name      string
	State     string // KMIP state: "PreActive", "Active", "Deactivated", "Compromised"
	Algorithm string // "AES"
	Length    int    // bits
	Created   time.Time
}

// New opens the key store at storePath, creating an empty one (mode 0600) if it does not exist, and takes
// an exclusive lock on storePath+".lock" so that two servers never write the same store. A store that
// does not parse is an error; it is never overwritten.
func New(storePath string, opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(storePath), 0o700); err != nil {
		return nil, fmt.Errorf("kmipserver: create store directory: %w", err)
	}
	lock, err := os.OpenFile(storePath+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("kmipserver: open lock file: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("kmipserver: store %q is in use by another server: %w", storePath, err)
	}
	s := &Server{
		log:   logger,
		path:  storePath,
		lock:  lock,
		conns: make(map[*srvConn]struct{}),
		lns:   make(map[net.Listener]bool),
	}
	data, err := os.ReadFile(storePath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		s.objs = map[string]*object{}
		if err := s.persist(s.objs); err != nil {
			_ = lock.Close()
			return nil, err
		}
	case err != nil:
		_ = lock.Close()
		return nil, fmt.Errorf("kmipserver: read store: %w", err)
	default:
		s.objs, s.seq, err = decodeStore(data)
		clear(data)
		if err != nil {
			_ = lock.Close()
			return nil, fmt.Errorf("kmipserver: load store %q: %w", storePath, err)
		}
	}
	s.mux = &kmip.OperationMux{ErrorHandler: kmip.ErrorHandlerFunc(errorItem)}
	s.register()
	s.srv = &kmip.Server{Handler: &protocolHandler{
		std: &kmip.StandardProtocolHandler{
			ProtocolVersion: kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: 4},
			MessageHandler:  &messageHandler{mux: s.mux},
		},
		log: logger,
	}}
	logger.Info("kmipserver: key store opened", "path", storePath, "keys", len(s.objs))
	return s, nil
}

// Serve accepts KMIP connections on ln until Close, and returns ErrServerClosed then. ln must already be a
// TLS listener that requires and verifies client certificates (see certs.ServerTLSConfig); Serve does the
// handshake under a deadline and closes connections that fail it. Serve may be called for several
// listeners.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrServerClosed
	}
	s.lns[ln] = true
	s.mu.Unlock()
	err := s.srv.Serve(&trackListener{Listener: ln, s: s})
	s.mu.Lock()
	delete(s.lns, ln)
	closed := s.closed
	s.mu.Unlock()
	if closed || errors.Is(err, kmip.ErrServerClosed) {
		return ErrServerClosed
	}
	return fmt.Errorf("kmipserver: serve: %w", err)
}

// closeWait bounds how long Close waits for connection goroutines to finish.
const closeWait = 5 * time.Second

// Close stops every listener, closes open connections, waits (briefly) for their goroutines to finish, and
// releases the store. Keys are already on disk: every change is written before it is answered.
func (s *Server) Close() error {
	s.mutMu.Lock() // wait for a store write in progress
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.mutMu.Unlock()
		return nil
	}
	s.closed = true
	conns := slices.Collect(maps.Keys(s.conns))
	lns := slices.Collect(maps.Keys(s.lns))
	s.mu.Unlock()
	s.mutMu.Unlock()

	err := s.srv.Close()
	for _, ln := range lns {
		_ = ln.Close()
	}
	for _, c := range conns {
		_ = c.Conn.Close()
	}
	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeWait):
		s.log.Warn("kmipserver: connections still busy after close", "wait", closeWait)
	}
	if cerr := s.lock.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kmipserver: close: %w", err)
	}
	return nil
}

// CreateKey creates and activates an AES-256 key called name with usage mask Encrypt|Decrypt, without
// going through the network, and returns its UID. `kmipfs demo` uses it to set up its first key.
func (s *Server) CreateKey(name string) (string, error) {
	spec := keySpec{name: name, algorithm: kmip14.CryptographicAlgorithmAES, length: 256,
		usageMask: uint32(kmip14.CryptographicUsageMaskEncrypt | kmip14.CryptographicUsageMaskDecrypt)}
	material := make([]byte, 32)
	if _, err := rand.Read(material); err != nil {
		return "", fmt.Errorf("kmipserver: create key %q: %w", name, err)
	}
	o, err := s.add(spec, material, true)
	if err != nil {
		return "", fmt.Errorf("kmipserver: create key %q: %w", name, err)
	}
	s.log.Info("kmipserver: key created", "name", name, "uid", o.uid)
	return o.uid, nil
}

// Keys lists the stored keys in creation order.
func (s *Server) Keys() []KeyInfo {
	s.mu.Lock()
	objs := slices.Collect(maps.Values(s.objs))
	s.mu.Unlock()
	slices.SortFunc(objs, func(a, b *object) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]KeyInfo, 0, len(objs))
	for _, o := range objs {
		out = append(out, KeyInfo{UID: o.uid, Name: o.name, State: o.state.String(),
			Algorithm: o.algorithm.String(), Length: o.length, Created: o.initial})
	}
	return out
}

// get returns the object uid, or nil.
func (s *Server) get(uid string) *object {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objs[uid]
}

// snapshot returns the current objects; the map must not be modified.
func (s *Server) snapshot() map[string]*object {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objs
}

// keySpec is what a client asked for in Create or Register.
type keySpec struct {
	name      string
	algorithm kmip14.CryptographicAlgorithm
	length    int
	usageMask uint32
}

// add stores a new key, active at once if activate is set.
func (s *Server) add(spec keySpec, material []byte, activate bool) (*object, error) {
	var o *object
	err := s.mutate(func(objs map[string]*object, seq uint64) error {
		uid, err := newUID()
		if err != nil {
			return err
		}
		now := time.Now().UTC().Truncate(time.Second)
		o = &object{uid: uid, name: spec.name, algorithm: spec.algorithm, length: spec.length,
			usageMask: spec.usageMask, state: kmip14.StatePreActive, seq: seq, initial: now, lastChange: now,
			material: material}
		if activate {
			o.state, o.activation = kmip14.StateActive, now
		}
		objs[uid] = o
		return nil
	})
	return o, err
}

// mutate applies fn to a copy of the object map, writes the copy to the store, and publishes it only if
// the write succeeded, so memory never runs ahead of disk. fn gets the next sequence number. Mutations are
// serialized by mutMu; the store write happens under it (a demo server can afford one writer), while
// readers only take mu briefly to grab the current map.
func (s *Server) mutate(fn func(objs map[string]*object, nextSeq uint64) error) error {
	s.mutMu.Lock()
	defer s.mutMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	next := maps.Clone(s.objs)
	seq := s.seq + 1
	s.mu.Unlock()
	if err := fn(next, seq); err != nil {
		return err
	}
	if err := s.persist(next); err != nil {
		return err
	}
	s.mu.Lock()
	s.objs = next
	s.seq = seq
	s.mu.Unlock()
	return nil
}

// persist writes objs to the store file atomically.
func (s *Server) persist(objs map[string]*object) error {
	data, err := encodeStore(objs)
	if err != nil {
		return fmt.Errorf("kmipserver: encode store: %w", err)
	}
	defer clear(data)
	if err := writeFileAtomic(s.path, data, 0o600); err != nil {
		return fmt.Errorf("kmipserver: write store %q: %w", s.path, err)
	}
	return nil
}

// newUID returns a random UUID (version 4) string. UIDs are not decimal, so a client that did import
// kmip20 (which re-types numeric UIDs as enumerations) still works.
func newUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

var (
	_ net.Listener         = (*trackListener)(nil)
	_ net.Conn             = (*srvConn)(nil)
	_ kmip.ProtocolHandler = (*protocolHandler)(nil)
	_ kmip.MessageHandler  = (*messageHandler)(nil)
)

// trackListener registers every accepted connection with the server, so Close can close it; kmip.Server
// only closes listeners.
type trackListener struct {
	net.Listener
	s *Server
}

func (l *trackListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &srvConn{Conn: nc, s: l.s, remote: nc.RemoteAddr().String()}
	l.s.mu.Lock()
	closed := l.s.closed
	if !closed {
		l.s.conns[c] = struct{}{}
		l.s.connWG.Add(1)
	}
	l.s.mu.Unlock()
	if closed {
		_ = nc.Close()
		return nil, net.ErrClosed
	}
	return c, nil
}

// srvConn wraps an accepted connection. It does the TLS handshake under a deadline, frames requests with
// wire.ReadMessage (so a client cannot make the server allocate more than maxRequest, which kmip-go's own
// decoder would), bounds each write, and reports any read failure as io.EOF: kmip-go's connection loop
// panics on every other read error and logs a stack trace, where a closed or broken connection is
// ordinary.
type srvConn struct {
	net.Conn
	s      *Server
	remote string
	shook  bool   // only touched by the connection's goroutine
	buf    []byte // unread rest of the current request
	once   sync.Once
}

func (c *srvConn) Read(p []byte) (int, error) {
	if !c.shook {
		c.shook = true
		if err := c.handshake(); err != nil {
			c.s.log.Warn("kmipserver: TLS handshake failed", "remote", c.remote, "err", err)
			return 0, io.EOF
		}
	}
	if len(c.buf) == 0 {
		msg, err := wire.ReadMessage(c.Conn, maxRequest)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.s.log.Warn("kmipserver: dropping connection", "remote", c.remote, "err", err)
			}
			return 0, io.EOF
		}
		c.buf = msg
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *srvConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.Conn.Write(p)
}

func (c *srvConn) handshake() error {
	tc, ok := c.Conn.(*tls.Conn)
	if !ok {
		return nil
	}
	if err := tc.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return err
	}
	if err := tc.Handshake(); err != nil {
		return err
	}
	if err := tc.SetDeadline(time.Time{}); err != nil {
		return err
	}
	st := tc.ConnectionState()
	cn := ""
	if len(st.PeerCertificates) > 0 {
		cn = st.PeerCertificates[0].Subject.CommonName
	}
	c.s.log.Debug("kmipserver: client connected", "remote", c.remote, "cn", cn, "tls", tls.VersionName(st.Version))
	return nil
}

func (c *srvConn) Close() error {
	var err error
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		err = c.Conn.Close()
		c.s.connWG.Done()
	})
	return err
}

// protocolHandler wraps StandardProtocolHandler to always answer. kmip-go v0.1.0 writes nothing when a
// request does not parse or has the wrong major version (it builds an error response but returns before
// encoding it), and a panic in it would drop the connection; here both become a failed batch item with
// Result Reason Invalid Message (or General Failure) and a Result Message.
type protocolHandler struct {
	std *kmip.StandardProtocolHandler
	log *slog.Logger
}

func (h *protocolHandler) ServeKMIP(ctx context.Context, req *kmip.Request, w kmip.ResponseWriter) {
	var buf bytes.Buffer
	panicked := func() (panicked bool) {
		defer func() {
			if r := recover(); r != nil {
				h.log.Error("kmipserver: panic while handling a request", "panic", fmt.Sprint(r))
				panicked = true
			}
		}()
		h.std.ServeKMIP(ctx, req, &buf)
		return false
	}()
	out := buf.Bytes()
	if panicked || len(out) == 0 {
		out = fallbackResponse(req.TTLV, panicked)
	}
	if _, err := w.Write(out); err != nil {
		h.log.Debug("kmipserver: write response", "remote", req.RemoteAddr, "err", err)
	}
}

// fallbackResponse builds the answer to a request that StandardProtocolHandler could not answer.
func fallbackResponse(raw []byte, panicked bool) []byte {
	version := kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: 4}
	reason, msg := kmip14.ResultReasonInvalidMessage, "invalid request message"
	var hdr struct{ RequestHeader kmip.RequestHeader }
	err := wire.Unmarshal(raw, &hdr)
	isRequest := len(raw) >= 3 && ttlv.TTLV(raw).Tag() == kmip14.TagRequestMessage
	switch {
	case panicked:
		reason, msg = kmip14.ResultReasonGeneralFailure, "internal server error"
	case !isRequest:
		msg = "invalid request message: not a Request Message"
	case err != nil:
		msg = "invalid request message: " + err.Error()
	case hdr.RequestHeader.ProtocolVersion.ProtocolVersionMajor != 1:
		msg = fmt.Sprintf("protocol version %d.%d is not supported; this server speaks KMIP 1.0 to 1.4",
			hdr.RequestHeader.ProtocolVersion.ProtocolVersionMajor, hdr.RequestHeader.ProtocolVersion.ProtocolVersionMinor)
	}
	if isRequest && err == nil && hdr.RequestHeader.ProtocolVersion.ProtocolVersionMajor == 1 && hdr.RequestHeader.ProtocolVersion.ProtocolVersionMinor <= 4 {
		version = hdr.RequestHeader.ProtocolVersion
	}
	out, err := wire.Marshal(kmip.ResponseMessage{
		ResponseHeader: kmip.ResponseHeader{ProtocolVersion: version, TimeStamp: time.Now(), BatchCount: 1},
		BatchItem: []kmip.ResponseBatchItem{{
			ResultStatus: kmip14.ResultStatusOperationFailed, ResultReason: reason, ResultMessage: msg,
		}},
	})
	if err != nil {
		return nil // cannot happen with these fixed types; the client then sees the connection close
	}
	return out
}

// messageHandler runs the OperationMux and then fixes up the response for older clients:
//
//   - it clears Server Correlation Value, a 1.4 header field that PyKMIP 0.10 cannot parse (it fails on
//     every response with "expected 0x42000d, received 0x420106");
//   - it answers in the client's protocol version when that is 1.0 to 1.4;
//   - it answers a request without batch items with one failed item, so there is always something to read;
//   - it gives every failed item a Result Message (kmip-go leaves it empty for an unsupported operation,
//     and PyKMIP's client then crashes on None).
//
// StandardProtocolHandler sets the header before calling it and encodes the response after it, so changes
// here reach the wire.
type messageHandler struct {
	mux *kmip.OperationMux
}

func (h *messageHandler) HandleMessage(ctx context.Context, req *kmip.Request, resp *kmip.Response) {
	h.mux.HandleMessage(ctx, req, resp)
	if len(req.Message.BatchItem) == 0 {
		resp.BatchItem = append(resp.BatchItem, kmip.ResponseBatchItem{ResultStatus: kmip14.ResultStatusOperationFailed,
			ResultReason: kmip14.ResultReasonInvalidMessage, ResultMessage: "request message has no batch items"})
	}
	resp.ResponseHeader.ServerCorrelationValue = ""
	if v := req.Message.RequestHeader.ProtocolVersion; v.ProtocolVersionMajor == 1 && v.ProtocolVersionMinor <= 4 {
		resp.ResponseHeader.ProtocolVersion = v
	}
	for i := range resp.BatchItem {
		it := &resp.BatchItem[i]
		if it.ResultStatus == kmip14.ResultStatusSuccess || it.ResultMessage != "" {
			continue
		}
		if it.ResultReason == kmip14.ResultReasonOperationNotSupported {
			it.ResultMessage = fmt.Sprintf("operation %s is not supported by this server", it.Operation)
		} else {
			it.ResultMessage = it.ResultReason.String()
		}
		if it.ResultReason == 0 {
			it.ResultReason = kmip14.ResultReasonGeneralFailure
		}
	}
}
