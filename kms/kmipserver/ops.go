package kmipserver

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gemalto/kmip-go"
	"github.com/gemalto/kmip-go/kmip14"
	"github.com/gemalto/kmip-go/ttlv"

	"github.com/kmipfs/kmipfs/kms/internal/wire"
)

// kmipError is a failed batch item: every error a handler returns is one (or becomes one, as General
// Failure), because kmip-go's OperationMux panics, and so drops the connection, on an error without a
// Result Reason.
type kmipError struct {
	reason kmip14.ResultReason
	msg    string
}

func (e *kmipError) Error() string { return e.msg }

func fail(reason kmip14.ResultReason, format string, args ...any) error {
	return &kmipError{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// errorItem is the OperationMux ErrorHandler. It never returns nil, so the mux never panics.
func errorItem(err error) *kmip.ResponseBatchItem {
	reason, msg := kmip14.ResultReasonGeneralFailure, err.Error()
	var ke *kmipError
	if errors.As(err, &ke) {
		reason = ke.reason
	}
	return &kmip.ResponseBatchItem{ResultStatus: kmip14.ResultStatusOperationFailed, ResultReason: reason, ResultMessage: msg}
}

// opFunc handles one batch item and returns its response payload.
type opFunc func(ctx context.Context, req *kmip.Request) (any, error)

// register installs the handlers. Each is wrapped so that a panic becomes a General Failure item instead
// of a dropped connection.
func (s *Server) register() {
	ops := map[kmip14.Operation]kmip.ItemHandler{
		kmip14.OperationDiscoverVersions: s.payloadHandler(s.discoverVersions),
		kmip14.OperationCreate:           s.payloadHandler(s.create),
		kmip14.OperationRegister:         s.payloadHandler(s.registerKey),
		kmip14.OperationActivate:         s.payloadHandler(s.activate),
		kmip14.OperationLocate:           s.payloadHandler(s.locate),
		kmip14.OperationGet:              s.payloadHandler(s.getKey),
		kmip14.OperationGetAttributes:    s.payloadHandler(s.getAttributes),
		kmip14.OperationDestroy:          s.payloadHandler(s.destroy),
		kmip14.OperationRevoke:           s.payloadHandler(s.revoke),
	}
	for op, h := range ops {
		s.mux.Handle(op, s.guard(op, h))
	}
}

func (s *Server) payloadHandler(f opFunc) kmip.ItemHandler {
	return kmip.ItemHandlerFunc(func(ctx context.Context, req *kmip.Request) (*kmip.ResponseBatchItem, error) {
		p, err := f(ctx, req)
		if err != nil {
			return nil, err
		}
		return &kmip.ResponseBatchItem{ResponsePayload: p}, nil
	})
}

func (s *Server) guard(op kmip14.Operation, h kmip.ItemHandler) kmip.ItemHandler {
	return kmip.ItemHandlerFunc(func(ctx context.Context, req *kmip.Request) (item *kmip.ResponseBatchItem, err error) {
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("kmipserver: panic in handler", "op", op.String(), "panic", fmt.Sprint(r))
				item, err = nil, fail(kmip14.ResultReasonGeneralFailure, "%s: internal server error", op)
			}
		}()
		item, err = h.HandleItem(ctx, req)
		var ke *kmipError
		switch {
		case err == nil:
		case errors.As(err, &ke):
			s.log.Debug("kmipserver: request failed", "op", op.String(), "remote", req.RemoteAddr, "err", err)
		case errors.Is(err, ErrServerClosed):
			err = fail(kmip14.ResultReasonGeneralFailure, "%s: server is shutting down", op)
		default:
			// A store write failed, or similar: the detail (paths) is for the server log, not the client.
			s.log.Error("kmipserver: request failed", "op", op.String(), "remote", req.RemoteAddr, "err", err)
			err = fail(kmip14.ResultReasonGeneralFailure, "%s: internal server error", op)
		}
		return item, err
	})
}

// decode decodes the current batch item's payload into v.
func decode(req *kmip.Request, op string, v any) error {
	if err := req.DecodePayload(v); err != nil {
		return fail(kmip14.ResultReasonInvalidMessage, "%s: decode request payload: %v", op, err)
	}
	return nil
}

