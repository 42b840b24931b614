package kms

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/gemalto/kmip-go"
	"github.com/gemalto/kmip-go/kmip14"

	"github.com/kmipfs/kmipfs/kms/internal/wire"
)

func response(t testing.TB, item kmip.ResponseBatchItem) []byte {
	t.Helper()
	b, err := wire.Marshal(kmip.ResponseMessage{
		ResponseHeader: kmip.ResponseHeader{ProtocolVersion: kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: 2},
			TimeStamp: time.Unix(1700000000, 0), BatchCount: 1},
		BatchItem: []kmip.ResponseBatchItem{item},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func getResponse(t testing.TB, kb kmip.KeyBlock, typ kmip14.ObjectType) []byte {
	t.Helper()
	return response(t, kmip.ResponseBatchItem{Operation: kmip14.OperationGet, ResponsePayload: kmip.GetResponsePayload{
		ObjectType: typ, UniqueIdentifier: "1", SymmetricKey: &kmip.SymmetricKey{KeyBlock: kb}}})
}

var key32 = bytes.Repeat([]byte{0xab}, 32)

func TestSymmetricKeyDecode(t *testing.T) {
	raw := func(m []byte) *kmip.KeyValue { return &kmip.KeyValue{KeyMaterial: m} }
	tests := []struct {
		name    string
		msg     []byte
		want    []byte
		wantErr string
	}{
		{"raw", getResponse(t, kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypeRaw, KeyValue: raw(key32),
			CryptographicAlgorithm: kmip14.CryptographicAlgorithmAES, CryptographicLength: 256}, kmip14.ObjectTypeSymmetricKey), key32, ""},
		{"raw without algorithm", getResponse(t, kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypeRaw, KeyValue: raw(key32)}, kmip14.ObjectTypeSymmetricKey), key32, ""},
		{"transparent", getResponse(t, kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypeTransparentSymmetricKey,
			KeyValue: &kmip.KeyValue{KeyMaterial: kmip.TransparentSymmetricKey{Key: key32}}}, kmip14.ObjectTypeSymmetricKey), key32, ""},
		{"short", getResponse(t, kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypeRaw, KeyValue: raw(key32[:16])}, kmip14.ObjectTypeSymmetricKey), nil, "16 bytes"},
		{"DES", getResponse(t, kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypeRaw, KeyValue: raw(key32),
			CryptographicAlgorithm: kmip14.CryptographicAlgorithmDES}, kmip14.ObjectTypeSymmetricKey), nil, "want AES"},
		{"wrapped", getResponse(t, kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypeRaw, KeyValue: raw(key32),
			KeyWrappingData: &kmip.KeyWrappingData{WrappingMethod: kmip14.WrappingMethodEncrypt}}, kmip14.ObjectTypeSymmetricKey), nil, "wrapped"},
		{"secret data", getResponse(t, kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypeRaw, KeyValue: raw(key32)}, kmip14.ObjectTypeSecretData), nil, "object type"},
		{"pkcs8", getResponse(t, kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypePKCS_8, KeyValue: raw(key32)}, kmip14.ObjectTypeSymmetricKey), nil, "key format"},
		{"no key value", getResponse(t, kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypeRaw}, kmip14.ObjectTypeSymmetricKey), nil, "no key value"},
		{"material not bytes", getResponse(t, kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypeRaw, KeyValue: &kmip.KeyValue{KeyMaterial: "text"}}, kmip14.ObjectTypeSymmetricKey), nil, "not a byte string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload, err := decodeResponse(tt.msg, kmip14.OperationGet)
			if err != nil {
				t.Fatal(err)
			}
			got, err := symmetricKey(payload)
			if tt.wantErr != "" {
				if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.wantErr)) {
					t.Fatalf("got %x, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Fatalf("got %x, %v", got, err)
			}
			// The key is a copy: zeroing the message leaves it intact.
			clear(tt.msg)
			if !bytes.Equal(got, tt.want) {
				t.Fatal("key aliases the response buffer")
			}
		})
	}
}

func TestDecodeResponseErrors(t *testing.T) {
	failed := response(t, kmip.ResponseBatchItem{Operation: kmip14.OperationLocate, ResultStatus: kmip14.ResultStatusOperationFailed,
		ResultReason: kmip14.ResultReasonPermissionDenied, ResultMessage: "no"})
	_, err := decodeResponse(failed, kmip14.OperationLocate)
	var re *resultError
	if !errors.As(err, &re) || re.reason != kmip14.ResultReasonPermissionDenied || err.Error() != "server answered OperationFailed: PermissionDenied: no" {
		t.Errorf("failed item: %v", err)
	}
	wrongOp := response(t, kmip.ResponseBatchItem{Operation: kmip14.OperationGet})
	if _, err := decodeResponse(wrongOp, kmip14.OperationLocate); err == nil || errors.As(err, &re) {
		t.Errorf("answer for another operation: %v", err)
	}
	noItems, _ := wire.Marshal(kmip.ResponseMessage{ResponseHeader: kmip.ResponseHeader{BatchCount: 0}})
	if _, err := decodeResponse(noItems, kmip14.OperationLocate); err == nil {
		t.Error("no batch items accepted")
	}
	if _, err := decodeResponse([]byte{0x42, 0, 0x7b, 1, 0, 0, 0, 0}, kmip14.OperationLocate); err == nil {
		t.Error("empty request-shaped structure accepted")
	}
}

