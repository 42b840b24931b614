package kmipserver_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gemalto/kmip-go"
	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/kmipfs/kmipfs/kms/kmipserver"
	"github.com/kmipfs/kmipfs/kms/kmstest"
)

// helpers over a RawConn ------------------------------------------------------------------------------

// ok checks a RawConn.One result: ok(t)(c.One(op, payload)) fails the test unless the item succeeded.
func ok(t *testing.T) func(kmip.ResponseBatchItem, error) kmip.ResponseBatchItem {
	return func(it kmip.ResponseBatchItem, err error) kmip.ResponseBatchItem {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return okItem(t, it)
	}
}

func okItem(t *testing.T, it kmip.ResponseBatchItem) kmip.ResponseBatchItem {
	t.Helper()
	if it.ResultStatus != kmip14.ResultStatusSuccess {
		t.Fatalf("%s failed: %s: %s", it.Operation, it.ResultReason, it.ResultMessage)
	}
	return it
}

// failed checks that a batch item failed with reason and a message containing msg.
func failed(t *testing.T, it kmip.ResponseBatchItem, err error, reason kmip14.ResultReason, msg string) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if it.ResultStatus != kmip14.ResultStatusOperationFailed || it.ResultReason != reason || !strings.Contains(it.ResultMessage, msg) {
		t.Fatalf("got %s %s %q, want OperationFailed %s containing %q", it.ResultStatus, it.ResultReason, it.ResultMessage, reason, msg)
	}
}

func template(name string, alg kmip14.CryptographicAlgorithm, bits int) kmip.TemplateAttribute {
	var tmpl kmip.TemplateAttribute
	if name != "" {
		tmpl.Append(kmip14.TagName, kmip.Name{NameValue: name, NameType: kmip14.NameTypeUninterpretedTextString})
	}
	if alg != 0 {
		tmpl.Append(kmip14.TagCryptographicAlgorithm, alg)
	}
	if bits != 0 {
		tmpl.Append(kmip14.TagCryptographicLength, bits)
	}
	return tmpl
}

func create(t *testing.T, c *kmstest.RawConn, name string, bits int) string {
	t.Helper()
	it := ok(t)(c.One(kmip14.OperationCreate, kmip.CreateRequestPayload{ObjectType: kmip14.ObjectTypeSymmetricKey,
		TemplateAttribute: template(name, kmip14.CryptographicAlgorithmAES, bits)}))
	var p kmip.CreateResponsePayload
	if err := kmstest.Decode(it.ResponsePayload, &p); err != nil || p.UniqueIdentifier == "" {
		t.Fatalf("create response: %+v, %v", p, err)
	}
	return p.UniqueIdentifier
}

type locateReq struct {
	MaximumItems int `ttlv:",omitempty"`
	OffsetItems  int `ttlv:",omitempty"`
	Attribute    []kmip.Attribute
}

type locateResp struct {
	LocatedItems     int `ttlv:",omitempty"`
	UniqueIdentifier []string
}

