package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// stream is one direction of a floor connection captured in memory: the
// records a side writes go to out, it reads from in.
type stream struct {
	in  io.Reader
	out io.Writer
}

func (s stream) Read(p []byte) (int, error)  { return s.in.Read(p) }
func (s stream) Write(p []byte) (int, error) { return s.out.Write(p) }

// floorForms are the floor's two forms, which put the same bytes on the
// wire.
var floorForms = []struct {
	name      string
	pipelined bool
}{{"plain", false}, {"pipelined", true}}

// sealed is what floorSend writes for data under key: every record up to
// its summary (it then fails waiting for the receiver's, which never comes).
func sealed(t *testing.T, data, key []byte, pipelined bool) []byte {
	t.Helper()
	var out bytes.Buffer
	if _, err := floorSend(stream{in: bytes.NewReader(nil), out: &out}, bytes.NewReader(data), key, pipelined); err == nil {
		t.Fatal("the sender succeeded without the receiver's summary")
	}
	return out.Bytes()
}

// frames splits a sealed stream into its frames' lengths.
func frames(t *testing.T, b []byte) []int {
	t.Helper()
	var n []int
	for len(b) > 0 {
		l := int(binary.BigEndian.Uint16(b))
		if len(b) < floorHeader+l {
			t.Fatalf("a frame of %d bytes with %d left", l, len(b)-floorHeader)
		}
		n = append(n, l)
		b = b[floorHeader+l:]
	}
	return n
}

// repeating yields p over and over without allocating.
type repeating struct {
	p   []byte
	off int
}

func repeatBytes(p []byte) *repeating { return &repeating{p: p} }

func (r *repeating) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		c := copy(b[n:], r.p[r.off:])
		n += c
		r.off = (r.off + c) % len(r.p)
	}
	return n, nil
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// The floor sends the link's records: full records of the link's payload,
// then the rest, then a summary, each sealed with its 16-byte tag behind a
// type byte.
func TestFloorRecordFormat(t *testing.T) {
	const end = floorSummaryLen + 1 + floorTag
	for _, tc := range []struct {
		size int
		want []int
	}{
		{0, []int{end}},
		{1, []int{1 + 1 + floorTag, end}},
		{floorPayload, []int{floorFrame, end}},
		{3*floorPayload + 17, []int{floorFrame, floorFrame, floorFrame, 17 + 1 + floorTag, end}},
	} {
		for _, form := range floorForms {
			got := frames(t, sealed(t, randomBytes(t, tc.size), randomBytes(t, 32), form.pipelined))
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s, %d bytes: frames of %v, want %v", form.name, tc.size, got, tc.want)
			}
		}
	}
	if floorFrame != 65535 || floorPayload != 65518 {
		t.Errorf("a record holds %d bytes of payload in %d, not the link's 65518 in 65535", floorPayload, floorFrame)
	}
}

// What the sender sealed arrives whole through floorRecv, whichever form
// each side has; anything changed on the way is refused and leaves nothing
// behind.
func TestFloorReceive(t *testing.T) {
	flip := func(at func([]byte) int) func([]byte) []byte {
		return func(b []byte) []byte { b[at(b)] ^= 0x40; return b }
	}
	for _, tc := range []struct {
		name   string
		size   int
		change func([]byte) []byte
		other  bool // the receiver has another key
		ok     bool
	}{
		{name: "empty", size: 0, ok: true},
		{name: "one record", size: 1000, ok: true},
		{name: "records and a tail", size: 2*floorPayload + 5, ok: true},
		{name: "a flipped ciphertext byte", size: 2*floorPayload + 5, change: flip(func([]byte) int { return floorHeader + 100 })},
		{name: "a flipped tag byte of the summary", size: 1000, change: flip(func(b []byte) int { return len(b) - 1 })},
		{name: "a flipped length", size: 2*floorPayload + 5, change: flip(func([]byte) int { return 1 })},
		{name: "records swapped", size: 2*floorPayload + 5, change: func(b []byte) []byte {
			a, c := b[:floorBufSize], b[floorBufSize:2*floorBufSize]
			return slices.Concat(c, a, b[2*floorBufSize:])
		}},
		{name: "a record dropped", size: 2*floorPayload + 5, change: func(b []byte) []byte { return b[floorBufSize:] }},
		{name: "no summary", size: 1000, change: func(b []byte) []byte { return b[:len(b)-(floorHeader+floorSummaryLen+1+floorTag)] }},
		{name: "another key", size: 1000, other: true},
	} {
		for _, send := range floorForms {
			for _, recv := range floorForms {
				t.Run(tc.name+"/"+send.name+" to "+recv.name, func(t *testing.T) {
					floorReceiveCase(t, tc.size, tc.change, tc.other, tc.ok, send.pipelined, recv.pipelined)
				})
			}
		}
	}
}

