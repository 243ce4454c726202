package main

import (
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"

	"github.com/sftproject/sft/api"
)

// The encrypted-copy floor is what SFT's peer link must do to move one
// file, done plainly, with nothing else: no login, session, handshake or
// resume state. The sender reads the file and sends it in the link's
// records, each sealed with AES-256-GCM; the receiver opens each, hashes
// it (CRC-32C and SHA-256, as the link's summary) and writes it to a
// temporary file, which it syncs and renames into place; each side then
// checks the other's whole-file summary.
//
// It comes in two forms. The plain floor is a straightforward program that
// does this one record at a time on each side: the reference SFT's speed
// target is set against. The pipelined floor is each side split into the
// link's own two stages over the same number of buffers (link/pipeline.go):
// sender read and hash | seal and send, receiver receive and open | write
// and hash, with the link's write-back hints. SFT can at best match the
// pipelined floor; the gap to it is what SFT's protocol costs.

// The link's record layout (link/record.go, link/conn.go): a 2-byte
// big-endian length, then one AES-GCM message of at most a Noise transport
// message (64 KiB) holding a type byte and the payload.
const (
	floorHeader     = 2
	floorFrame      = noise.MaxMsgLen
	floorTag        = 16
	floorPayload    = floorFrame - floorTag - 1
	floorBufSize    = floorHeader + floorFrame
	floorPayloadAt  = floorHeader + 1
	floorSummaryLen = 8 + 4 + 32
	// As the link's pipeDepth, readBufferSize and writebackEvery.
	floorDepth     = 4
	floorReadBuf   = 4 * floorBufSize
	floorWriteback = 8 << 20
)

// Record types, the link's numbers.
const (
	floorData byte = 2
	floorEnd  byte = 3
	floorAck  byte = 4
)

// floorSum is what both sides must agree on: length, CRC-32C and SHA-256
// of the whole file.
type floorSum struct {
	n   int64
	crc uint32
	sha [32]byte
}

func (s floorSum) encode() []byte {
	b := make([]byte, floorSummaryLen)
	binary.BigEndian.PutUint64(b, uint64(s.n))
	binary.BigEndian.PutUint32(b[8:], s.crc)
	copy(b[12:], s.sha[:])
	return b
}