// target resolves the object a request is about: its Unique Identifier, or the ID placeholder set by an
// earlier item of the same batch (so Create + Activate can go in one message).
func (s *Server) target(req *kmip.Request, op, uid string) (*object, error) {
	if uid == "" {
		uid = req.IDPlaceholder
	}
	if uid == "" {
		return nil, fail(kmip14.ResultReasonMissingData, "%s: no unique identifier and no ID placeholder", op)
	}
	o := s.get(uid)
	if o == nil {
		return nil, fail(kmip14.ResultReasonItemNotFound, "%s: no object with unique identifier %q", op, uid)
	}
	return o, nil
}

// clientMinor is the KMIP 1.x minor version of the request.
func clientMinor(req *kmip.Request) int {
	if req.Message == nil {
		return 0
	}
	return req.Message.RequestHeader.ProtocolVersion.ProtocolVersionMinor
}

// ignoredAttributes may appear in a Create or Register template and are accepted without being stored:
// PyKMIP clients send Operation Policy Name, and the others carry no meaning for this server. Anything
// else unknown is refused rather than silently dropped.
var ignoredAttributes = map[string]bool{
	"Operation Policy Name":            true,
	"Object Group":                     true,
	"Contact Information":              true,
	"Application Specific Information": true,
	"Cryptographic Parameters":         true,
	"Sensitive":                        true,
	"Extractable":                      true,
	"Description":                      true,
	"Comment":                          true,
}

// parseTemplate reads the attributes of a Create or Register template into spec.
func parseTemplate(op string, attrs []kmip.Attribute, spec *keySpec) error {
	for _, a := range attrs {
		v := a.AttributeValue
		switch a.AttributeName {
		case "Name":
			n, ok := wire.Name(v)
			if !ok || n.NameValue == "" {
				return fail(kmip14.ResultReasonInvalidField, "%s: Name attribute has no name value", op)
			}
			if spec.name != "" && spec.name != n.NameValue {
				return fail(kmip14.ResultReasonInvalidField, "%s: more than one Name is not supported", op)
			}
			spec.name = n.NameValue
		case "Cryptographic Algorithm":
			u, ok := wire.Uint32(v)
			if !ok {
				return fail(kmip14.ResultReasonInvalidField, "%s: Cryptographic Algorithm is a %T", op, v)
			}
			spec.algorithm = kmip14.CryptographicAlgorithm(u)
		case "Cryptographic Length":
			n, ok := wire.Int(v)
			if !ok {
				return fail(kmip14.ResultReasonInvalidField, "%s: Cryptographic Length is a %T", op, v)
			}
			spec.length = n
		case "Cryptographic Usage Mask":
			u, ok := wire.Uint32(v)
			if !ok {
				return fail(kmip14.ResultReasonInvalidField, "%s: Cryptographic Usage Mask is a %T", op, v)
			}
			spec.usageMask = u
		default:
			if !ignoredAttributes[a.AttributeName] && !strings.HasPrefix(a.AttributeName, "x-") && !strings.HasPrefix(a.AttributeName, "y-") {
				return fail(kmip14.ResultReasonInvalidField, "%s: attribute %q cannot be set on this server", op, a.AttributeName)
			}
		}
	}
	if spec.algorithm != kmip14.CryptographicAlgorithmAES {
		return fail(kmip14.ResultReasonInvalidField, "%s: Cryptographic Algorithm %s is not supported; only AES", op, spec.algorithm)
	}
	return nil
}

func defaultUsage(spec *keySpec) {
	if spec.usageMask == 0 {
		spec.usageMask = uint32(kmip14.CryptographicUsageMaskEncrypt | kmip14.CryptographicUsageMaskDecrypt)
	}
}

// supportedVersions are the protocol versions Discover Versions offers, newest first.
var supportedVersions = []kmip.ProtocolVersion{
	{ProtocolVersionMajor: 1, ProtocolVersionMinor: 4},
	{ProtocolVersionMajor: 1, ProtocolVersionMinor: 3},
	{ProtocolVersionMajor: 1, ProtocolVersionMinor: 2},
	{ProtocolVersionMajor: 1, ProtocolVersionMinor: 1},
	{ProtocolVersionMajor: 1, ProtocolVersionMinor: 0},
}

