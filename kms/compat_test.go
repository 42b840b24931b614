package kms_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gemalto/kmip-go"
	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/kmipfs/kmipfs/kms"
	"github.com/kmipfs/kmipfs/kms/certs"
	"github.com/kmipfs/kmipfs/kms/internal/wire"
	"github.com/kmipfs/kmipfs/kms/kmstest"
)

// compatServer is a deliberately limited KMIP server built from kmip-go's pieces, standing in for
// servers that kmipserver and PyKMIP are not: it knows no Discover Versions (like a KMIP 1.0 server)
// and refuses to filter Locate on State. It records the protocol version and credential of every
// request. It holds two keys named "k": uid "1" Active and uid "2" Deactivated.
type compatServer struct {
	addr string

	mu       sync.Mutex
	versions []kmip.ProtocolVersion // protected by mu
	users    []string               // protected by mu; "user:password" of each request
	ops      []kmip14.Operation     // protected by mu
}

var compatKey = bytes.Repeat([]byte{0x5a}, 32)

func startCompatServer(t *testing.T, pki certs.Files) *compatServer {
	t.Helper()
	s := &compatServer{}
	mux := &kmip.OperationMux{}
	record := func(req *kmip.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.versions = append(s.versions, req.Message.RequestHeader.ProtocolVersion)
		s.ops = append(s.ops, req.CurrentItem.Operation)
		user := ""
		if a := req.Message.RequestHeader.Authentication; a != nil && len(a.Credential) == 1 {
			var up kmip.UsernameAndPasswordCredentialValue
			if v, ok := a.Credential[0].CredentialValue.(ttlv.TTLV); ok && wire.Unmarshal(v, &up) == nil {
				user = up.Username + ":" + up.Password
			}
		}
		s.users = append(s.users, user)
	}
	states := map[string]kmip14.State{"1": kmip14.StateActive, "2": kmip14.StateDeactivated}
	mux.Handle(kmip14.OperationLocate, kmip.ItemHandlerFunc(func(_ context.Context, req *kmip.Request) (*kmip.ResponseBatchItem, error) {
		record(req)
		var p wire.LocateRequestPayload
		if err := req.DecodePayload(&p); err != nil {
			return nil, kmip.WithResultReason(err, kmip14.ResultReasonInvalidMessage)
		}
		name := ""
		for _, a := range p.Attribute {
			switch a.AttributeName {
			case "State":
				return nil, kmip.WithResultReason(errors.New("locate by State is not supported"), kmip14.ResultReasonInvalidField)
			case "Name":
				n, _ := wire.Name(a.AttributeValue)
				name = n.NameValue
			}
		}
		resp := wire.LocateResponsePayload{}
		if name == "k" {
			resp.UniqueIdentifier = []string{"2", "1"}
		}
		return &kmip.ResponseBatchItem{ResponsePayload: resp}, nil
	}))
	mux.Handle(kmip14.OperationGetAttributes, kmip.ItemHandlerFunc(func(_ context.Context, req *kmip.Request) (*kmip.ResponseBatchItem, error) {
		record(req)
		var p wire.GetAttributesRequestPayload
		if err := req.DecodePayload(&p); err != nil {
			return nil, kmip.WithResultReason(err, kmip14.ResultReasonInvalidMessage)
		}
		st, ok := states[p.UniqueIdentifier]
		if !ok {
			return nil, kmip.WithResultReason(errors.New("no such object"), kmip14.ResultReasonItemNotFound)
		}
		return &kmip.ResponseBatchItem{ResponsePayload: wire.GetAttributesResponsePayload{UniqueIdentifier: p.UniqueIdentifier,
			Attribute: []kmip.Attribute{kmip.NewAttributeFromTag(kmip14.TagState, 0, st)}}}, nil
	}))
	mux.Handle(kmip14.OperationGet, kmip.ItemHandlerFunc(func(_ context.Context, req *kmip.Request) (*kmip.ResponseBatchItem, error) {
		record(req)
		var p kmip.GetRequestPayload
		if err := req.DecodePayload(&p); err != nil {
			return nil, kmip.WithResultReason(err, kmip14.ResultReasonInvalidMessage)
		}
		return &kmip.ResponseBatchItem{ResponsePayload: kmip.GetResponsePayload{ObjectType: kmip14.ObjectTypeSymmetricKey,
			UniqueIdentifier: p.UniqueIdentifier, SymmetricKey: &kmip.SymmetricKey{KeyBlock: kmip.KeyBlock{
				KeyFormatType: kmip14.KeyFormatTypeRaw, CryptographicAlgorithm: kmip14.CryptographicAlgorithmAES,
				CryptographicLength: 256, KeyValue: &kmip.KeyValue{KeyMaterial: bytes.Clone(compatKey)}}}}}, nil
	}))
	conf, err := certs.ServerTLSConfig(pki)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	srv := &kmip.Server{Handler: &kmip.StandardProtocolHandler{
		ProtocolVersion: kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: 0},
		MessageHandler:  mux,
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	s.addr = ln.Addr().String()
	return s
}

func (s *compatServer) seen() ([]kmip.ProtocolVersion, []string, []kmip14.Operation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]kmip.ProtocolVersion(nil), s.versions...), append([]string(nil), s.users...), append([]kmip14.Operation(nil), s.ops...)
}

// TestOlderServer: against a server without Discover Versions the client speaks 1.0; against one that
// cannot filter Locate on State it filters itself with Get Attributes (once it learnt that, without
// trying the filter again); and the Username and Password credential goes with every request.
func TestOlderServer(t *testing.T) {
	pki := testPKI(t)
	s := startCompatServer(t, pki)
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := kms.Config{Addr: s.addr, CAPath: pki.CA, ClientCert: pki.ClientCert, ClientKey: pki.ClientKey,
		Username: "alice", PasswordFile: pw}
	c, err := kms.NewClient(cfg, kmstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if v := c.Version(); v != "1.0" {
		t.Errorf("version %q against a server without Discover Versions, want 1.0", v)
	}
	for range 2 {
		got, err := c.Secret(t.Context(), "k")
		if err != nil || !bytes.Equal(got, compatKey) {
			t.Fatalf("Secret: %x, %v; want the Active key of the two", got, err)
		}
	}
	_, err = c.Secret(t.Context(), "other")
	if !errors.Is(err, kms.ErrKeyNotFound) || !strings.Contains(err.Error(), "0 found") {
		t.Fatalf("Secret of an unknown name: %v", err)
	}
	versions, users, ops := s.seen()
	want := []kmip14.Operation{
		kmip14.OperationLocate,                                                                                    // with State: refused
		kmip14.OperationLocate, kmip14.OperationGetAttributes, kmip14.OperationGetAttributes, kmip14.OperationGet, // without
		kmip14.OperationLocate, kmip14.OperationGetAttributes, kmip14.OperationGetAttributes, kmip14.OperationGet, // State not tried again
		kmip14.OperationLocate,
	}
	if len(ops) != len(want) {
		t.Fatalf("operations %v, want %v", ops, want)
	}
	for i := range ops {
		if ops[i] != want[i] {
			t.Fatalf("operations %v, want %v", ops, want)
		}
	}
	for i := range versions {
		if versions[i] != (kmip.ProtocolVersion{ProtocolVersionMajor: 1}) || users[i] != "alice:s3cret" {
			t.Fatalf("request %d (%s): version %+v, credential %q; want 1.0 and alice:s3cret", i, ops[i], versions[i], users[i])
		}
	}
}