func locate(t *testing.T, c *kmstest.RawConn, req locateReq) locateResp {
	t.Helper()
	it := ok(t)(c.One(kmip14.OperationLocate, req))
	var p locateResp
	if it.ResponsePayload != nil {
		if err := kmstest.Decode(it.ResponsePayload, &p); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func getKey(t *testing.T, c *kmstest.RawConn, uid string) kmip.KeyBlock {
	t.Helper()
	it := ok(t)(c.One(kmip14.OperationGet, kmip.GetRequestPayload{UniqueIdentifier: uid}))
	var p kmip.GetResponsePayload
	if err := kmstest.Decode(it.ResponsePayload, &p); err != nil || p.SymmetricKey == nil {
		t.Fatalf("get response: %+v, %v", p, err)
	}
	return p.SymmetricKey.KeyBlock
}

type attrsReq struct {
	UniqueIdentifier string
	AttributeName    []string
}

type attrsResp struct {
	UniqueIdentifier string
	Attribute        []kmip.Attribute
}

func attributes(t *testing.T, c *kmstest.RawConn, uid string, names ...string) map[string]any {
	t.Helper()
	it := ok(t)(c.One(kmip14.OperationGetAttributes, attrsReq{UniqueIdentifier: uid, AttributeName: names}))
	var p attrsResp
	if err := kmstest.Decode(it.ResponsePayload, &p); err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	for _, a := range p.Attribute {
		m[a.AttributeName] = a.AttributeValue
	}
	return m
}

func state(t *testing.T, c *kmstest.RawConn, uid string) kmip14.State {
	t.Helper()
	v, okv := attributes(t, c, uid, "State")["State"].(ttlv.EnumValue)
	if !okv {
		t.Fatalf("no State for %s", uid)
	}
	return kmip14.State(v)
}

type revokeReq struct {
	UniqueIdentifier string
	RevocationReason struct {
		RevocationReasonCode kmip14.RevocationReasonCode
	}
}

func revoke(t *testing.T, c *kmstest.RawConn, uid string, code kmip14.RevocationReasonCode) {
	t.Helper()
	var r revokeReq
	r.UniqueIdentifier = uid
	r.RevocationReason.RevocationReasonCode = code
	ok(t)(c.One(kmip14.OperationRevoke, r))
}

type uidReq struct {
	UniqueIdentifier string `ttlv:",omitempty"`
}

// tests -----------------------------------------------------------------------------------------------

func TestPersistenceAcrossRestart(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	a := env.CreateKey(t, "a")
	c := env.Dial(t)
	b := create(t, c, "b", 128)
	revoke(t, c, a, kmip14.RevocationReasonCodeCessationOfOperation)
	before := map[string][]byte{a: getKey(t, c, a).KeyValue.KeyMaterial.([]byte), b: getKey(t, c, b).KeyValue.KeyMaterial.([]byte)}
	keys := env.Server.Keys()

	fi, err := os.Stat(env.StorePath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("store mode %v, want 0600", fi.Mode().Perm())
	}

	env.Restart(t)
	if got := env.Server.Keys(); !slices.Equal(got, keys) {
		t.Fatalf("keys after restart:\n%+v\nbefore:\n%+v", got, keys)
	}
	if len(keys) != 2 || keys[0].UID != a || keys[0].Name != "a" || keys[0].State != "Deactivated" ||
		keys[1].UID != b || keys[1].State != "PreActive" || keys[1].Length != 128 {
		t.Fatalf("keys: %+v", keys)
	}
	c = env.Dial(t)
	for uid, m := range before {
		kb := getKey(t, c, uid)
		if !bytes.Equal(kb.KeyValue.KeyMaterial.([]byte), m) {
			t.Errorf("material of %s changed across restart", uid)
		}
	}
	if got := state(t, c, a); got != kmip14.StateDeactivated {
		t.Errorf("state of a after restart: %s", got)
	}
	// Sequence numbers continue, so Locate order stays newest first.
	d := create(t, c, "d", 256)
	if got := locate(t, c, locateReq{}).UniqueIdentifier; !slices.Equal(got, []string{d, b, a}) {
		t.Errorf("locate after restart: %v, want [%s %s %s]", got, d, b, a)
	}
}

func TestLocateFilters(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Dial(t)
	c.Minor = 4                     // Located Items is a 1.3+ field
	k1 := env.CreateKey(t, "same")  // active, 256
	k2 := create(t, c, "same", 128) // pre-active, 128
	k3 := env.CreateKey(t, "other") // active, 256
	k4 := env.CreateKey(t, "same")  // active, then compromised
	revoke(t, c, k4, kmip14.RevocationReasonCodeKeyCompromise)

	name := func(n string) kmip.Attribute {
		return kmip.Attribute{AttributeName: "Name", AttributeValue: kmip.Name{NameValue: n, NameType: kmip14.NameTypeUninterpretedTextString}}
	}
	attr := func(tag ttlv.Tag, v any) kmip.Attribute { return kmip.NewAttributeFromTag(tag, 0, v) }
	tests := []struct {
		name  string
		req   locateReq
		want  []string
		total int
	}{
		{"all, newest first", locateReq{}, []string{k4, k3, k2, k1}, 4},
		{"by name", locateReq{Attribute: []kmip.Attribute{name("same")}}, []string{k4, k2, k1}, 3},
		{"by name and type", locateReq{Attribute: []kmip.Attribute{name("other"), attr(kmip14.TagObjectType, kmip14.ObjectTypeSymmetricKey)}}, []string{k3}, 1},
		{"other object type", locateReq{Attribute: []kmip.Attribute{attr(kmip14.TagObjectType, kmip14.ObjectTypeCertificate)}}, nil, 0},
		{"by state active", locateReq{Attribute: []kmip.Attribute{attr(kmip14.TagState, kmip14.StateActive)}}, []string{k3, k1}, 2},
		{"by name and state", locateReq{Attribute: []kmip.Attribute{name("same"), attr(kmip14.TagState, kmip14.StateActive)}}, []string{k1}, 1},
		{"compromised", locateReq{Attribute: []kmip.Attribute{attr(kmip14.TagState, kmip14.StateCompromised)}}, []string{k4}, 1},
		{"by length", locateReq{Attribute: []kmip.Attribute{attr(kmip14.TagCryptographicLength, 128)}}, []string{k2}, 1},
		{"by algorithm", locateReq{Attribute: []kmip.Attribute{attr(kmip14.TagCryptographicAlgorithm, kmip14.CryptographicAlgorithmAES)}}, []string{k4, k3, k2, k1}, 4},
		{"maximum items", locateReq{MaximumItems: 2, Attribute: []kmip.Attribute{name("same")}}, []string{k4, k2}, 3},
		{"offset items", locateReq{OffsetItems: 1, MaximumItems: 1, Attribute: []kmip.Attribute{name("same")}}, []string{k2}, 3},
		{"offset past end", locateReq{OffsetItems: 9}, nil, 4},
		{"no match", locateReq{Attribute: []kmip.Attribute{name("nope")}}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := locate(t, c, tt.req)
			if !slices.Equal(got.UniqueIdentifier, tt.want) || got.LocatedItems != tt.total {
				t.Errorf("got %v (located %d), want %v (located %d)", got.UniqueIdentifier, got.LocatedItems, tt.want, tt.total)
			}
		})
	}
	it, err := c.One(kmip14.OperationLocate, locateReq{Attribute: []kmip.Attribute{attr(kmip14.TagContactInformation, "x")}})
	failed(t, it, err, kmip14.ResultReasonInvalidField, `filtering on "Contact Information" is not supported`)
	// 1.2 clients (PyKMIP) get no Located Items field.
	c.Minor = 2
	if got := locate(t, c, locateReq{}); got.LocatedItems != 0 || len(got.UniqueIdentifier) != 4 {
		t.Errorf("1.2 locate: %+v", got)
	}
}

func TestRevokeStates(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Dial(t)
	tests := []struct {
		name   string
		active bool
		codes  []kmip14.RevocationReasonCode
		want   kmip14.State
	}{
		{"active, superseded", true, []kmip14.RevocationReasonCode{kmip14.RevocationReasonCodeSuperseded}, kmip14.StateDeactivated},
		{"active, key compromise", true, []kmip14.RevocationReasonCode{kmip14.RevocationReasonCodeKeyCompromise}, kmip14.StateCompromised},
		{"pre-active, cessation", false, []kmip14.RevocationReasonCode{kmip14.RevocationReasonCodeCessationOfOperation}, kmip14.StateDeactivated},
		{"deactivated, then CA compromise", true, []kmip14.RevocationReasonCode{kmip14.RevocationReasonCodeUnspecified, kmip14.RevocationReasonCodeCACompromise}, kmip14.StateCompromised},
		{"compromised stays compromised", true, []kmip14.RevocationReasonCode{kmip14.RevocationReasonCodeKeyCompromise, kmip14.RevocationReasonCodeSuperseded}, kmip14.StateCompromised},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var uid string
			if tt.active {
				uid = env.CreateKey(t, tt.name)
			} else {
				uid = create(t, c, tt.name, 256)
			}
			for _, code := range tt.codes {
				revoke(t, c, uid, code)
			}
			if got := state(t, c, uid); got != tt.want {
				t.Fatalf("state %s, want %s", got, tt.want)
			}
			attrs := attributes(t, c, uid)
			if _, ok := attrs["Deactivation Date"]; !ok && tt.want == kmip14.StateDeactivated {
				t.Error("no Deactivation Date")
			}
			if _, ok := attrs["Compromise Date"]; !ok && tt.want == kmip14.StateCompromised {
				t.Error("no Compromise Date")
			}
			// Revoked keys can still be fetched, to decrypt old data.
			if kb := getKey(t, c, uid); len(kb.KeyValue.KeyMaterial.([]byte)) != 32 {
				t.Error("revoked key not fetchable")
			}
		})
	}
	var r revokeReq
	r.UniqueIdentifier = env.CreateKey(t, "x")
	it, err := c.One(kmip14.OperationRevoke, r)
	failed(t, it, err, kmip14.ResultReasonMissingData, "Revocation Reason")
}