func TestDecodeAttributes(t *testing.T) {
	at := func(tag interface{ CanonicalName() string }, v any) kmip.Attribute {
		return kmip.Attribute{AttributeName: tag.CanonicalName(), AttributeValue: v}
	}
	now := time.Unix(1700000000, 0).UTC()
	msg := response(t, kmip.ResponseBatchItem{Operation: kmip14.OperationGetAttributes, ResponsePayload: struct {
		UniqueIdentifier string
		Attribute        []kmip.Attribute
	}{"7", []kmip.Attribute{
		at(kmip14.TagName, kmip.Name{NameValue: "n", NameType: kmip14.NameTypeUninterpretedTextString}),
		at(kmip14.TagObjectType, kmip14.ObjectTypeSymmetricKey),
		at(kmip14.TagCryptographicAlgorithm, kmip14.CryptographicAlgorithmAES),
		at(kmip14.TagCryptographicLength, 256),
		at(kmip14.TagCryptographicUsageMask, kmip14.CryptographicUsageMask(12)),
		at(kmip14.TagState, kmip14.StateActive),
		at(kmip14.TagInitialDate, now),
		at(kmip14.TagOperationPolicyName, "default"), // unknown to us: skipped
	}}})
	payload, err := decodeResponse(msg, kmip14.OperationGetAttributes)
	if err != nil {
		t.Fatal(err)
	}
	a, err := decodeAttributes(payload)
	want := KeyAttributes{UID: "7", Name: "n", ObjectType: "SymmetricKey", Algorithm: "AES", Length: 256, UsageMask: 12, State: "Active", InitialDate: now}
	if err != nil || a != want {
		t.Fatalf("got %+v, %v\nwant %+v", a, err, want)
	}
	bad := response(t, kmip.ResponseBatchItem{Operation: kmip14.OperationGetAttributes, ResponsePayload: struct {
		UniqueIdentifier string
		Attribute        []kmip.Attribute
	}{"7", []kmip.Attribute{at(kmip14.TagCryptographicLength, "long")}}})
	payload, err = decodeResponse(bad, kmip14.OperationGetAttributes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeAttributes(payload); err == nil {
		t.Fatal("text Cryptographic Length accepted")
	}
}

// FuzzDecodeResponse feeds arbitrary bytes, as a key server could send them, through every decoder of
// the client. None may panic; a key, when one comes out, is always 32 bytes.
func FuzzDecodeResponse(f *testing.F) {
	f.Add(getResponse(f, kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypeRaw, KeyValue: &kmip.KeyValue{KeyMaterial: key32},
		CryptographicAlgorithm: kmip14.CryptographicAlgorithmAES, CryptographicLength: 256}, kmip14.ObjectTypeSymmetricKey))
	f.Add(getResponse(f, kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypeTransparentSymmetricKey,
		KeyValue: &kmip.KeyValue{KeyMaterial: kmip.TransparentSymmetricKey{Key: key32}}}, kmip14.ObjectTypeSymmetricKey))
	f.Add(response(f, kmip.ResponseBatchItem{Operation: kmip14.OperationLocate, ResponsePayload: wire.LocateResponsePayload{LocatedItems: 2, UniqueIdentifier: []string{"1", "2"}}}))
	f.Add(response(f, kmip.ResponseBatchItem{Operation: kmip14.OperationGet, ResultStatus: kmip14.ResultStatusOperationFailed,
		ResultReason: kmip14.ResultReasonItemNotFound, ResultMessage: "gone"}))
	f.Add([]byte{0x42, 0x00, 0x7b, 0x01, 0x00, 0x00, 0x00, 0x08, 0x42, 0x00, 0x7a, 0x07, 0x00, 0x00, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, op := range []kmip14.Operation{kmip14.OperationGet, kmip14.OperationLocate, kmip14.OperationGetAttributes} {
			payload, err := decodeResponse(data, op)
			if err != nil || payload == nil {
				continue
			}
			if k, err := symmetricKey(payload); err == nil && len(k) != 32 {
				t.Fatalf("symmetricKey returned %d bytes", len(k))
			}
			_, _ = decodeAttributes(payload)
			var loc wire.LocateResponsePayload
			_ = wire.Unmarshal(payload, &loc)
		}
	})
}
