package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gemalto/kmip-go"
	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"
)

// MaxMessageSize is the default limit for one KMIP message in either direction. A symmetric key response
// is a few hundred bytes and a Locate over thousands of keys a few hundred KiB, so 1 MiB leaves room
// without letting a peer make us allocate gigabytes.
const MaxMessageSize = 1 << 20

// maxDepth bounds structure nesting. KMIP messages nest about eight levels deep (message, batch item,
// payload, object, key block, key value, attribute, attribute value); 32 is generous.
const maxDepth = 32

// ErrMalformed reports bytes that are not a well-formed TTLV message.
var ErrMalformed = errors.New("malformed ttlv")

// ErrTooLarge reports a message whose length field exceeds the reader's limit.
var ErrTooLarge = errors.New("ttlv message too large")

const (
	lenHeader = 8

	typeStructure   = byte(ttlv.TypeStructure)
	typeInteger     = byte(ttlv.TypeInteger)
	typeLongInteger = byte(ttlv.TypeLongInteger)
	typeBigInteger  = byte(ttlv.TypeBigInteger)
	typeEnumeration = byte(ttlv.TypeEnumeration)
	typeBoolean     = byte(ttlv.TypeBoolean)
	typeTextString  = byte(ttlv.TypeTextString)
	typeByteString  = byte(ttlv.TypeByteString)
	typeDateTime    = byte(ttlv.TypeDateTime)
	typeInterval    = byte(ttlv.TypeInterval)
	typeDateTimeExt = byte(ttlv.TypeDateTimeExtended)
)

// ReadMessage reads one KMIP message from r: a top-level TTLV structure of at most limit bytes, header
// included. It returns io.EOF only when r ends cleanly before the first header byte; a message cut short
// is io.ErrUnexpectedEOF. The returned slice is freshly allocated and owned by the caller.
func ReadMessage(r io.Reader, limit int) ([]byte, error) {
	var hdr [lenHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != 0x42 && hdr[0] != 0x54 {
		return nil, fmt.Errorf("%w: message tag %x is not a KMIP tag", ErrMalformed, hdr[:3])
	}
	if hdr[3] != typeStructure {
		return nil, fmt.Errorf("%w: message is of type %#x, not a structure", ErrMalformed, hdr[3])
	}
	n := binary.BigEndian.Uint32(hdr[4:])
	if uint64(n)+lenHeader > uint64(limit) {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, uint64(n)+lenHeader, limit)
	}
	buf := make([]byte, lenHeader+int(n))
	copy(buf, hdr[:])
	if _, err := io.ReadFull(r, buf[lenHeader:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if err := Validate(buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// Validate checks that b is exactly one well-formed TTLV item: valid tags, known types, fixed lengths where
// the type has one, padding present, structures that exactly contain their children, nesting at most
// maxDepth. kmip-go's decoder reads values by slicing on the length fields, so it must only see bytes that
// pass this check.
func Validate(b []byte) error {
	n, err := validateItem(b, 0)
	if err != nil {
		return err
	}
	if n != len(b) {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b)-n)
	}
	return nil
}

// validateItem validates the item at the start of b and returns its full length including padding.
func validateItem(b []byte, depth int) (int, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("%w: nested deeper than %d", ErrMalformed, maxDepth)
	}
	if len(b) < lenHeader {
		return 0, fmt.Errorf("%w: truncated header", ErrMalformed)
	}
	if b[0] != 0x42 && b[0] != 0x54 {
		return 0, fmt.Errorf("%w: tag %x", ErrMalformed, b[:3])
	}
	typ := b[3]
	l := int(binary.BigEndian.Uint32(b[4:8]))
	full := lenHeader + l
	switch typ {
	case typeInteger, typeEnumeration, typeInterval:
		if l != 4 {
			return 0, fmt.Errorf("%w: %#x item of length %d", ErrMalformed, typ, l)
		}
		full = lenHeader + 8
	case typeLongInteger, typeBoolean, typeDateTime, typeDateTimeExt:
		if l != 8 {
			return 0, fmt.Errorf("%w: %#x item of length %d", ErrMalformed, typ, l)
		}
	case typeBigInteger:
		if l%8 != 0 {
			return 0, fmt.Errorf("%w: big integer of length %d", ErrMalformed, l)
		}
	case typeTextString, typeByteString:
		if m := l % 8; m != 0 {
			full += 8 - m
		}
	case typeStructure:
	default:
		return 0, fmt.Errorf("%w: unknown type %#x", ErrMalformed, typ)
	}
	if l < 0 || full > len(b) || full < lenHeader {
		return 0, fmt.Errorf("%w: item of %d bytes in %d", ErrMalformed, full, len(b))
	}
	if typ == typeStructure {
		if l%8 != 0 {
			return 0, fmt.Errorf("%w: structure of length %d", ErrMalformed, l)
		}
		inner := b[lenHeader:full]
		for len(inner) > 0 {
			n, err := validateItem(inner, depth+1)
			if err != nil {
				return 0, err
			}
			inner = inner[n:]
		}
	}
	return full, nil
}

// Unmarshal decodes the TTLV item b into v like ttlv.Unmarshal, after [Validate], and turns a panic inside
// kmip-go's decoder (it panics on some type mismatches, e.g. a byte string where an integer was expected)
// into an error. Use it for every byte that came from a peer.
func Unmarshal(b []byte, v any) (err error) {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty item", ErrMalformed)
	}
	if err := Validate(b); err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: decoder panic: %v", ErrMalformed, r)
		}
	}()
	if err := ttlv.Unmarshal(ttlv.TTLV(b), v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// Marshal encodes v like ttlv.Marshal, turning a panic inside kmip-go's encoder into an error.
func Marshal(v any) (b []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("ttlv encode: panic: %v", r)
		}
	}()
	return ttlv.Marshal(v)
}