func TestUnsupportedOperationKeepsConnection(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Dial(t)
	for _, op := range []kmip14.Operation{kmip14.OperationQuery, kmip14.OperationEncrypt, kmip14.OperationCheck, kmip14.Operation(0x7777)} {
		it, err := c.One(op, nil)
		failed(t, it, err, kmip14.ResultReasonOperationNotSupported, "not supported")
		if it.Operation != op {
			t.Errorf("answer names operation %s, want %s", it.Operation, op)
		}
	}
	// The same connection still works.
	it := ok(t)(c.One(kmip14.OperationDiscoverVersions, kmip.DiscoverVersionsRequestPayload{}))
	var dv kmip.DiscoverVersionsResponsePayload
	if err := kmstest.Decode(it.ResponsePayload, &dv); err != nil || len(dv.ProtocolVersion) != 5 || dv.ProtocolVersion[0] != (kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: 4}) {
		t.Fatalf("discover versions: %+v, %v", dv, err)
	}
	// A batch mixing supported and unsupported items answers each.
	resp, err := c.Do(kmstest.Item{Op: kmip14.OperationQuery}, kmstest.Item{Op: kmip14.OperationLocate, Payload: locateReq{}})
	if err != nil || len(resp.BatchItem) != 2 || resp.BatchItem[0].ResultReason != kmip14.ResultReasonOperationNotSupported ||
		resp.BatchItem[1].ResultStatus != kmip14.ResultStatusSuccess {
		t.Fatalf("mixed batch: %+v, %v", resp, err)
	}
}

