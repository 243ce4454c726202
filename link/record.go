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
	"slices"
	"strings"

	"github.com/flynn/noise"

	"github.com/sftproject/sft/api"
)

type recType byte

// Record types are part of the wire format: never renumber.
const (
	recManifest recType = 1
	recData     recType = 2
	recEnd      recType = 3
	recAck      recType = 4
	recAbort    recType = 5
	recResume   recType = 6
	recStart    recType = 7
	recFile     recType = 8
	recSelect   recType = 9
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
	case recResume:
		return "resume"
	case recStart:
		return "start"
	case recFile:
		return "file"
	case recSelect:
		return "select"
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

// Result describes what a transfer delivered. For a manifest of one file
// it is that file's length, CRC-32C and SHA-256, so it can be checked with
// everyday tools; for several entries, Bytes is the total and the sums
// cover the list of per-entry summaries (see manifestSum).
type Result struct {
	Bytes  int64
	CRC32C uint32
	SHA256 [32]byte
	// Moved counts the file bytes this side put on or took off the wire
	// on this connection: less than Bytes when a transfer resumed. It is
	// not part of the wire summary.
	Moved int64
}

// sum is the part of a Result both sides must agree on.
func (r Result) sum() Result { r.Moved = 0; return r }

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

// checkManifest is CheckManifest plus what the link itself reserves: the
// names of its partial files.
func checkManifest(m api.Manifest) error {
	if err := CheckManifest(m); err != nil {
		return err
	}
	for _, f := range m.Files {
		for _, elem := range strings.Split(f.Name, "/") {
			if strings.HasPrefix(elem, partialPrefix) {
				return fmt.Errorf("%w %q: names starting with %q are reserved for partial transfers", ErrUnsafeName, f.Name, partialPrefix)
			}
		}
	}
	if len(m.Files) > maxEntries {
		return fmt.Errorf("%w: %d entries, the most one transfer carries is %d", ErrBadManifest, len(m.Files), maxEntries)
	}
	return nil
}

// maxEntries bounds the receiver's per-entry state; file indexes travel as
// uint32.
const maxEntries = 1 << 20

func sameManifest(a, b api.Manifest) bool {
	return a.Text == b.Text && slices.Equal(a.Files, b.Files)
}

func describe(m api.Manifest) string {
	if len(m.Files) != 1 {
		return fmt.Sprintf("%d entries (%d bytes)", len(m.Files), m.TotalSize())
	}
	return fmt.Sprintf("%q (%d bytes)", m.Files[0].Name, m.Files[0].Size)
}

// single reports whether m carries exactly one regular file (or text or a
// stream), whose own summary is then the transfer's.
func single(m api.Manifest) bool { return len(m.Files) == 1 && !m.Files[0].Dir }

// manifestSum combines per-entry summaries into the transfer's Result. One
// file: its own. Several entries: Bytes is the total, and CRC-32C and
// SHA-256 are taken over, for each entry in manifest order, its name, a NUL,
// a flags byte (1 = directory) and its 44-byte summary.
func manifestSum(m api.Manifest, per []Result) Result {
	if single(m) {
		return per[0].sum()
	}
	d := newDigest()
	var total int64
	for i, f := range m.Files {
		var flags byte
		if f.Dir {
			flags = 1
		}
		d.write([]byte(f.Name))
		d.write([]byte{0, flags})
		d.write(per[i].encode())
		total += per[i].Bytes
	}
	r := d.result()
	r.Bytes = total
	return r
}

// encodeFile and decodeFile carry the file record: which entry follows and
// from which offset its data starts.
func encodeFile(index int, offset int64) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint32(b, uint32(index))
	binary.BigEndian.PutUint64(b[4:], uint64(offset))
	return b
}

func decodeFile(p []byte) (int, int64, error) {
	if len(p) != 12 {
		return 0, 0, fmt.Errorf("%w: file record of %d bytes, want 12", ErrProtocol, len(p))
	}
	off := int64(binary.BigEndian.Uint64(p[4:]))
	if off < 0 {
		return 0, 0, fmt.Errorf("%w: negative offset", ErrProtocol)
	}
	return int(binary.BigEndian.Uint32(p)), off, nil
}

// resumePairs is how many (index, offset) pairs fit in one resume record.
const resumePairs = maxPayload / 12