// Zero overwrites b with zeros. Messages that carried key material are zeroed once decoded.
func Zero(b []byte) {
	clear(b)
}

// LocateRequestPayload is the KMIP 1.4 Locate request (section 4.9). kmip-go only has the 2.0 shape.
type LocateRequestPayload struct {
	MaximumItems      int                      `ttlv:",omitempty"`
	OffsetItems       int                      `ttlv:",omitempty"`
	StorageStatusMask kmip14.StorageStatusMask `ttlv:",omitempty"`
	ObjectGroupMember kmip14.ObjectGroupMember `ttlv:",omitempty"`
	Attribute         []kmip.Attribute
}

// LocateResponsePayload is the KMIP 1.x Locate response. Located Items exists from 1.3 on.
type LocateResponsePayload struct {
	LocatedItems     int `ttlv:",omitempty"`
	UniqueIdentifier []string
}

// ActivateRequestPayload is the KMIP 1.x Activate request. An empty UID means the ID placeholder.
type ActivateRequestPayload struct {
	UniqueIdentifier string `ttlv:",omitempty"`
}

// ActivateResponsePayload is the KMIP 1.x Activate response.
type ActivateResponsePayload struct {
	UniqueIdentifier string
}

// GetRequestPayload is the full KMIP 1.4 Get request; kmip.GetRequestPayload has only the UID, which fails
// to decode a 1.4 request carrying a Key Format Type.
type GetRequestPayload struct {
	UniqueIdentifier         string                    `ttlv:",omitempty"`
	KeyFormatType            kmip14.KeyFormatType      `ttlv:",omitempty"`
	KeyWrapType              kmip14.KeyWrapType        `ttlv:",omitempty"`
	KeyCompressionType       kmip14.KeyCompressionType `ttlv:",omitempty"`
	KeyWrappingSpecification any                       `ttlv:",omitempty"`
}

// GetAttributesRequestPayload is the KMIP 1.x Get Attributes request. No names means all attributes.
type GetAttributesRequestPayload struct {
	UniqueIdentifier string `ttlv:",omitempty"`
	AttributeName    []string
}

// GetAttributesResponsePayload is the KMIP 1.x Get Attributes response.
type GetAttributesResponsePayload struct {
	UniqueIdentifier string
	Attribute        []kmip.Attribute
}

// RevocationReason is the KMIP Revocation Reason structure (section 3.31).
type RevocationReason struct {
	RevocationReasonCode kmip14.RevocationReasonCode
	RevocationMessage    string `ttlv:",omitempty"`
}

// RevokeRequestPayload is the KMIP 1.x Revoke request.
type RevokeRequestPayload struct {
	UniqueIdentifier         string `ttlv:",omitempty"`
	RevocationReason         RevocationReason
	CompromiseOccurrenceDate *time.Time
}

// RevokeResponsePayload is the KMIP 1.x Revoke response.
type RevokeResponsePayload struct {
	UniqueIdentifier string
}

// NameAttribute builds the Name attribute that Locate and Create use for a human-readable object name.
func NameAttribute(name string) kmip.Attribute {
	return kmip.Attribute{
		AttributeName:  kmip14.TagName.CanonicalName(),
		AttributeValue: kmip.Name{NameValue: name, NameType: kmip14.NameTypeUninterpretedTextString},
	}
}

// Uint32 reads an Enumeration or Integer attribute value as decoded into an interface{} field (ttlv.EnumValue
// or int32), or as set by Go code (a kmip14 enum or mask type, int, uint32).
func Uint32(v any) (uint32, bool) {
	switch t := v.(type) {
	case ttlv.EnumValue:
		return uint32(t), true
	case int32:
		return uint32(t), t >= 0
	case int:
		return uint32(t), t >= 0 && int64(t) <= int64(^uint32(0))
	case uint32:
		return t, true
	case kmip14.ObjectType:
		return uint32(t), true
	case kmip14.State:
		return uint32(t), true
	case kmip14.CryptographicAlgorithm:
		return uint32(t), true
	case kmip14.CryptographicUsageMask:
		return uint32(t), true
	}
	return 0, false
}

// Int reads an Integer attribute value (int32 once decoded, or a Go int).
func Int(v any) (int, bool) {
	switch t := v.(type) {
	case int32:
		return int(t), true
	case int:
		return t, true
	}
	return 0, false
}

// Text reads a Text String attribute value.
func Text(v any) (string, bool) {
	s, ok := v.(string)
	return s, ok
}

// Time reads a Date-Time attribute value.
func Time(v any) (time.Time, bool) {
	t, ok := v.(time.Time)
	return t, ok
}

// Name reads a Name attribute value: a structure decoded as ttlv.TTLV, or a kmip.Name set by Go code.
func Name(v any) (kmip.Name, bool) {
	switch t := v.(type) {
	case kmip.Name:
		return t, true
	case *kmip.Name:
		if t == nil {
			return kmip.Name{}, false
		}
		return *t, true
	case ttlv.TTLV:
		var n kmip.Name
		if err := Unmarshal(t, &n); err != nil {
			return kmip.Name{}, false
		}
		return n, true
	}
	return kmip.Name{}, false
}

// Bytes reads a Byte String value.
func Bytes(v any) ([]byte, bool) {
	b, ok := v.([]byte)
	return b, ok
}

// RegisterResponsePayload is the KMIP 1.x Register response. kmip.RegisterResponsePayload always encodes
// an empty Template-Attribute; this one omits it.
type RegisterResponsePayload struct {
	UniqueIdentifier  string
	TemplateAttribute *kmip.TemplateAttribute `ttlv:",omitempty"`
}