func TestInvalidMessagesAreAnswered(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Dial(t)
	notARequest, _ := ttlv.Marshal(kmip.Name{NameValue: "x", NameType: kmip14.NameTypeUninterpretedTextString})
	v2, _ := ttlv.Marshal(kmip.RequestMessage{RequestHeader: kmip.RequestHeader{
		ProtocolVersion: kmip.ProtocolVersion{ProtocolVersionMajor: 2, ProtocolVersionMinor: 0}, BatchCount: 1},
		BatchItem: []kmip.RequestBatchItem{{Operation: kmip14.OperationDiscoverVersions}}})
	// A Locate whose Maximum Items is a text string: the payload does not decode.
	badPayload, _ := ttlv.Marshal(kmip.RequestMessage{RequestHeader: kmip.RequestHeader{
		ProtocolVersion: kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: 2}, BatchCount: 1},
		BatchItem: []kmip.RequestBatchItem{{Operation: kmip14.OperationLocate, RequestPayload: struct {
			MaximumItems string
		}{"many"}}}})
	tests := []struct {
		name string
		msg  []byte
		want string
	}{
		{"not a request message", notARequest, "invalid request message"},
		{"KMIP 2.0", v2, "protocol version 2.0 is not supported"},
		{"undecodable payload", badPayload, "locate: decode request payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := c.RoundTrip(tt.msg)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			var resp kmip.ResponseMessage
			if err := ttlv.Unmarshal(raw, &resp); err != nil {
				t.Fatal(err)
			}
			if len(resp.BatchItem) != 1 {
				t.Fatalf("%d items", len(resp.BatchItem))
			}
			failed(t, resp.BatchItem[0], nil, kmip14.ResultReasonInvalidMessage, tt.want)
			ok(t)(c.One(kmip14.OperationDiscoverVersions, nil)) // connection still usable
		})
	}
}

func TestBrokenFramingClosesOnlyThatConnection(t *testing.T) {
	env := kmstest.Start(t, kmstest.WarnLogger(t))
	c := env.Dial(t)
	if _, err := c.RoundTrip([]byte{0x42, 0x00, 0x78, 0x01, 0x7f, 0xff, 0xff, 0xf8}); !errors.Is(err, io.EOF) {
		t.Fatalf("a 2 GiB length claim: %v, want the connection closed", err)
	}
	ok(t)(env.Dial(t).One(kmip14.OperationDiscoverVersions, nil))
}