// discoverVersions handles Discover Versions: the supported versions, or those of the client's list that
// are supported, in the server's order of preference.
func (s *Server) discoverVersions(_ context.Context, req *kmip.Request) (any, error) {
	var p kmip.DiscoverVersionsRequestPayload
	if err := decode(req, "discover versions", &p); err != nil {
		return nil, err
	}
	resp := kmip.DiscoverVersionsResponsePayload{ProtocolVersion: supportedVersions}
	if len(p.ProtocolVersion) > 0 {
		resp.ProtocolVersion = nil
		for _, v := range supportedVersions {
			if slices.Contains(p.ProtocolVersion, v) {
				resp.ProtocolVersion = append(resp.ProtocolVersion, v)
			}
		}
	}
	return resp, nil
}

// create handles Create: a new AES SymmetricKey of 128, 192 or 256 bits (256 if unspecified), Pre-Active.
func (s *Server) create(_ context.Context, req *kmip.Request) (any, error) {
	var p kmip.CreateRequestPayload
	if err := decode(req, "create", &p); err != nil {
		return nil, err
	}
	if p.ObjectType != kmip14.ObjectTypeSymmetricKey {
		return nil, fail(kmip14.ResultReasonInvalidField, "create: object type %s is not supported; only Symmetric Key", p.ObjectType)
	}
	if len(p.TemplateAttribute.Name) > 0 {
		return nil, fail(kmip14.ResultReasonItemNotFound, "create: templates are not supported (template %q)", p.TemplateAttribute.Name[0].NameValue)
	}
	var spec keySpec
	if err := parseTemplate("create", p.TemplateAttribute.Attribute, &spec); err != nil {
		return nil, err
	}
	if spec.length == 0 {
		spec.length = 256
	}
	if !validAESLength(spec.length) {
		return nil, fail(kmip14.ResultReasonInvalidField, "create: Cryptographic Length %d is not an AES key length (128, 192, 256)", spec.length)
	}
	defaultUsage(&spec)
	material := make([]byte, spec.length/8)
	if _, err := rand.Read(material); err != nil {
		return nil, fail(kmip14.ResultReasonCryptographicFailure, "create: random: %v", err)
	}
	o, err := s.add(spec, material, false)
	if err != nil {
		return nil, err
	}
	req.IDPlaceholder = o.uid
	s.log.Info("kmipserver: key created", "name", o.name, "uid", o.uid, "bits", o.length, "remote", req.RemoteAddr)
	return kmip.CreateResponsePayload{ObjectType: kmip14.ObjectTypeSymmetricKey, UniqueIdentifier: o.uid}, nil
}

