package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/gemalto/kmip-go"
	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/kmipfs/kmipfs/kms/internal/wire"
)

func request(t testing.TB) []byte {
	t.Helper()
	b, err := wire.Marshal(kmip.RequestMessage{
		RequestHeader: kmip.RequestHeader{ProtocolVersion: kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: 2}, BatchCount: 1},
		BatchItem: []kmip.RequestBatchItem{{Operation: kmip14.OperationLocate, RequestPayload: wire.LocateRequestPayload{
			MaximumItems: 3, Attribute: []kmip.Attribute{wire.NameAttribute("pykmip-mybucketkey")}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// item builds one TTLV item header with a value.
func item(tag uint32, typ byte, value []byte) []byte {
	b := make([]byte, 8, 8+len(value)+8)
	b[0], b[1], b[2] = byte(tag>>16), byte(tag>>8), byte(tag)
	b[3] = typ
	binary.BigEndian.PutUint32(b[4:], uint32(len(value)))
	b = append(b, value...)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestReadMessage(t *testing.T) {
	msg := request(t)
	two := append(append([]byte(nil), msg...), msg...)
	deep := item(0x420001, 0x01, nil)
	for range 40 {
		deep = item(0x420001, 0x01, deep)
	}
	tests := []struct {
		name    string
		in      []byte
		limit   int
		want    [][]byte
		wantErr error
	}{
		{"one", msg, wire.MaxMessageSize, [][]byte{msg}, io.EOF},
		{"two in a row", two, wire.MaxMessageSize, [][]byte{msg, msg}, io.EOF},
		{"empty stream", nil, wire.MaxMessageSize, nil, io.EOF},
		{"cut in header", msg[:5], wire.MaxMessageSize, nil, io.ErrUnexpectedEOF},
		{"cut in body", msg[:len(msg)-3], wire.MaxMessageSize, nil, io.ErrUnexpectedEOF},
		{"too large", msg, len(msg) - 1, nil, wire.ErrTooLarge},
		{"huge length claimed", []byte{0x42, 0x00, 0x78, 0x01, 0xff, 0xff, 0xff, 0xf8}, wire.MaxMessageSize, nil, wire.ErrTooLarge},
		{"not a structure", item(0x420078, 0x07, []byte("hi")), wire.MaxMessageSize, nil, wire.ErrMalformed},
		{"bad tag", []byte("GET / HTTP/1.1\r\n\r\n"), wire.MaxMessageSize, nil, wire.ErrMalformed},
		{"integer with length 8", item(0x420078, 0x01, item(0x420001, 0x02, make([]byte, 8))), wire.MaxMessageSize, nil, wire.ErrMalformed},
		{"child overruns parent", func() []byte {
			b := item(0x420078, 0x01, item(0x420001, 0x07, []byte("abcdefgh")))
			binary.BigEndian.PutUint32(b[12:], 64)
			return b
		}(), wire.MaxMessageSize, nil, wire.ErrMalformed},
		{"unknown type", item(0x420078, 0x01, item(0x420001, 0x0c, make([]byte, 8))), wire.MaxMessageSize, nil, wire.ErrMalformed},
		{"too deep", deep, wire.MaxMessageSize, nil, wire.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(tt.in)
			for i, w := range tt.want {
				got, err := wire.ReadMessage(r, tt.limit)
				if err != nil || !bytes.Equal(got, w) {
					t.Fatalf("message %d: %x, %v", i, got, err)
				}
			}
			if _, err := wire.ReadMessage(r, tt.limit); !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestUnmarshalRecoversDecoderPanics(t *testing.T) {
	// A Byte String where kmip-go's decoder expects an Integer makes it panic (it calls Elem on an int
	// type); Unmarshal must return an error instead.
	b := item(0x420078, 0x01, item(0x42004f, 0x08, []byte{1, 2, 3})) // Maximum Items as a byte string
	var p wire.LocateRequestPayload
	err := wire.Unmarshal(b, &p)
	if !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("got %v, want ErrMalformed", err)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	now := time.Unix(1700000000, 0).UTC()
	in := wire.RevokeRequestPayload{UniqueIdentifier: "2", RevocationReason: wire.RevocationReason{
		RevocationReasonCode: kmip14.RevocationReasonCodeKeyCompromise, RevocationMessage: "leaked"}, CompromiseOccurrenceDate: &now}
	// Payloads travel as the Request Payload of a batch item, which gives them their tag.
	b, err := wire.Marshal(kmip.RequestMessage{
		RequestHeader: kmip.RequestHeader{ProtocolVersion: kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: 2}, BatchCount: 1},
		BatchItem:     []kmip.RequestBatchItem{{Operation: kmip14.OperationRevoke, RequestPayload: in}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// "2" must stay a Text String: this module never imports kmip20, which would make it an Enumeration.
	if !bytes.Contains(b, item(0x420094, byte(ttlv.TypeTextString), []byte("2"))) {
		t.Fatalf("UID not encoded as a text string: %s", ttlv.TTLV(b))
	}
	var msg kmip.RequestMessage
	if err := wire.Unmarshal(b, &msg); err != nil {
		t.Fatal(err)
	}
	var out wire.RevokeRequestPayload
	if err := wire.Unmarshal(msg.BatchItem[0].RequestPayload.(ttlv.TTLV), &out); err != nil {
		t.Fatal(err)
	}
	if out.UniqueIdentifier != "2" || out.RevocationReason != in.RevocationReason || out.CompromiseOccurrenceDate == nil || !out.CompromiseOccurrenceDate.Equal(now) {
		t.Fatalf("round trip: %+v", out)
	}
}

func TestAttributeValues(t *testing.T) {
	if u, ok := wire.Uint32(ttlv.EnumValue(3)); !ok || u != 3 {
		t.Error("EnumValue")
	}
	if _, ok := wire.Uint32(int32(-1)); ok {
		t.Error("negative int32 accepted as uint32")
	}
	if _, ok := wire.Uint32("x"); ok {
		t.Error("string accepted as uint32")
	}
	if n, ok := wire.Int(int32(256)); !ok || n != 256 {
		t.Error("int32")
	}
	nameTTLV, _ := wire.Marshal(kmip.Name{NameValue: "k", NameType: kmip14.NameTypeUninterpretedTextString})
	if n, ok := wire.Name(ttlv.TTLV(nameTTLV)); !ok || n.NameValue != "k" {
		t.Errorf("Name from TTLV: %+v %v", n, ok)
	}
	if _, ok := wire.Name(ttlv.TTLV([]byte{1, 2, 3})); ok {
		t.Error("garbage accepted as Name")
	}
}

// FuzzReadMessage checks the framing and validation on arbitrary streams: no panic, no message over the
// limit, and whatever is returned decodes as TTLV without panicking.
func FuzzReadMessage(f *testing.F) {
	f.Add(request(f))
	f.Add(append(request(f), request(f)...))
	f.Add([]byte{0x42, 0x00, 0x78, 0x01, 0xff, 0xff, 0xff, 0xf8})
	f.Add(item(0x420078, 0x01, item(0x42004f, 0x08, []byte{1, 2, 3})))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for range 4 {
			msg, err := wire.ReadMessage(r, 4096)
			if err != nil {
				return
			}
			if len(msg) > 4096 {
				t.Fatalf("message of %d bytes over the limit", len(msg))
			}
			if err := ttlv.TTLV(msg).Valid(); err != nil {
				t.Fatalf("ReadMessage accepted what ttlv rejects: %v", err)
			}
			var req kmip.RequestMessage
			_ = wire.Unmarshal(msg, &req)
			var loc wire.LocateRequestPayload
			_ = wire.Unmarshal(msg, &loc)
			_ = ttlv.TTLV(msg).String()
		}
	})
}