func TestResponsesSuitPyKMIP(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	for _, minor := range []int{0, 2, 4} {
		c := env.Dial(t)
		c.Minor = minor
		resp, err := c.Do(kmstest.Item{Op: kmip14.OperationDiscoverVersions})
		if err != nil {
			t.Fatal(err)
		}
		h := resp.ResponseHeader
		if h.ServerCorrelationValue != "" {
			t.Errorf("1.%d: response carries Server Correlation Value %q, which PyKMIP 0.10 cannot parse", minor, h.ServerCorrelationValue)
		}
		if h.ProtocolVersion != (kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: minor}) {
			t.Errorf("1.%d request answered as %+v", minor, h.ProtocolVersion)
		}
		if time.Since(h.TimeStamp) > time.Minute {
			t.Errorf("time stamp %v", h.TimeStamp)
		}
	}
}

func TestCreateRegisterGet(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Dial(t)
	for _, bits := range []int{128, 192, 256} {
		uid := create(t, c, "k", bits)
		kb := getKey(t, c, uid)
		if m := kb.KeyValue.KeyMaterial.([]byte); len(m)*8 != bits || kb.CryptographicLength != bits ||
			kb.CryptographicAlgorithm != kmip14.CryptographicAlgorithmAES || kb.KeyFormatType != kmip14.KeyFormatTypeRaw {
			t.Errorf("%d-bit key: %+v", bits, kb)
		}
	}
	// Length defaults to 256.
	if kb := getKey(t, c, create(t, c, "", 0)); kb.CryptographicLength != 256 {
		t.Errorf("default length %d", kb.CryptographicLength)
	}
	tests := []struct {
		name   string
		typ    kmip14.ObjectType
		tmpl   kmip.TemplateAttribute
		reason kmip14.ResultReason
		msg    string
	}{
		{"512 bits", kmip14.ObjectTypeSymmetricKey, template("x", kmip14.CryptographicAlgorithmAES, 512), kmip14.ResultReasonInvalidField, "Cryptographic Length 512"},
		{"no algorithm", kmip14.ObjectTypeSymmetricKey, template("x", 0, 256), kmip14.ResultReasonInvalidField, "only AES"},
		{"RSA", kmip14.ObjectTypeSymmetricKey, template("x", kmip14.CryptographicAlgorithmRSA, 256), kmip14.ResultReasonInvalidField, "only AES"},
		{"certificate", kmip14.ObjectTypeCertificate, template("x", kmip14.CryptographicAlgorithmAES, 256), kmip14.ResultReasonInvalidField, "only Symmetric Key"},
		{"unknown attribute", kmip14.ObjectTypeSymmetricKey, func() kmip.TemplateAttribute {
			t := template("x", kmip14.CryptographicAlgorithmAES, 256)
			t.Append(kmip14.TagState, kmip14.StateActive)
			return t
		}(), kmip14.ResultReasonInvalidField, `attribute "State" cannot be set`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			it, err := c.One(kmip14.OperationCreate, kmip.CreateRequestPayload{ObjectType: tt.typ, TemplateAttribute: tt.tmpl})
			failed(t, it, err, tt.reason, tt.msg)
		})
	}
	// PyKMIP sends Operation Policy Name; it is accepted.
	tmpl := template("policy", kmip14.CryptographicAlgorithmAES, 256)
	tmpl.Append(kmip14.TagOperationPolicyName, "default")
	tmpl.Append(kmip14.TagCryptographicUsageMask, kmip14.CryptographicUsageMaskEncrypt)
	it := ok(t)(c.One(kmip14.OperationCreate, kmip.CreateRequestPayload{ObjectType: kmip14.ObjectTypeSymmetricKey, TemplateAttribute: tmpl}))
	var cr kmip.CreateResponsePayload
	_ = kmstest.Decode(it.ResponsePayload, &cr)
	if m, _ := attributes(t, c, cr.UniqueIdentifier, "Cryptographic Usage Mask")["Cryptographic Usage Mask"].(int32); m != int32(kmip14.CryptographicUsageMaskEncrypt) {
		t.Errorf("usage mask %v", m)
	}

	// Register raw material, then Get returns it.
	material := bytes.Repeat([]byte{0x5a}, 32)
	reg := kmip.RegisterRequestPayload{ObjectType: kmip14.ObjectTypeSymmetricKey, TemplateAttribute: template("registered", 0, 0),
		SymmetricKey: &kmip.SymmetricKey{KeyBlock: kmip.KeyBlock{KeyFormatType: kmip14.KeyFormatTypeRaw,
			KeyValue: &kmip.KeyValue{KeyMaterial: material}, CryptographicAlgorithm: kmip14.CryptographicAlgorithmAES, CryptographicLength: 256}}}
	it = ok(t)(c.One(kmip14.OperationRegister, reg))
	var rr struct{ UniqueIdentifier string }
	if err := kmstest.Decode(it.ResponsePayload, &rr); err != nil {
		t.Fatal(err)
	}
	if kb := getKey(t, c, rr.UniqueIdentifier); !bytes.Equal(kb.KeyValue.KeyMaterial.([]byte), material) {
		t.Fatal("registered material not returned")
	}
	if s := state(t, c, rr.UniqueIdentifier); s != kmip14.StatePreActive {
		t.Errorf("registered key is %s", s)
	}
	reg.SymmetricKey.KeyBlock.KeyValue.KeyMaterial = material[:20]
	reg.SymmetricKey.KeyBlock.CryptographicLength = 0
	it, err := c.One(kmip14.OperationRegister, reg)
	failed(t, it, err, kmip14.ResultReasonInvalidField, "20 bytes")

	// Get in Transparent Symmetric Key format.
	type getReq struct {
		UniqueIdentifier string
		KeyFormatType    kmip14.KeyFormatType
	}
	it = ok(t)(c.One(kmip14.OperationGet, getReq{rr.UniqueIdentifier, kmip14.KeyFormatTypeTransparentSymmetricKey}))
	var gr kmip.GetResponsePayload
	if err := kmstest.Decode(it.ResponsePayload, &gr); err != nil {
		t.Fatal(err)
	}
	var tk kmip.TransparentSymmetricKey
	if err := kmstest.Decode(gr.SymmetricKey.KeyBlock.KeyValue.KeyMaterial, &tk); err != nil || !bytes.Equal(tk.Key, material) {
		t.Fatalf("transparent key: %x, %v", tk.Key, err)
	}
	it, err = c.One(kmip14.OperationGet, getReq{rr.UniqueIdentifier, kmip14.KeyFormatTypePKCS_8})
	failed(t, it, err, kmip14.ResultReasonKeyFormatTypeNotSupported, "PKCS")
	it, err = c.One(kmip14.OperationGet, getReq{"no-such-uid", 0})
	failed(t, it, err, kmip14.ResultReasonItemNotFound, "no-such-uid")
}

