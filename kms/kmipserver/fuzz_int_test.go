package kmipserver

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/gemalto/kmip-go"
	"github.com/gemalto/kmip-go/kmip14"

	"github.com/kmipfs/kmipfs/kms/internal/wire"
)

// FuzzDecodeStore: a damaged key store file is an error, never a panic, and whatever loads is
// consistent and survives an encode/decode round trip.
func FuzzDecodeStore(f *testing.F) {
	now := time.Unix(1700000000, 0).UTC()
	good, err := encodeStore(map[string]*object{
		"a": {uid: "a", name: "k", algorithm: kmip14.CryptographicAlgorithmAES, length: 256, usageMask: 12,
			state: kmip14.StateActive, seq: 1, initial: now, activation: now, lastChange: now, material: bytes.Repeat([]byte{1}, 32)},
		"b": {uid: "b", algorithm: kmip14.CryptographicAlgorithmAES, length: 128, state: kmip14.StateCompromised, seq: 2,
			initial: now, compromise: now, lastChange: now, material: bytes.Repeat([]byte{2}, 16)},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1,"keys":[]}`))
	f.Add([]byte(`{"version":1,"keys":[{"uid":"x","object_type":"SymmetricKey","algorithm":"AES","length":128,"state":"PreActive","seq":1,"material":"AAAAAAAAAAAAAAAAAAAAAA=="}]}`))
	f.Add([]byte(`{"version":1,"keys":[{"uid":"x"},{"uid":"x"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, maxSeq, err := decodeStore(data)
		if err != nil {
			return
		}
		for uid, o := range objs {
			if uid != o.uid || o.uid == "" || !validAESLength(o.length) || len(o.material)*8 != o.length || o.seq == 0 || o.seq > maxSeq {
				t.Fatalf("inconsistent object loaded: %+v", o)
			}
		}
		again, err := encodeStore(objs)
		if err != nil {
			t.Fatal(err)
		}
		objs2, maxSeq2, err := decodeStore(again)
		if err != nil || len(objs2) != len(objs) || maxSeq2 != maxSeq {
			t.Fatalf("round trip: %d objects, %v", len(objs2), err)
		}
	})
}

// FuzzServeKMIP sends arbitrary well-framed messages (what wire.ReadMessage lets through) to the
// protocol handler: it must never panic and must always answer with a decodable response message.
func FuzzServeKMIP(f *testing.F) {
	msg := func(items ...kmip.RequestBatchItem) []byte {
		b, err := wire.Marshal(kmip.RequestMessage{RequestHeader: kmip.RequestHeader{
			ProtocolVersion: kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: 4}, BatchCount: len(items)},
			BatchItem: items})
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	var tmpl kmip.TemplateAttribute
	tmpl.Append(kmip14.TagName, kmip.Name{NameValue: "k", NameType: kmip14.NameTypeUninterpretedTextString})
	tmpl.Append(kmip14.TagCryptographicAlgorithm, kmip14.CryptographicAlgorithmAES)
	tmpl.Append(kmip14.TagCryptographicLength, 128)
	f.Add(msg(kmip.RequestBatchItem{Operation: kmip14.OperationCreate, RequestPayload: kmip.CreateRequestPayload{ObjectType: kmip14.ObjectTypeSymmetricKey, TemplateAttribute: tmpl}},
		kmip.RequestBatchItem{Operation: kmip14.OperationActivate, RequestPayload: wire.ActivateRequestPayload{}},
		kmip.RequestBatchItem{Operation: kmip14.OperationGet, RequestPayload: wire.GetRequestPayload{}}))
	f.Add(msg(kmip.RequestBatchItem{Operation: kmip14.OperationLocate, RequestPayload: wire.LocateRequestPayload{MaximumItems: 1,
		Attribute: []kmip.Attribute{wire.NameAttribute("k")}}}))
	f.Add(msg(kmip.RequestBatchItem{Operation: kmip14.OperationRevoke, RequestPayload: wire.RevokeRequestPayload{
		RevocationReason: wire.RevocationReason{RevocationReasonCode: kmip14.RevocationReasonCodeKeyCompromise}}},
		kmip.RequestBatchItem{Operation: kmip14.OperationDestroy, RequestPayload: kmip.DestroyRequestPayload{}}))
	f.Add(msg(kmip.RequestBatchItem{Operation: kmip14.OperationGetAttributes, RequestPayload: wire.GetAttributesRequestPayload{}},
		kmip.RequestBatchItem{Operation: kmip14.OperationDiscoverVersions},
		kmip.RequestBatchItem{Operation: kmip14.OperationQuery}))
	f.Add(msg(kmip.RequestBatchItem{Operation: kmip14.OperationRegister, RequestPayload: kmip.RegisterRequestPayload{ObjectType: kmip14.ObjectTypeSymmetricKey,
		SymmetricKey: &kmip.SymmetricKey{KeyBlock: kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypeRaw, KeyValue: &kmip.KeyValue{KeyMaterial: make([]byte, 16)}}}}}))

	s, err := New(filepath.Join(f.TempDir(), "keys.json"), Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = s.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		if wire.Validate(data) != nil {
			return // wire.ReadMessage never hands such bytes to the handler
		}
		var out bytes.Buffer
		s.srv.Handler.ServeKMIP(t.Context(), &kmip.Request{TTLV: data, RemoteAddr: "fuzz"}, &out)
		var resp kmip.ResponseMessage
		if err := wire.Unmarshal(out.Bytes(), &resp); err != nil {
			t.Fatalf("undecodable answer %x: %v", out.Bytes(), err)
		}
		if len(resp.BatchItem) == 0 {
			t.Fatalf("answer without batch items")
		}
		if resp.ResponseHeader.ServerCorrelationValue != "" {
			t.Fatalf("answer carries Server Correlation Value")
		}
		for _, it := range resp.BatchItem {
			if it.ResultStatus != kmip14.ResultStatusSuccess && (it.ResultReason == 0 || it.ResultMessage == "") {
				t.Fatalf("failed item without reason or message: %+v", it)
			}
		}
	})
}
