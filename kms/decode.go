package kms

import (
	"errors"
	"fmt"

	"github.com/gemalto/kmip-go"
	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/kmipfs/kmipfs/kms/internal/wire"
)

// The functions in this file decode bytes that came from the key server. They are fuzzed
// (FuzzDecodeResponse, FuzzSymmetricKey) and must return an error, never panic, on any input.

// decodeResponse parses one response message for a request with a single batch item of operation op. It
// returns the payload of a successful item (nil if the server sent none), a *resultError for an item the
// server failed, or another error for bytes that are not a usable response.
func decodeResponse(raw []byte, op kmip14.Operation) (ttlv.TTLV, error) {
	var msg kmip.ResponseMessage
	if err := wire.Unmarshal(raw, &msg); err != nil {
		return nil, fmt.Errorf("decode response: %w", err)
	}
	if len(msg.BatchItem) != 1 {
		return nil, fmt.Errorf("decode response: %d batch items, want 1", len(msg.BatchItem))
	}
	item := msg.BatchItem[0]
	if item.Operation != 0 && item.Operation != op {
		return nil, fmt.Errorf("decode response: answer is for %s, want %s", item.Operation, op)
	}
	if item.ResultStatus != kmip14.ResultStatusSuccess {
		return nil, &resultError{op: op, status: item.ResultStatus, reason: item.ResultReason, message: item.ResultMessage}
	}
	switch p := item.ResponsePayload.(type) {
	case nil:
		return nil, nil
	case ttlv.TTLV:
		return p, nil
	default:
		return nil, fmt.Errorf("decode response: payload is a %T, not a structure", p)
	}
}

// symmetricKey extracts a 32-byte AES key from a Get response payload. The result is a fresh copy, so the
// caller can zero the response buffer.
func symmetricKey(payload ttlv.TTLV) ([]byte, error) {
	if len(payload) == 0 {
		return nil, errors.New("empty get response")
	}
	var resp kmip.GetResponsePayload
	if err := wire.Unmarshal(payload, &resp); err != nil {
		return nil, err
	}
	if resp.ObjectType != kmip14.ObjectTypeSymmetricKey || resp.SymmetricKey == nil {
		return nil, fmt.Errorf("object type is %s, want SymmetricKey", resp.ObjectType)
	}
	kb := resp.SymmetricKey.KeyBlock
	if kb.KeyWrappingData != nil {
		return nil, errors.New("key material is wrapped")
	}
	if kb.CryptographicAlgorithm != 0 && kb.CryptographicAlgorithm != kmip14.CryptographicAlgorithmAES {
		return nil, fmt.Errorf("algorithm is %s, want AES", kb.CryptographicAlgorithm)
	}
	if kb.KeyValue == nil {
		return nil, errors.New("no key value")
	}
	var material []byte
	switch kb.KeyFormatType {
	case kmip14.KeyFormatTypeRaw:
		b, ok := wire.Bytes(kb.KeyValue.KeyMaterial)
		if !ok {
			return nil, fmt.Errorf("raw key material is a %T, not a byte string", kb.KeyValue.KeyMaterial)
		}
		material = b
	case kmip14.KeyFormatTypeTransparentSymmetricKey:
		t, ok := kb.KeyValue.KeyMaterial.(ttlv.TTLV)
		if !ok {
			return nil, fmt.Errorf("transparent key material is a %T, not a structure", kb.KeyValue.KeyMaterial)
		}
		var tk kmip.TransparentSymmetricKey
		if err := wire.Unmarshal(t, &tk); err != nil {
			return nil, err
		}
		material = tk.Key
	default:
		return nil, fmt.Errorf("key format is %s, want Raw", kb.KeyFormatType)
	}
	if len(material) != 32 {
		return nil, fmt.Errorf("key is %d bytes, want 32", len(material))
	}
	if kb.CryptographicLength != 0 && kb.CryptographicLength != 256 {
		return nil, fmt.Errorf("cryptographic length is %d, want 256", kb.CryptographicLength)
	}
	return append([]byte(nil), material...), nil
}

// decodeAttributes reads a GetAttributes response payload. Unknown attributes are skipped; a known one of
// the wrong type is an error.
func decodeAttributes(payload ttlv.TTLV) (KeyAttributes, error) {
	var a KeyAttributes
	if len(payload) == 0 {
		return a, errors.New("empty get attributes response")
	}
	var resp wire.GetAttributesResponsePayload
	if err := wire.Unmarshal(payload, &resp); err != nil {
		return a, fmt.Errorf("decode get attributes response: %w", err)
	}
	a.UID = resp.UniqueIdentifier
	for _, attr := range resp.Attribute {
		v := attr.AttributeValue
		ok := true
		switch attr.AttributeName {
		case "Name":
			var n kmip.Name
			if n, ok = wire.Name(v); ok && a.Name == "" {
				a.Name = n.NameValue
			}
		case "Object Type":
			var u uint32
			u, ok = wire.Uint32(v)
			a.ObjectType = kmip14.ObjectType(u).String()
		case "Cryptographic Algorithm":
			var u uint32
			u, ok = wire.Uint32(v)
			a.Algorithm = kmip14.CryptographicAlgorithm(u).String()
		case "Cryptographic Length":
			a.Length, ok = wire.Int(v)
		case "Cryptographic Usage Mask":
			a.UsageMask, ok = wire.Uint32(v)
		case "State":
			var u uint32
			u, ok = wire.Uint32(v)
			a.State = kmip14.State(u).String()
		case "Initial Date":
			a.InitialDate, ok = wire.Time(v)
		case "Activation Date":
			a.ActivationDate, ok = wire.Time(v)
		case "Deactivation Date":
			a.DeactivationDate, ok = wire.Time(v)
		case "Compromise Date", "Compromise  Date": // kmip-go's canonical name has two spaces
			a.CompromiseDate, ok = wire.Time(v)
		case "Last Change Date":
			a.LastChangeDate, ok = wire.Time(v)
		case "Unique Identifier":
			var s string
			if s, ok = wire.Text(v); ok && a.UID == "" {
				a.UID = s
			}
		}
		if !ok {
			return a, fmt.Errorf("decode get attributes response: attribute %q has a value of type %T", attr.AttributeName, v)
		}
	}
	return a, nil
}