func decodeFloorSum(p []byte) (floorSum, error) {
	if len(p) != floorSummaryLen {
		return floorSum{}, fmt.Errorf("summary of %d bytes, want %d", len(p), floorSummaryLen)
	}
	s := floorSum{n: int64(binary.BigEndian.Uint64(p)), crc: binary.BigEndian.Uint32(p[8:])}
	copy(s.sha[:], p[12:])
	return s, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type floorDigest struct {
	n   int64
	crc uint32
	sha hash.Hash
}

func newFloorDigest() *floorDigest { return &floorDigest{sha: sha256.New()} }

func (d *floorDigest) write(p []byte) {
	d.n += int64(len(p))
	d.crc = crc32.Update(d.crc, castagnoli, p)
	d.sha.Write(p)
}

func (d *floorDigest) sum() floorSum {
	s := floorSum{n: d.n, crc: d.crc}
	d.sha.Sum(s.sha[:0])
	return s
}

// floorCipher seals or opens the records of one direction. Both directions
// share the key, so the nonce's first byte names the direction and its
// last eight count the records, as Noise counts them.
type floorCipher struct {
	aead  cipher.AEAD
	nonce [12]byte
	n     uint64
	hdr   [floorHeader]byte // a field, so reading a header allocates nothing
}

const (
	toReceiver byte = 0
	toSender   byte = 1
)

func newFloorCipher(key []byte, direction byte) (*floorCipher, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("floor key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	c := &floorCipher{aead: aead}
	c.nonce[0] = direction
	return c, nil
}

// floorCiphers are a side's: one to seal what it sends in direction out,
// one to open what comes the other way.
func floorCiphers(key []byte, out byte) (enc, dec *floorCipher, err error) {
	if enc, err = newFloorCipher(key, out); err != nil {
		return nil, nil, err
	}
	dec, err = newFloorCipher(key, 1-out)
	return enc, dec, err
}

func (c *floorCipher) next() []byte {
	binary.BigEndian.PutUint64(c.nonce[4:], c.n)
	c.n++
	return c.nonce[:]
}

// write seals, in place, the record of type t whose n-byte payload is in
// buf at floorPayloadAt, and writes header and ciphertext with one Write.
func (c *floorCipher) write(w io.Writer, buf []byte, t byte, n int) error {
	buf[floorHeader] = t
	ct := c.aead.Seal(buf[floorHeader:floorHeader], c.next(), buf[floorHeader:floorPayloadAt+n], nil)
	binary.BigEndian.PutUint16(buf, uint16(len(ct)))
	_, err := w.Write(buf[:floorHeader+len(ct)])
	return err
}

// writeSmall sends a record whose payload p is not in a frame buffer yet.
func (c *floorCipher) writeSmall(w io.Writer, t byte, p []byte) error {
	buf := make([]byte, floorPayloadAt+len(p)+floorTag)
	return c.write(w, buf, t, copy(buf[floorPayloadAt:], p))
}

// errFloorTampered is a record that fails authentication.
var errFloorTampered = errors.New("record failed authentication")

// read opens the next record into buf (floorFrame bytes) straight out of
// r's buffer, and returns its type and payload.
func (c *floorCipher) read(r *bufio.Reader, buf []byte) (byte, []byte, error) {
	if _, err := io.ReadFull(r, c.hdr[:]); err != nil {
		return 0, nil, fmt.Errorf("reading a record: %w", err)
	}
	n := int(binary.BigEndian.Uint16(c.hdr[:]))
	if n < floorTag+1 {
		return 0, nil, fmt.Errorf("%w: a frame of %d bytes", errFloorTampered, n)
	}
	ct, err := r.Peek(n)
	if err != nil {
		return 0, nil, fmt.Errorf("reading a record: %w", err)
	}
	pt, err := c.aead.Open(buf[:0], c.next(), ct, nil)
	r.Discard(n)
	if err != nil {
		return 0, nil, errFloorTampered
	}
	return pt[0], pt[1:], nil
}

// floorChunk is one record's buffer between the two stages of a side.
type floorChunk struct {
	buf []byte
	p   []byte
}

func floorPool() chan []byte {
	free := make(chan []byte, floorDepth)
	for range floorDepth {
		free <- make([]byte, floorBufSize)
	}
	return free
}

// floorSend sends all of src over conn, plainly or pipelined, then waits
// for the receiver's summary and checks it matches what was sent.
func floorSend(conn io.ReadWriter, src io.Reader, key []byte, pipelined bool) (floorSum, error) {
	enc, dec, err := floorCiphers(key, toReceiver)
	if err != nil {
		return floorSum{}, err
	}
	send := floorSendPlain
	if pipelined {
		send = floorSendPipelined
	}
	sum, err := send(conn, src, enc)
	if err != nil {
		return floorSum{}, err
	}
	if err := enc.writeSmall(conn, floorEnd, sum.encode()); err != nil {
		return floorSum{}, fmt.Errorf("sending the summary: %w", err)
	}
	t, p, err := dec.read(bufio.NewReaderSize(conn, floorHeader+floorFrame), make([]byte, floorFrame))
	if err != nil {
		return floorSum{}, fmt.Errorf("waiting for the receiver's summary: %w", err)
	}
	if t != floorAck {
		return floorSum{}, fmt.Errorf("the receiver sent a record of type %d, want its summary", t)
	}
	got, err := decodeFloorSum(p)
	if err != nil {
		return floorSum{}, err
	}
	if got != sum {
		return floorSum{}, fmt.Errorf("the receiver holds %d bytes (CRC-32C %08x), %d (%08x) were sent", got.n, got.crc, sum.n, sum.crc)
	}
	return sum, nil
}

// floorSendPlain sends src's records one at a time: read, hash, seal, send.
func floorSendPlain(conn io.Writer, src io.Reader, enc *floorCipher) (floorSum, error) {
	d := newFloorDigest()
	buf := make([]byte, floorBufSize)
	p := buf[floorPayloadAt : floorPayloadAt+floorPayload]
	for {
		n, err := io.ReadFull(src, p)
		if n > 0 {
			d.write(p[:n])
			if err := enc.write(conn, buf, floorData, n); err != nil {
				return floorSum{}, fmt.Errorf("sending: %w", err)
			}
		}
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return d.sum(), nil
		case err != nil:
			return floorSum{}, fmt.Errorf("reading the file: %w", err)
		}
	}
}

// floorSendPipelined sends src's records while a goroutine reads and
// hashes the next ones; it ends before floorSendPipelined returns.
func floorSendPipelined(conn io.Writer, src io.Reader, enc *floorCipher) (floorSum, error) {
	free, full, quit := floorPool(), make(chan floorChunk, floorDepth), make(chan struct{})
	var (
		sum  floorSum
		rerr error
	)
	go func() {
		defer close(full)
		d := newFloorDigest()
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-quit:
				return
			}
			p := buf[floorPayloadAt : floorPayloadAt+floorPayload]
			n, err := io.ReadFull(src, p)
			if n > 0 {
				d.write(p[:n])
				full <- floorChunk{buf: buf, p: p[:n]} // never blocks: full holds every buffer
			}
			switch {
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				sum = d.sum()
				return
			case err != nil:
				rerr = fmt.Errorf("reading the file: %w", err)
				return
			}
		}
	}()
	for ch := range full {
		if err := enc.write(conn, ch.buf, floorData, len(ch.p)); err != nil {
			close(quit)
			for range full {
			}
			return floorSum{}, fmt.Errorf("sending: %w", err)
		}
		free <- ch.buf
	}
	if rerr != nil {
		return floorSum{}, rerr
	}
	return sum, nil
}