func floorReceiveCase(t *testing.T, size int, change func([]byte) []byte, other, ok, sendPipelined, recvPipelined bool) {
	data, key := randomBytes(t, size), randomBytes(t, 32)
	wire := sealed(t, data, key, sendPipelined)
	if change != nil {
		wire = change(wire)
	}
	if other {
		key = randomBytes(t, 32)
	}
	dir := t.TempDir()
	dst := filepath.Join(dir, "got.bin")
	var ack bytes.Buffer
	sum, err := floorRecv(stream{in: bytes.NewReader(wire), out: &ack}, dst, key, recvPipelined)
	if !ok {
		if err == nil {
			t.Fatal("accepted")
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("left %v behind", left)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("%d bytes arrived (%v), want the %d sent", len(got), err, len(data))
	}
	if sum.n != int64(len(data)) || sum.sha != sha256.Sum256(data) {
		t.Errorf("summary %d bytes %x", sum.n, sum.sha)
	}
	if l := frames(t, ack.Bytes()); !slices.Equal(l, []int{floorSummaryLen + 1 + floorTag}) {
		t.Errorf("the receiver answered with frames %v, want its summary", l)
	}
}

// Over loopback TCP both sides finish with the same summary, and the
// sender refuses a receiver that confirms something else.
func TestFloorOverTCP(t *testing.T) {
	for _, form := range floorForms {
		t.Run(form.name, func(t *testing.T) { floorOverTCP(t, form.pipelined) })
	}
}

func floorOverTCP(t *testing.T, pipelined bool) {
	data, key := randomBytes(t, 5*floorPayload+123), randomBytes(t, 32)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst := filepath.Join(t.TempDir(), "got.bin")
	type result struct {
		sum floorSum
		err error
	}
	got := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer conn.Close()
		sum, err := floorRecv(conn, dst, key, pipelined)
		got <- result{sum, err}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sent, err := floorSend(conn, bytes.NewReader(data), key, pipelined)
	conn.Close()
	r := <-got
	if err := errors.Join(err, r.err); err != nil {
		t.Fatal(err)
	}
	if sent != r.sum || sent.sha != sha256.Sum256(data) {
		t.Errorf("sent %+v, received %+v", sent, r.sum)
	}

	// A receiver's summary for other bytes.
	enc, err := newFloorCipher(key, toSender)
	if err != nil {
		t.Fatal(err)
	}
	var ack bytes.Buffer
	if err := enc.writeSmall(&ack, floorAck, floorSum{n: int64(len(data))}.encode()); err != nil {
		t.Fatal(err)
	}
	if _, err := floorSend(stream{in: &ack, out: io.Discard}, bytes.NewReader(data), key, pipelined); err == nil {
		t.Error("the sender accepted a summary of other bytes")
	}
}

// BenchmarkFloor is link's BenchmarkTransfer for the floor: 256 MiB of a
// repeating pattern over loopback TCP into a file synced and renamed into
// place, in one process, in each form.
func BenchmarkFloor(b *testing.B) {
	for _, form := range floorForms {
		b.Run(form.name, func(b *testing.B) { benchmarkFloor(b, form.pipelined) })
	}
}

func benchmarkFloor(b *testing.B, pipelined bool) {
	const size = 256 << 20
	pattern, key, dir := randomBytes(b, 1<<20), randomBytes(b, 32), b.TempDir()
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			defer ln.Close()
			conn, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			defer conn.Close()
			_, err = floorRecv(conn, filepath.Join(dir, "got.bin"), key, pipelined)
			done <- err
		}()
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		_, err = floorSend(conn, io.LimitReader(repeatBytes(pattern), size), key, pipelined)
		conn.Close()
		if err := errors.Join(err, <-done); err != nil {
			b.Fatal(err)
		}
	}
}
