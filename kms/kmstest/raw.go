package kmstest

import (
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/gemalto/kmip-go"
	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/kmipfs/kmipfs/kms/certs"
	"github.com/kmipfs/kmipfs/kms/internal/wire"
)

// RawConn is one KMIP connection for tests that need to send requests the kms client never sends
// (unsupported operations, batches, malformed messages) and to check that the connection survives them.
type RawConn struct {
	tc *tls.Conn
	// Minor is the KMIP 1.x minor version put in request headers; 2 unless changed.
	Minor int
}

// Dial opens a RawConn to the server with the generated client certificate; it is closed at test end.
func (e *Env) Dial(t testing.TB) *RawConn {
	t.Helper()
	conf, err := certs.ClientTLSConfig(e.Certs)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tls.Dial("tcp", e.Addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	return &RawConn{tc: tc, Minor: 2}
}

// Close closes the connection.
func (c *RawConn) Close() error { return c.tc.Close() }

// Item is one operation of a request batch.
type Item struct {
	Op      kmip14.Operation
	Payload any // nil for none
}

// Do sends one request holding items and returns the decoded response.
func (c *RawConn) Do(items ...Item) (*kmip.ResponseMessage, error) {
	req := kmip.RequestMessage{RequestHeader: kmip.RequestHeader{
		ProtocolVersion: kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: c.Minor},
		BatchCount:      len(items),
	}}
	for _, it := range items {
		req.BatchItem = append(req.BatchItem, kmip.RequestBatchItem{Operation: it.Op, RequestPayload: it.Payload})
	}
	msg, err := wire.Marshal(req)
	if err != nil {
		return nil, err
	}
	raw, err := c.RoundTrip(msg)
	if err != nil {
		return nil, err
	}
	var resp kmip.ResponseMessage
	if err := wire.Unmarshal(raw, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// One sends a single operation and returns its batch item, or an error if the response does not hold
// exactly one item.
func (c *RawConn) One(op kmip14.Operation, payload any) (kmip.ResponseBatchItem, error) {
	resp, err := c.Do(Item{Op: op, Payload: payload})
	if err != nil {
		return kmip.ResponseBatchItem{}, err
	}
	if len(resp.BatchItem) != 1 {
		return kmip.ResponseBatchItem{}, fmt.Errorf("%d batch items in response", len(resp.BatchItem))
	}
	return resp.BatchItem[0], nil
}

// RoundTrip writes msg as is and reads one response message, within 5 seconds.
func (c *RawConn) RoundTrip(msg []byte) ([]byte, error) {
	if err := c.tc.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := c.tc.Write(msg); err != nil {
		return nil, err
	}
	return wire.ReadMessage(c.tc, wire.MaxMessageSize)
}

// Decode unmarshals a response payload (a ttlv.TTLV held in an interface) into v.
func Decode(payload any, v any) error {
	t, ok := payload.(ttlv.TTLV)
	if !ok {
		return fmt.Errorf("payload is a %T, not a structure", payload)
	}
	return wire.Unmarshal(t, v)
}
