package link

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/flynn/noise"

	"github.com/sftproject/sft/services/api"
)

type recType byte

// Record types are part of the wire format: never renumber.
const (
	recManifest recType = 1
	recData     recType = 2
	recEnd      recType = 3
	recAck      recType = 4
	recAbort    recType = 5
)

func (t recType) String() string {
	switch t {
	case recManifest:
		return "manifest"
	case recData:
		return "data"
	case recEnd:
		return "end"
	case recAck:
		return "ack"
	case recAbort:
		return "abort"
	}
	return fmt.Sprintf("unknown (%d)", byte(t))
}

const (
	frameHeader = 2
	maxFrame    = noise.MaxMsgLen // ciphertext bytes in one frame
	tagLen      = 16              // AES-GCM tag
	maxPayload  = maxFrame - tagLen - 1
	summaryLen  = 8 + 4 + 32
)

// Result describes the bytes of one transferred file.
type Result struct {
	Bytes  int64
	CRC32C uint32
	SHA256 [32]byte
}

func (r Result) encode() []byte {
	b := make([]byte, summaryLen)
	binary.BigEndian.PutUint64(b, uint64(r.Bytes))
	binary.BigEndian.PutUint32(b[8:], r.CRC32C)
	copy(b[12:], r.SHA256[:])
	return b
}

func decodeSummary(p []byte) (Result, error) {
	if len(p) != summaryLen {
		return Result{}, fmt.Errorf("%w: summary of %d bytes, want %d", ErrProtocol, len(p), summaryLen)
	}
	r := Result{
		Bytes:  int64(binary.BigEndian.Uint64(p)),
		CRC32C: binary.BigEndian.Uint32(p[8:]),
	}
	copy(r.SHA256[:], p[12:])
	if r.Bytes < 0 {
		return Result{}, fmt.Errorf("%w: summary with negative length", ErrProtocol)
	}
	return r, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// digest accumulates the Result of a stream as it passes.
type digest struct {
	n   int64
	crc uint32
	sha hash.Hash
}

func newDigest() *digest { return &digest{sha: sha256.New()} }

func (d *digest) write(p []byte) {
	d.n += int64(len(p))
	d.crc = crc32.Update(d.crc, castagnoli, p)
	d.sha.Write(p)
}

func (d *digest) result() Result {
	r := Result{Bytes: d.n, CRC32C: d.crc}
	d.sha.Sum(r.SHA256[:0])
	return r
}

// checkManifest validates a manifest this version can carry.
func checkManifest(m api.Manifest) error {
	if len(m.Files) != 1 {
		return fmt.Errorf("%w: this version transfers exactly one file, the manifest lists %d", ErrBadManifest, len(m.Files))
	}
	f := m.Files[0]
	if f.Size < 0 {
		return fmt.Errorf("%w: negative size %d for %q", ErrBadManifest, f.Size, f.Name)
	}
	return SafeName(f.Name)
}

// decodeManifest parses and validates a manifest record from the peer.
func decodeManifest(p []byte) (api.Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.DisallowUnknownFields()
	var m api.Manifest
	if err := dec.Decode(&m); err != nil {
		return api.Manifest{}, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return api.Manifest{}, fmt.Errorf("%w: data after the manifest", ErrBadManifest)
	}
	if err := checkManifest(m); err != nil {
		return api.Manifest{}, err
	}
	return m, nil
}

func sameManifest(a, b api.Manifest) bool {
	if len(a.Files) != len(b.Files) {
		return false
	}
	for i := range a.Files {
		if a.Files[i] != b.Files[i] {
			return false
		}
	}
	return true
}

func describe(m api.Manifest) string {
	if len(m.Files) != 1 {
		return fmt.Sprintf("%d files", len(m.Files))
	}
	return fmt.Sprintf("%q (%d bytes)", m.Files[0].Name, m.Files[0].Size)
}
