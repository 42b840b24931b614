package crypt_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmipfs/kmipfs/crypt"
)

// Golden fixtures: testdata/v<N>/ holds a wrapped key and objects written by the format version N
// code, and fixture.json names the inputs and the expected plaintext. TestGolden decrypts every
// such directory on every run, so a change that stops old data from decrypting fails the build.
// The fixtures are written once, by TestWriteGolden, and never regenerated: to add a version,
// bump Version and run
//
//	KMIPFS_WRITE_GOLDEN=1 go test -run TestWriteGolden ./crypt
//
// which creates testdata/v<Version>/ and refuses to touch a directory that already exists.
const writeGoldenEnv = "KMIPFS_WRITE_GOLDEN"

// goldenFixture is fixture.json. The keys in it are test keys, generated for the fixture only.
type goldenFixture struct {
	Comment    string         `json:"comment"`
	Version    int            `json:"version"`
	KEK        string         `json:"kek"`      // hex
	KeyName    string         `json:"key_name"` // KMIP name the DEK is wrapped under
	FileID     string         `json:"file_id"`
	DEK        string         `json:"dek"`         // hex; what unwrapping must give
	WrappedKey string         `json:"wrapped_key"` // file name, WrappedKeySize bytes
	Objects    []goldenObject `json:"objects"`
	Extents    []goldenExtent `json:"extents"` // what meta would hold after the last flush
	FileSize   int64          `json:"file_size"`
	FileSHA256 string         `json:"file_sha256"` // of the file's plaintext, holes read as zeros
}

type goldenObject struct {
	File  string       `json:"file"` // concatenated sealed blocks, slot i at i*CipherBS
	Gen   uint64       `json:"gen"`  // write generation of every block in the object
	Slots []goldenSlot `json:"slots"`
}

type goldenSlot struct {
	Block uint64 `json:"block"` // file block index sealed into this slot
	Plain string `json:"plain"` // plaintext before zero padding to PlainBS
}

type goldenExtent struct {
	Block  uint64 `json:"block"`
	Object string `json:"object"`
	Slot   int    `json:"slot"`
	Gen    uint64 `json:"gen"`
}

func goldenPlain(block, gen uint64, n int) string {
	line := fmt.Sprintf("kmipfs golden fixture: block %d, generation %d.\n", block, gen)
	return strings.Repeat(line, n/len(line)+1)[:n]
}

func TestWriteGolden(t *testing.T) {
	if os.Getenv(writeGoldenEnv) == "" {
		t.Skipf("set %s=1 to write testdata/v%d (fixtures are written once, never regenerated)", writeGoldenEnv, crypt.Version)
	}
	dir := filepath.Join("testdata", fmt.Sprintf("v%d", crypt.Version))
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("%s exists; golden fixtures are never regenerated", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	kek, dek, id := newDataKey(t), newDataKey(t), newFileID(t)
	fx := goldenFixture{
		Comment: "kmipfs crypt golden fixture, written once by TestWriteGolden and never regenerated. " +
			"A file of 4 full blocks and 100 bytes: flush 1 (gen 1) wrote blocks 0-2 to obj-1, flush 2 (gen 2) " +
			"rewrote block 1 and wrote block 4 to obj-2; block 3 is a hole. Keys are test keys.",
		Version:    crypt.Version,
		KEK:        hex.EncodeToString(kek),
		KeyName:    "pykmip-goldenkey",
		FileID:     id.String(),
		DEK:        hex.EncodeToString(dek),
		WrappedKey: "dek.wrapped",
		FileSize:   4*crypt.PlainBS + 100,
	}
	wrapped, err := crypt.WrapKey(kek, dek, id, fx.KeyName)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, fx.WrappedKey), wrapped, 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCipher(t, dek, id)
	flushes := []struct {
		file   string
		gen    uint64
		blocks []uint64
	}{
		{"obj-1.bin", 1, []uint64{0, 1, 2}},
		{"obj-2.bin", 2, []uint64{1, 4}},
	}
	live := make(map[uint64]goldenExtent)
	for _, fl := range flushes {
		obj := goldenObject{File: fl.file, Gen: fl.gen}
		var data []byte
		for slot, b := range fl.blocks {
			n := crypt.PlainBS
			if end := int64(b+1) * crypt.PlainBS; end > fx.FileSize {
				n = int(fx.FileSize - int64(b)*crypt.PlainBS)
			}
			plain := goldenPlain(b, fl.gen, n)
			data = c.SealBlock(data, []byte(plain), b, fl.gen)
			obj.Slots = append(obj.Slots, goldenSlot{Block: b, Plain: plain})
			live[b] = goldenExtent{Block: b, Object: fl.file, Slot: slot, Gen: fl.gen}
		}
		if err := os.WriteFile(filepath.Join(dir, fl.file), data, 0o644); err != nil {
			t.Fatal(err)
		}
		fx.Objects = append(fx.Objects, obj)
	}
	file := make([]byte, fx.FileSize)
	for b := uint64(0); b*crypt.PlainBS < uint64(fx.FileSize); b++ {
		e, ok := live[b]
		if !ok {
			continue
		}
		fx.Extents = append(fx.Extents, e)
		for _, o := range fx.Objects {
			if o.File == e.Object {
				copy(file[b*crypt.PlainBS:], o.Slots[e.Slot].Plain)
			}
		}
	}
	sum := sha256.Sum256(file)
	fx.FileSHA256 = hex.EncodeToString(sum[:])
	js, err := json.MarshalIndent(fx, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fixture.json"), append(js, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", dir)
}