// registerKey handles Register of a SymmetricKey given as Raw or Transparent Symmetric Key material.
func (s *Server) registerKey(_ context.Context, req *kmip.Request) (any, error) {
	var p kmip.RegisterRequestPayload
	if err := decode(req, "register", &p); err != nil {
		return nil, err
	}
	if p.ObjectType != kmip14.ObjectTypeSymmetricKey || p.SymmetricKey == nil {
		return nil, fail(kmip14.ResultReasonInvalidField, "register: object type %s is not supported; only Symmetric Key", p.ObjectType)
	}
	kb := p.SymmetricKey.KeyBlock
	if kb.KeyWrappingData != nil {
		return nil, fail(kmip14.ResultReasonFeatureNotSupported, "register: wrapped key material is not supported")
	}
	if kb.KeyValue == nil {
		return nil, fail(kmip14.ResultReasonKeyValueNotPresent, "register: no key value")
	}
	var material []byte
	switch kb.KeyFormatType {
	case kmip14.KeyFormatTypeRaw:
		b, ok := wire.Bytes(kb.KeyValue.KeyMaterial)
		if !ok {
			return nil, fail(kmip14.ResultReasonInvalidField, "register: raw key material is a %T", kb.KeyValue.KeyMaterial)
		}
		material = b
	case kmip14.KeyFormatTypeTransparentSymmetricKey:
		t, ok := kb.KeyValue.KeyMaterial.(ttlv.TTLV)
		if !ok {
			return nil, fail(kmip14.ResultReasonInvalidField, "register: transparent key material is a %T", kb.KeyValue.KeyMaterial)
		}
		var tk kmip.TransparentSymmetricKey
		if err := wire.Unmarshal(t, &tk); err != nil {
			return nil, fail(kmip14.ResultReasonInvalidField, "register: transparent key material: %v", err)
		}
		material = tk.Key
	default:
		return nil, fail(kmip14.ResultReasonKeyFormatTypeNotSupported, "register: key format %s is not supported; use Raw", kb.KeyFormatType)
	}
	spec := keySpec{algorithm: kb.CryptographicAlgorithm, length: kb.CryptographicLength}
	if err := parseTemplate("register", p.TemplateAttribute.Attribute, &spec); err != nil {
		return nil, err
	}
	if bits := len(material) * 8; !validAESLength(bits) || (spec.length != 0 && spec.length != bits) {
		return nil, fail(kmip14.ResultReasonInvalidField, "register: %d bytes of key material do not make an AES key of length %d", len(material), spec.length)
	}
	spec.length = len(material) * 8
	defaultUsage(&spec)
	o, err := s.add(spec, bytes.Clone(material), false)
	if err != nil {
		return nil, err
	}
	req.IDPlaceholder = o.uid
	s.log.Info("kmipserver: key registered", "name", o.name, "uid", o.uid, "bits", o.length, "remote", req.RemoteAddr)
	return wire.RegisterResponsePayload{UniqueIdentifier: o.uid}, nil
}

