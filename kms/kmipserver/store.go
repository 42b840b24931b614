package kmipserver

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gemalto/kmip-go/kmip14"
)

// storeVersion is the format version of the key store file. A file with another version is refused, not
// guessed at.
const storeVersion = 1

// object is one managed object in memory. Objects are immutable once published in Server.objs: a change
// makes a copy, so a reader holding one never sees it change.
type object struct {
	uid          string
	name         string
	algorithm    kmip14.CryptographicAlgorithm
	length       int // bits
	usageMask    uint32
	state        kmip14.State
	seq          uint64 // creation order; Locate answers newest first
	initial      time.Time
	activation   time.Time
	deactivation time.Time
	compromise   time.Time
	lastChange   time.Time
	material     []byte
}

// storeFile is the JSON layout of the key store:
//
//	{"version": 1, "keys": [{"uid": "...", "name": "...", "object_type": "SymmetricKey", "algorithm": "AES",
//	  "length": 256, "usage_mask": 12, "state": "Active", "seq": 1, "initial_date": "...",
//	  "activation_date": "...", "last_change_date": "...", "material": "<base64>"}]}
//
// Enumerations are stored by their KMIP names so the file is readable; key material is base64. The file is
// mode 0600 and replaced atomically on every change.
type storeFile struct {
	Version int         `json:"version"`
	Keys    []storedKey `json:"keys"`
}

type storedKey struct {
	UID              string     `json:"uid"`
	Name             string     `json:"name,omitempty"`
	ObjectType       string     `json:"object_type"`
	Algorithm        string     `json:"algorithm"`
	Length           int        `json:"length"`
	UsageMask        uint32     `json:"usage_mask"`
	State            string     `json:"state"`
	Seq              uint64     `json:"seq"`
	InitialDate      time.Time  `json:"initial_date"`
	ActivationDate   *time.Time `json:"activation_date,omitempty"`
	DeactivationDate *time.Time `json:"deactivation_date,omitempty"`
	CompromiseDate   *time.Time `json:"compromise_date,omitempty"`
	LastChangeDate   time.Time  `json:"last_change_date"`
	Material         []byte     `json:"material"`
}

// storedStates are the states an object in the store can be in; destroyed objects are deleted.
var storedStates = []kmip14.State{kmip14.StatePreActive, kmip14.StateActive, kmip14.StateDeactivated, kmip14.StateCompromised}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func timeOf(p *time.Time) time.Time {
	if p == nil {
		return time.Time{}
	}
	return *p
}

// encodeStore renders objs as the store file.
func encodeStore(objs map[string]*object) ([]byte, error) {
	f := storeFile{Version: storeVersion, Keys: make([]storedKey, 0, len(objs))}
	for _, o := range objs {
		f.Keys = append(f.Keys, storedKey{
			UID:              o.uid,
			Name:             o.name,
			ObjectType:       kmip14.ObjectTypeSymmetricKey.String(),
			Algorithm:        o.algorithm.String(),
			Length:           o.length,
			UsageMask:        o.usageMask,
			State:            o.state.String(),
			Seq:              o.seq,
			InitialDate:      o.initial,
			ActivationDate:   timePtr(o.activation),
			DeactivationDate: timePtr(o.deactivation),
			CompromiseDate:   timePtr(o.compromise),
			LastChangeDate:   o.lastChange,
			Material:         o.material,
		})
	}
	slices.SortFunc(f.Keys, func(a, b storedKey) int { return cmp.Compare(a.Seq, b.Seq) })
	return json.MarshalIndent(f, "", "  ")
}

// decodeStore parses and checks a store file. Every record must be a consistent AES key: a unique
// non-empty UID, a known state, a length of 128, 192 or 256 bits that matches the material. It is fuzzed
// (FuzzDecodeStore): a damaged file is an error, never a panic or a half-loaded store.
func decodeStore(data []byte) (map[string]*object, uint64, error) {
	var f storeFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, 0, fmt.Errorf("parse: %w", err)
	}
	if f.Version != storeVersion {
		return nil, 0, fmt.Errorf("format version %d, want %d", f.Version, storeVersion)
	}
	objs := make(map[string]*object, len(f.Keys))
	var maxSeq uint64
	seqs := make(map[uint64]bool, len(f.Keys))
	for i, k := range f.Keys {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("key %d (uid %q): %s", i, k.UID, fmt.Sprintf(format, args...))
		}
		if k.UID == "" || strings.ContainsFunc(k.UID, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return nil, 0, bad("bad unique identifier")
		}
		if objs[k.UID] != nil {
			return nil, 0, bad("duplicate unique identifier")
		}
		if k.ObjectType != kmip14.ObjectTypeSymmetricKey.String() {
			return nil, 0, bad("object type %q, want %q", k.ObjectType, kmip14.ObjectTypeSymmetricKey.String())
		}
		if k.Algorithm != kmip14.CryptographicAlgorithmAES.String() {
			return nil, 0, bad("algorithm %q, want AES", k.Algorithm)
		}
		if !validAESLength(k.Length) || len(k.Material)*8 != k.Length {
			return nil, 0, bad("length %d bits with %d bytes of material", k.Length, len(k.Material))
		}
		i := slices.IndexFunc(storedStates, func(s kmip14.State) bool { return s.String() == k.State })
		if i < 0 {
			return nil, 0, bad("state %q", k.State)
		}
		if k.Seq == 0 || seqs[k.Seq] {
			return nil, 0, bad("sequence number %d missing or repeated", k.Seq)
		}
		seqs[k.Seq] = true
		maxSeq = max(maxSeq, k.Seq)
		objs[k.UID] = &object{
			uid:          k.UID,
			name:         k.Name,
			algorithm:    kmip14.CryptographicAlgorithmAES,
			length:       k.Length,
			usageMask:    k.UsageMask,
			state:        storedStates[i],
			seq:          k.Seq,
			initial:      k.InitialDate,
			activation:   timeOf(k.ActivationDate),
			deactivation: timeOf(k.DeactivationDate),
			compromise:   timeOf(k.CompromiseDate),
			lastChange:   k.LastChangeDate,
			material:     k.Material,
		}
	}
	return objs, maxSeq, nil
}

func validAESLength(bits int) bool {
	return bits == 128 || bits == 192 || bits == 256
}

// writeFileAtomic replaces path with data: write a temporary file in the same directory, fsync it, rename
// it over path, fsync the directory. A crash leaves either the old or the new file, never a torn one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}