// floorRecv receives a file from conn into dst, plainly or pipelined: a
// temporary file beside it, checked against the sender's summary, synced
// and renamed into place, and the directory synced; then it sends its own
// summary back. A failure before the rename leaves nothing behind.
func floorRecv(conn io.ReadWriter, dst string, key []byte, pipelined bool) (sum floorSum, err error) {
	enc, dec, err := floorCiphers(key, toSender)
	if err != nil {
		return floorSum{}, err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".floor-*.part")
	if err != nil {
		return floorSum{}, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	recv := floorRecvPlain
	if pipelined {
		recv = floorRecvPipelined
	}
	sent, err := recv(bufio.NewReaderSize(conn, floorReadBuf), f, dec)
	if err != nil {
		return floorSum{}, err
	}
	if sum = sent.got; sum != sent.sent {
		return floorSum{}, fmt.Errorf("received %d bytes (CRC-32C %08x), the sender sent %d (%08x)", sum.n, sum.crc, sent.sent.n, sent.sent.crc)
	}
	if err := f.Sync(); err != nil {
		return floorSum{}, err
	}
	if err := f.Close(); err != nil {
		return floorSum{}, err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return floorSum{}, err
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return floorSum{}, err
	}
	if err := enc.writeSmall(conn, floorAck, sum.encode()); err != nil {
		return floorSum{}, fmt.Errorf("sending the summary: %w", err)
	}
	return sum, nil
}

// floorSums are what a receiver wrote (got) and what the sender's summary
// says it sent.
type floorSums struct{ got, sent floorSum }

// floorEndRecord reads the sender's summary out of a record that is not
// data.
func floorEndRecord(t byte, p []byte) (floorSum, error) {
	sent, err := decodeFloorSum(p)
	if t != floorEnd || err != nil {
		return floorSum{}, fmt.Errorf("unexpected record of type %d (%v)", t, err)
	}
	return sent, nil
}

// floorRecvPlain receives the records one at a time: receive, open, write,
// hash.
func floorRecvPlain(br *bufio.Reader, f *os.File, dec *floorCipher) (floorSums, error) {
	d := newFloorDigest()
	buf := make([]byte, floorFrame)
	for {
		t, p, err := dec.read(br, buf)
		if err != nil {
			return floorSums{}, err
		}
		if t != floorData {
			sent, err := floorEndRecord(t, p)
			return floorSums{got: d.sum(), sent: sent}, err
		}
		if _, err := f.Write(p); err != nil {
			return floorSums{}, fmt.Errorf("writing: %w", err)
		}
		d.write(p)
	}
}

// floorRecvPipelined receives and opens records while a goroutine writes
// and hashes the ones before, hinting write-back as the link does; the
// goroutine ends before floorRecvPipelined returns.
func floorRecvPipelined(br *bufio.Reader, f *os.File, dec *floorCipher) (floorSums, error) {
	free, full, done := floorPool(), make(chan floorChunk, floorDepth), make(chan struct{})
	var (
		d      = newFloorDigest()
		werr   error
		failed atomic.Bool
	)
	go func() {
		defer close(done)
		var flushed int64
		for ch := range full {
			// After a failure keep draining, so the other stage never
			// blocks; it sees failed and stops.
			if werr == nil {
				if _, err := f.Write(ch.p); err != nil {
					werr = err
					failed.Store(true)
				} else {
					d.write(ch.p)
					if d.n-flushed >= floorWriteback {
						floorStartWriteback(f, flushed, d.n-flushed)
						flushed = d.n
					}
				}
			}
			free <- ch.buf
		}
	}()
	stop := func() error {
		close(full)
		<-done
		return werr
	}
	for {
		if failed.Load() {
			return floorSums{}, fmt.Errorf("writing: %w", stop())
		}
		buf := <-free
		t, p, err := dec.read(br, buf)
		if err != nil {
			stop()
			return floorSums{}, err
		}
		if t == floorData {
			full <- floorChunk{buf: buf, p: p}
			continue
		}
		sent, err := floorEndRecord(t, p)
		if err != nil {
			stop()
			return floorSums{}, err
		}
		if err := stop(); err != nil {
			return floorSums{}, fmt.Errorf("writing: %w", err)
		}
		return floorSums{got: d.sum(), sent: sent}, nil
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// floorKeyVar carries the run's AES-256 key (hex) to both side processes,
// floorPipelinedVar ("1" or not) the form of the floor.
const (
	floorKeyVar       = "SFT_BENCH_FLOOR_KEY"
	floorPipelinedVar = "SFT_BENCH_FLOOR_PIPELINED"
)

// floorWay is one form of the floor: its case and whether it pipelines.
type floorWay struct {
	name      string
	pipelined bool
}

var (
	floorPlain     = floorWay{caseFloor, false}
	floorPipelined = floorWay{caseFloorPipelined, true}
)

// runFloor is one side of the floor in a process of its own. "recv DST"
// listens, prints its address, receives one file into DST. "send ADDR SRC"
// opens SRC, says "ready", and on the parent's word (stdin) connects and
// sends. Both end with the "done" line of runSide.
func runFloor(ctx context.Context, args, env []string, stdout io.Writer) error {
	key, err := hex.DecodeString(lookupEnv(env, floorKeyVar))
	if err != nil || len(key) != 32 {
		return fmt.Errorf("floor: %s must hold 32 bytes in hex", floorKeyVar)
	}
	pipelined := lookupEnv(env, floorPipelinedVar) == "1"
	var t0 time.Time
	switch {
	case len(args) == 2 && args[0] == "recv":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		fmt.Fprintln(stdout, ln.Addr())
		// The parent kills this process if the sender never comes; the
		// deadline is for a parent that died.
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(time.Minute))
		conn, err := ln.Accept()
		if err != nil {
			return err
		}
		defer conn.Close()
		t0 = time.Now()
		if _, err := floorRecv(conn, args[1], key, pipelined); err != nil {
			return fmt.Errorf("floor: receiving: %w", err)
		}
	case len(args) == 3 && args[0] == "send":
		f, err := os.Open(args[2])
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintln(stdout, "ready")
		if !bufio.NewScanner(os.Stdin).Scan() {
			return errors.New("floor: no word from the parent")
		}
		t0 = time.Now()
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", args[1])
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := floorSend(conn, f, key, pipelined); err != nil {
			return fmt.Errorf("floor: sending: %w", err)
		}
	default:
		return errors.New("floor: want recv DST or send ADDR SRC")
	}
	return sayDone(stdout, t0, api.PathDirect)
}

// benchFloor runs the floor's two sides as processes of their own, as the
// SFT case runs its sides, on the same file, with a fresh key each run.
func benchFloor(ctx context.Context, o options, dir, src string, env []string, way floorWay) *Case {
	c := newCase(way.name)
	self, err := os.Executable()
	if err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	out := filepath.Join(dir, "floor-inbox")
	if err := os.MkdirAll(out, 0o700); err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	dst := filepath.Join(out, filepath.Base(src))
	c.Notes["does"] = "AES-256-GCM records of the link's size, CRC-32C + SHA-256 of the whole file on both sides, a temporary file synced and renamed, both summaries checked; no handshake, session or resume checkpoints; one record at a time"
	if way.pipelined {
		c.Notes["does"] = "as the plain floor, each side in the link's two pipelined stages, with its write-back hints"
	}
	return repeat(o, c, func(measured bool) error {
		defer os.Remove(dst)
		key := make([]byte, 32)
		rand.Read(key)
		sideEnv := append(slices.Clone(env), floorKeyVar+"="+hex.EncodeToString(key), floorPipelinedVar+"="+map[bool]string{true: "1"}[way.pipelined])
		recv, err := startSide(ctx, self, sideEnv, modeFloor, "recv", dst)
		if err != nil {
			return err
		}
		defer recv.kill()
		addr, err := recv.line()
		if err != nil {
			return err
		}
		send, err := startSide(ctx, self, sideEnv, modeFloor, "send", addr, src)
		if err != nil {
			return err
		}
		defer send.kill()
		if err := send.expect("ready"); err != nil {
			return err
		}
		fmt.Fprintln(send.in, "go")
		sres, serr := send.finish()
		rres, rerr := recv.finish()
		if err := errors.Join(serr, rerr); err != nil {
			return err
		}
		if fi, err := os.Stat(dst); err != nil || fi.Size() != o.size {
			return fmt.Errorf("the floor did not deliver the file: %v", err)
		}
		if measured {
			addSides(c, o.size, sres, rres)
		}
		return nil
	})
}