func TestBatchWithIDPlaceholder(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Dial(t)
	resp, err := c.Do(
		kmstest.Item{Op: kmip14.OperationCreate, Payload: kmip.CreateRequestPayload{ObjectType: kmip14.ObjectTypeSymmetricKey,
			TemplateAttribute: template("batched", kmip14.CryptographicAlgorithmAES, 256)}},
		kmstest.Item{Op: kmip14.OperationActivate, Payload: uidReq{}},
		kmstest.Item{Op: kmip14.OperationGetAttributes, Payload: attrsReq{AttributeName: []string{"State"}}},
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range resp.BatchItem {
		okItem(t, it)
	}
	var ar attrsResp
	if err := kmstest.Decode(resp.BatchItem[2].ResponsePayload, &ar); err != nil || len(ar.Attribute) != 1 ||
		ar.Attribute[0].AttributeValue != ttlv.EnumValue(kmip14.StateActive) {
		t.Fatalf("state after batched create+activate: %+v, %v", ar, err)
	}
	it, err := c.One(kmip14.OperationActivate, uidReq{})
	failed(t, it, err, kmip14.ResultReasonMissingData, "no unique identifier")
	it, err = c.One(kmip14.OperationActivate, uidReq{ar.UniqueIdentifier})
	failed(t, it, err, kmip14.ResultReasonPermissionDenied, "not Pre-Active")
}

func TestGetAttributes(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Dial(t)
	uid := env.CreateKey(t, "pykmip-mybucketkey")
	all := attributes(t, c, uid)
	for _, name := range []string{"Unique Identifier", "Name", "Object Type", "Cryptographic Algorithm", "Cryptographic Length",
		"Cryptographic Usage Mask", "State", "Initial Date", "Activation Date", "Last Change Date"} {
		if _, ok := all[name]; !ok {
			t.Errorf("attribute %q missing", name)
		}
	}
	checks := map[string]any{
		"Unique Identifier":        uid,
		"Object Type":              ttlv.EnumValue(kmip14.ObjectTypeSymmetricKey),
		"Cryptographic Algorithm":  ttlv.EnumValue(kmip14.CryptographicAlgorithmAES),
		"Cryptographic Length":     int32(256),
		"Cryptographic Usage Mask": int32(kmip14.CryptographicUsageMaskEncrypt | kmip14.CryptographicUsageMaskDecrypt),
		"State":                    ttlv.EnumValue(kmip14.StateActive),
	}
	for name, want := range checks {
		if all[name] != want {
			t.Errorf("%s = %v (%T), want %v", name, all[name], all[name], want)
		}
	}
	var n kmip.Name
	if err := kmstest.Decode(all["Name"], &n); err != nil || n.NameValue != "pykmip-mybucketkey" {
		t.Errorf("Name = %+v, %v", n, err)
	}
	if d, ok := all["Initial Date"].(time.Time); !ok || time.Since(d) > time.Minute {
		t.Errorf("Initial Date = %v", all["Initial Date"])
	}
	if some := attributes(t, c, uid, "State", "Name", "No Such Attribute"); len(some) != 2 {
		t.Errorf("asked for 2 known attributes, got %v", some)
	}
}

func TestDestroy(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Dial(t)
	uid := env.CreateKey(t, "k")
	it, err := c.One(kmip14.OperationDestroy, uidReq{uid})
	failed(t, it, err, kmip14.ResultReasonPermissionDenied, "revoke it first")
	revoke(t, c, uid, kmip14.RevocationReasonCodeCessationOfOperation)
	ok(t)(c.One(kmip14.OperationDestroy, uidReq{uid}))
	it, err = c.One(kmip14.OperationGet, kmip.GetRequestPayload{UniqueIdentifier: uid})
	failed(t, it, err, kmip14.ResultReasonItemNotFound, uid)
	if len(env.Server.Keys()) != 0 {
		t.Fatal("destroyed key still listed")
	}
	env.Restart(t)
	if len(env.Server.Keys()) != 0 {
		t.Fatal("destroyed key came back after restart")
	}
	if data, _ := os.ReadFile(env.StorePath); bytes.Contains(data, []byte(uid)) {
		t.Fatal("destroyed key still in the store file")
	}
}

func TestStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.json")
	s, err := kmipserver.New(path, kmipserver.Options{Logger: kmstest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kmipserver.New(path, kmipserver.Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second server on the same store: %v", err)
	}
	uid, err := s.CreateKey("k")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateKey("late"); !errors.Is(err, kmipserver.ErrServerClosed) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("CreateKey after Close: %v", err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data string
		want string
	}{
		{"empty", "", "parse"},
		{"truncated", string(good[:len(good)/2]), "parse"},
		{"future version", strings.Replace(string(good), `"version": 1`, `"version": 2`, 1), "format version 2"},
		{"bad state", strings.Replace(string(good), `"Active"`, `"Sleeping"`, 1), `state "Sleeping"`},
		{"bad length", strings.Replace(string(good), `"length": 256`, `"length": 128`, 1), "length 128 bits with 32 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "keys.json")
			if err := os.WriteFile(p, []byte(tt.data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := kmipserver.New(p, kmipserver.Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if data, _ := os.ReadFile(p); string(data) != tt.data {
				t.Fatal("a store that does not load was modified")
			}
		})
	}
	s, err = kmipserver.New(path, kmipserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if keys := s.Keys(); len(keys) != 1 || keys[0].UID != uid || keys[0].State != "Active" || keys[0].Name != "k" {
		t.Fatalf("reopened store: %+v", keys)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".keys.json.tmp-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestCloseClosesConnections(t *testing.T) {
	env := kmstest.Start(t, kmstest.Logger(t))
	c := env.Dial(t)
	ok(t)(c.One(kmip14.OperationDiscoverVersions, nil))
	start := time.Now()
	env.Stop(t)
	if _, err := c.One(kmip14.OperationDiscoverVersions, nil); err == nil {
		t.Fatal("connection still answers after Close")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("close took %v", d)
	}
}