func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "v*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatal("no golden fixtures in testdata/v*")
	}
	found := false
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			fx := readFixture(t, dir)
			if fx.Version == crypt.Version {
				found = true
			}
			checkFixture(t, dir, fx)
		})
	}
	if !found {
		t.Errorf("no golden fixture for the current Version %d; write one with %s=1", crypt.Version, writeGoldenEnv)
	}
}

func readFixture(t *testing.T, dir string) goldenFixture {
	t.Helper()
	js, err := os.ReadFile(filepath.Join(dir, "fixture.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx goldenFixture
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fx); err != nil {
		t.Fatalf("fixture.json: %v", err)
	}
	return fx
}

func readFile(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkFixture(t *testing.T, dir string, fx goldenFixture) {
	kek, err := hex.DecodeString(fx.KEK)
	if err != nil {
		t.Fatal(err)
	}
	wantDEK, err := hex.DecodeString(fx.DEK)
	if err != nil {
		t.Fatal(err)
	}
	id, err := crypt.ParseFileID(fx.FileID)
	if err != nil {
		t.Fatal(err)
	}
	wrapped := readFile(t, dir, fx.WrappedKey)
	if int(wrapped[0]) != fx.Version {
		t.Fatalf("wrapped key version byte %d, fixture says %d", wrapped[0], fx.Version)
	}
	dek, err := crypt.UnwrapKey(kek, wrapped, id, fx.KeyName)
	if err != nil {
		t.Fatalf("UnwrapKey(%s): %v", fx.WrappedKey, err)
	}
	if !bytes.Equal(dek, wantDEK) {
		t.Fatal("unwrapped DEK differs from the fixture's")
	}
	if _, err := crypt.UnwrapKey(kek, wrapped, id, fx.KeyName+"-other"); !errors.Is(err, crypt.ErrAuth) {
		t.Errorf("golden wrapped key under another name: %v, want ErrAuth", err)
	}
	c := newCipher(t, dek, id)

	objects := make(map[string][]byte)
	for _, o := range fx.Objects {
		data := readFile(t, dir, o.File)
		objects[o.File] = data
		if len(data) != len(o.Slots)*crypt.CipherBS {
			t.Fatalf("%s is %d bytes, want %d slots of %d", o.File, len(data), len(o.Slots), crypt.CipherBS)
		}
		for i, s := range o.Slots {
			sealed := data[i*crypt.CipherBS : (i+1)*crypt.CipherBS]
			got, err := c.OpenBlock(nil, sealed, s.Block, o.Gen)
			if err != nil {
				t.Fatalf("%s slot %d (block %d gen %d): %v", o.File, i, s.Block, o.Gen, err)
			}
			if !bytes.Equal(got, padded([]byte(s.Plain))) {
				t.Fatalf("%s slot %d: plaintext differs from the fixture", o.File, i)
			}
			for _, wrong := range []struct{ block, gen uint64 }{
				{s.Block + 1, o.Gen}, {s.Block, o.Gen + 1}, {s.Block, o.Gen - 1},
			} {
				if _, err := c.OpenBlock(nil, sealed, wrong.block, wrong.gen); !errors.Is(err, crypt.ErrAuth) {
					t.Errorf("%s slot %d opened as block %d gen %d: %v, want ErrAuth", o.File, i, wrong.block, wrong.gen, err)
				}
			}
		}
	}

	// Read the file back the way fs does: the extent map says where each block lives and at which
	// generation; blocks without an extent are holes and read as zeros.
	extents := make(map[uint64]goldenExtent)
	for _, e := range fx.Extents {
		extents[e.Block] = e
	}
	var file []byte
	for b := uint64(0); int64(b)*crypt.PlainBS < fx.FileSize; b++ {
		e, ok := extents[b]
		if !ok {
			file = append(file, make([]byte, crypt.PlainBS)...)
			continue
		}
		data := objects[e.Object]
		file, err = c.OpenBlock(file, data[e.Slot*crypt.CipherBS:(e.Slot+1)*crypt.CipherBS], b, e.Gen)
		if err != nil {
			t.Fatalf("block %d from %s slot %d: %v", b, e.Object, e.Slot, err)
		}
	}
	file = file[:fx.FileSize]
	if sum := sha256.Sum256(file); hex.EncodeToString(sum[:]) != fx.FileSHA256 {
		t.Fatalf("reassembled file sha256 %x, want %s", sum, fx.FileSHA256)
	}

	// A superseded block (an older generation still present in an old object) must not be
	// accepted where meta expects the newer one: this is the replay the generation prevents.
	for _, o := range fx.Objects {
		for i, s := range o.Slots {
			if e := extents[s.Block]; e.Object != o.File && e.Gen != o.Gen {
				sealed := objects[o.File][i*crypt.CipherBS : (i+1)*crypt.CipherBS]
				if _, err := c.OpenBlock(nil, sealed, s.Block, e.Gen); !errors.Is(err, crypt.ErrAuth) {
					t.Errorf("stale %s slot %d accepted as block %d gen %d: %v", o.File, i, s.Block, e.Gen, err)
				}
			}
		}
	}
}
