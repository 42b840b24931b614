package kms

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gemalto/kmip-go/kmip14"
)

// Sentinel errors. Every error this package returns wraps at most one of them; test with errors.Is.
var (
	// ErrKeyNotFound means Locate found no object with that name (or Get found the located object gone).
	// fs maps it to ENOKEY.
	ErrKeyNotFound = errors.New("kms: key not found")
	// ErrUnavailable means the key server could not be reached or did not answer: dial, TLS, timeout or
	// transport failure, or a response that could not be decoded. The wrapped cause says which.
	ErrUnavailable = errors.New("kms: key server unavailable")
	// ErrAmbiguous means more than one object carries the name, so the client cannot tell which secret is
	// meant. The message gives the count.
	ErrAmbiguous = errors.New("kms: more than one key with that name")
	// ErrBadKey means the object found is not a plain 32-byte AES secret (wrong type, algorithm, length,
	// format, or wrapped).
	ErrBadKey = errors.New("kms: key is not a 32-byte AES secret")
	// ErrClosed is returned by a Client or Cache after Close.
	ErrClosed = errors.New("kms: closed")
)

// opError is the error shape of this package: "kms: <op> <"name"> [at <addr>]: <kind>: <cause>". It keeps
// the sentinel (kind) and the cause both reachable through errors.Is / errors.As, and keeps the whole story
// on one line so a single log line tells an operator what failed and why.
type opError struct {
	op    string // "locate", "get", "ping", ...
	name  string // KMIP object name or UID, may be empty
	addr  string // server address, set for ErrUnavailable
	kind  error  // one of the sentinels, or nil
	cause error  // the underlying error, or nil
	hint  string // what to check, may be empty
}

var (
	_ error = (*opError)(nil)
	_ error = (*resultError)(nil)
)

func (e *opError) Error() string {
	var b strings.Builder
	b.WriteString("kms: ")
	b.WriteString(e.op)
	if e.name != "" {
		fmt.Fprintf(&b, " %q", e.name)
	}
	if e.addr != "" {
		b.WriteString(" at ")
		b.WriteString(e.addr)
	}
	if e.kind != nil {
		b.WriteString(": ")
		b.WriteString(strings.TrimPrefix(e.kind.Error(), "kms: "))
	}
	if e.cause != nil {
		b.WriteString(": ")
		b.WriteString(e.cause.Error())
	}
	if e.hint != "" {
		b.WriteString(" (")
		b.WriteString(e.hint)
		b.WriteString(")")
	}
	return b.String()
}

func (e *opError) Unwrap() []error {
	var errs []error
	if e.kind != nil {
		errs = append(errs, e.kind)
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// resultError is a KMIP batch item that failed on the server. The connection stays usable.
type resultError struct {
	op      kmip14.Operation
	status  kmip14.ResultStatus
	reason  kmip14.ResultReason
	message string
}

func (e *resultError) Error() string {
	s := fmt.Sprintf("server answered %s", e.status)
	if e.reason != 0 {
		s += ": " + e.reason.String()
	}
	if e.message != "" {
		s += ": " + e.message
	}
	return s
}