// activate handles Activate: Pre-Active becomes Active.
func (s *Server) activate(_ context.Context, req *kmip.Request) (any, error) {
	var p wire.ActivateRequestPayload
	if err := decode(req, "activate", &p); err != nil {
		return nil, err
	}
	o, err := s.change(req, "activate", p.UniqueIdentifier, func(o *object, now time.Time) error {
		if o.state != kmip14.StatePreActive {
			return fail(kmip14.ResultReasonPermissionDenied, "activate: object %s is %s, not Pre-Active", o.uid, o.state)
		}
		o.state, o.activation = kmip14.StateActive, now
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("kmipserver: key activated", "name", o.name, "uid", o.uid)
	return wire.ActivateResponsePayload{UniqueIdentifier: o.uid}, nil
}

// revoke handles Revoke: Key Compromise and CA Compromise make the object Compromised; any other reason
// makes a Pre-Active or Active object Deactivated and leaves a Deactivated or Compromised one as it is.
func (s *Server) revoke(_ context.Context, req *kmip.Request) (any, error) {
	var p wire.RevokeRequestPayload
	if err := decode(req, "revoke", &p); err != nil {
		return nil, err
	}
	code := p.RevocationReason.RevocationReasonCode
	if code == 0 {
		return nil, fail(kmip14.ResultReasonMissingData, "revoke: a Revocation Reason is required")
	}
	o, err := s.change(req, "revoke", p.UniqueIdentifier, func(o *object, now time.Time) error {
		switch {
		case code == kmip14.RevocationReasonCodeKeyCompromise || code == kmip14.RevocationReasonCodeCACompromise:
			if o.state != kmip14.StateCompromised {
				o.state, o.compromise = kmip14.StateCompromised, now
			}
		case o.state == kmip14.StatePreActive || o.state == kmip14.StateActive:
			o.state, o.deactivation = kmip14.StateDeactivated, now
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("kmipserver: key revoked", "name", o.name, "uid", o.uid, "reason", code.String(), "state", o.state.String())
	return wire.RevokeResponsePayload{UniqueIdentifier: o.uid}, nil
}

// destroy handles Destroy. As KMIP requires, an Active object must be revoked first. The object and its
// material are deleted from the store.
func (s *Server) destroy(_ context.Context, req *kmip.Request) (any, error) {
	var p kmip.DestroyRequestPayload
	if err := decode(req, "destroy", &p); err != nil {
		return nil, err
	}
	var gone *object
	err := s.mutate(func(objs map[string]*object, _ uint64) error {
		o, err := s.target(req, "destroy", p.UniqueIdentifier)
		if err != nil {
			return err
		}
		if o.state == kmip14.StateActive {
			return fail(kmip14.ResultReasonPermissionDenied, "destroy: object %s is Active; revoke it first", o.uid)
		}
		delete(objs, o.uid)
		gone = o
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("kmipserver: key destroyed", "name", gone.name, "uid", gone.uid)
	return kmip.DestroyResponsePayload{UniqueIdentifier: gone.uid}, nil
}

// change applies fn to a copy of the target object and stores it.
func (s *Server) change(req *kmip.Request, op, uid string, fn func(o *object, now time.Time) error) (*object, error) {
	var changed *object
	err := s.mutate(func(objs map[string]*object, _ uint64) error {
		o, err := s.target(req, op, uid)
		if err != nil {
			return err
		}
		c := *o
		now := time.Now().UTC().Truncate(time.Second)
		if err := fn(&c, now); err != nil {
			return err
		}
		c.lastChange = now
		objs[c.uid] = &c
		changed = &c
		return nil
	})
	return changed, err
}

// locate handles Locate with filters on Name, Object Type, State, Cryptographic Algorithm and
// Cryptographic Length (all must match), newest first, honouring Offset Items and Maximum Items.
func (s *Server) locate(_ context.Context, req *kmip.Request) (any, error) {
	var p wire.LocateRequestPayload
	if err := decode(req, "locate", &p); err != nil {
		return nil, err
	}
	var preds []func(*object) bool
	for _, a := range p.Attribute {
		v := a.AttributeValue
		switch a.AttributeName {
		case "Name":
			n, ok := wire.Name(v)
			if !ok {
				return nil, fail(kmip14.ResultReasonInvalidField, "locate: Name filter is a %T", v)
			}
			preds = append(preds, func(o *object) bool { return o.name == n.NameValue })
		case "Object Type":
			u, ok := wire.Uint32(v)
			if !ok {
				return nil, fail(kmip14.ResultReasonInvalidField, "locate: Object Type filter is a %T", v)
			}
			preds = append(preds, func(*object) bool { return kmip14.ObjectType(u) == kmip14.ObjectTypeSymmetricKey })
		case "State":
			u, ok := wire.Uint32(v)
			if !ok {
				return nil, fail(kmip14.ResultReasonInvalidField, "locate: State filter is a %T", v)
			}
			preds = append(preds, func(o *object) bool { return o.state == kmip14.State(u) })
		case "Cryptographic Algorithm":
			u, ok := wire.Uint32(v)
			if !ok {
				return nil, fail(kmip14.ResultReasonInvalidField, "locate: Cryptographic Algorithm filter is a %T", v)
			}
			preds = append(preds, func(o *object) bool { return o.algorithm == kmip14.CryptographicAlgorithm(u) })
		case "Cryptographic Length":
			n, ok := wire.Int(v)
			if !ok {
				return nil, fail(kmip14.ResultReasonInvalidField, "locate: Cryptographic Length filter is a %T", v)
			}
			preds = append(preds, func(o *object) bool { return o.length == n })
		default:
			return nil, fail(kmip14.ResultReasonInvalidField, "locate: filtering on %q is not supported", a.AttributeName)
		}
	}
	if p.MaximumItems < 0 || p.OffsetItems < 0 {
		return nil, fail(kmip14.ResultReasonInvalidField, "locate: negative Maximum Items or Offset Items")
	}
	var found []*object
	for _, o := range s.snapshot() {
		if !slices.ContainsFunc(preds, func(p func(*object) bool) bool { return !p(o) }) {
			found = append(found, o)
		}
	}
	slices.SortFunc(found, func(a, b *object) int { return cmp.Compare(b.seq, a.seq) })
	total := len(found)
	found = found[min(p.OffsetItems, len(found)):]
	if p.MaximumItems > 0 && len(found) > p.MaximumItems {
		found = found[:p.MaximumItems]
	}
	resp := wire.LocateResponsePayload{UniqueIdentifier: make([]string, 0, len(found))}
	for _, o := range found {
		resp.UniqueIdentifier = append(resp.UniqueIdentifier, o.uid)
	}
	if clientMinor(req) >= 3 {
		resp.LocatedItems = total
	}
	if len(resp.UniqueIdentifier) == 1 {
		req.IDPlaceholder = resp.UniqueIdentifier[0]
	}
	return resp, nil
}

// getKey handles Get: the key block in Raw (default) or Transparent Symmetric Key format, unwrapped.
func (s *Server) getKey(_ context.Context, req *kmip.Request) (any, error) {
	var p wire.GetRequestPayload
	if err := decode(req, "get", &p); err != nil {
		return nil, err
	}
	o, err := s.target(req, "get", p.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	if p.KeyWrappingSpecification != nil || p.KeyWrapType != 0 {
		return nil, fail(kmip14.ResultReasonFeatureNotSupported, "get: key wrapping is not supported")
	}
	kb := kmip.KeyBlock{CryptographicAlgorithm: o.algorithm, CryptographicLength: o.length}
	switch p.KeyFormatType {
	case 0, kmip14.KeyFormatTypeRaw:
		kb.KeyFormatType = kmip14.KeyFormatTypeRaw
		kb.KeyValue = &kmip.KeyValue{KeyMaterial: bytes.Clone(o.material)}
	case kmip14.KeyFormatTypeTransparentSymmetricKey:
		kb.KeyFormatType = kmip14.KeyFormatTypeTransparentSymmetricKey
		kb.KeyValue = &kmip.KeyValue{KeyMaterial: kmip.TransparentSymmetricKey{Key: bytes.Clone(o.material)}}
	default:
		return nil, fail(kmip14.ResultReasonKeyFormatTypeNotSupported, "get: key format %s is not supported; use Raw", p.KeyFormatType)
	}
	req.IDPlaceholder = o.uid
	s.log.Debug("kmipserver: key fetched", "name", o.name, "uid", o.uid, "remote", req.RemoteAddr)
	return kmip.GetResponsePayload{ObjectType: kmip14.ObjectTypeSymmetricKey, UniqueIdentifier: o.uid,
		SymmetricKey: &kmip.SymmetricKey{KeyBlock: kb}}, nil
}

// getAttributes handles Get Attributes: the named attributes that the object has, or all of them.
func (s *Server) getAttributes(_ context.Context, req *kmip.Request) (any, error) {
	var p wire.GetAttributesRequestPayload
	if err := decode(req, "get attributes", &p); err != nil {
		return nil, err
	}
	o, err := s.target(req, "get attributes", p.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	all := []kmip.Attribute{
		attr(kmip14.TagUniqueIdentifier, o.uid),
	}
	if o.name != "" {
		all = append(all, attr(kmip14.TagName, kmip.Name{NameValue: o.name, NameType: kmip14.NameTypeUninterpretedTextString}))
	}
	all = append(all,
		attr(kmip14.TagObjectType, kmip14.ObjectTypeSymmetricKey),
		attr(kmip14.TagCryptographicAlgorithm, o.algorithm),
		attr(kmip14.TagCryptographicLength, o.length),
		attr(kmip14.TagCryptographicUsageMask, kmip14.CryptographicUsageMask(o.usageMask)),
		attr(kmip14.TagState, o.state),
		attr(kmip14.TagInitialDate, o.initial),
	)
	for _, d := range []struct {
		name string
		t    time.Time
	}{{"Activation Date", o.activation}, {"Deactivation Date", o.deactivation},
		// Spelled out: kmip-go v0.1.0's canonical name for this tag is "Compromise  Date" (two spaces).
		{"Compromise Date", o.compromise}, {"Last Change Date", o.lastChange}} {
		if !d.t.IsZero() {
			all = append(all, kmip.Attribute{AttributeName: d.name, AttributeValue: d.t})
		}
	}
	resp := wire.GetAttributesResponsePayload{UniqueIdentifier: o.uid}
	for _, a := range all {
		if len(p.AttributeName) == 0 || slices.Contains(p.AttributeName, a.AttributeName) {
			resp.Attribute = append(resp.Attribute, a)
		}
	}
	req.IDPlaceholder = o.uid
	return resp, nil
}

func attr(tag ttlv.Tag, v any) kmip.Attribute {
	return kmip.NewAttributeFromTag(tag, 0, v)
}
