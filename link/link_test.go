package link

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sftproject/sft/api"
)

func TestRoundTrip(t *testing.T) {
	sizes := []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"record minus one", maxPayload - 1},
		{"one record", maxPayload},
		{"record plus one", maxPayload + 1},
		{"a few MiB", 3<<20 + 7},
	}
	for i, tc := range sizes {
		for _, senderListens := range []bool{false, true} {
			name := tc.name + "/receiver listens"
			if senderListens {
				name = tc.name + "/sender listens"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t)
				ctx := t.Context()
				data := randomBytes(tc.size, uint64(i))
				m := manifest("file.bin", tc.size)
				var lastProgress int64 = -1
				ro := ReceiveOptions{Progress: func(_ int, n int64) { lastProgress = n }}
				var sent, recv outcome
				if senderListens {
					sent, recv = e.pair(ctx, e.addr(), e.key, e.sid,
						sendSide(ctx, m, bytes.NewReader(data)), recvSide(ctx, m, e.dir, ro))
				} else {
					recv, sent = e.transfer(ctx, e.addr(), m, m, bytes.NewReader(data), ro)
				}
				if sent.err != nil || recv.err != nil {
					t.Fatalf("send: %v; receive: %v", sent.err, recv.err)
				}
				want := Result{Bytes: int64(tc.size), CRC32C: crc32.Checksum(data, castagnoli), SHA256: sha256.Sum256(data)}
				if sent.res.sum() != want || recv.res.sum() != want || sent.res.Moved != int64(tc.size) || recv.res.Moved != int64(tc.size) {
					t.Errorf("results: sent %+v, received %+v, want %+v", sent.res, recv.res, want)
				}
				if recv.path != filepath.Join(e.dir, "file.bin") {
					t.Errorf("path = %q", recv.path)
				}
				got, err := os.ReadFile(recv.path)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) {
					t.Error("received bytes differ from sent bytes")
				}
				if tc.size > 0 && lastProgress != int64(tc.size) {
					t.Errorf("last progress = %d, want %d", lastProgress, tc.size)
				}
				ents, _ := os.ReadDir(e.dir)
				if len(ents) != 1 {
					t.Errorf("destination holds %d entries, want only the file", len(ents))
				}
			})
		}
	}
}

func TestHandshakeRejected(t *testing.T) {
	tests := []struct {
		name     string
		otherKey bool
		otherSID bool
	}{
		{"wrong key", true, false},
		{"other session", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			key, sid := e.key, e.sid
			if tc.otherKey {
				key = randomKey(t)
			}
			if tc.otherSID {
				sid = "another-session"
			}
			ctx, cancel := context.WithCancel(t.Context())
			acceptErr := make(chan error, 1)
			go func() {
				c, err := Accept(ctx, e.ln, e.key, e.sid, e.opts)
				if c != nil {
					c.Close()
				}
				acceptErr <- err
			}()
			// The dialer tries again until DialTimeout: the other end's close
			// could have been room made for another connection.
			o := e.opts
			o.DialTimeout = 500 * time.Millisecond
			_, err := Dial(ctx, e.addr(), key, sid, o)
			if !errors.Is(err, ErrHandshake) {
				t.Errorf("Dial error = %v, want ErrHandshake", err)
			}
			// Accept keeps waiting for the real peer; ending the wait reports
			// the failed attempt.
			cancel()
			err = <-acceptErr
			if !errors.Is(err, ErrHandshake) || !errors.Is(err, context.Canceled) {
				t.Errorf("Accept error = %v, want ErrHandshake and context.Canceled", err)
			}
			logs := e.logs.String()
			if !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "remote=127.0.0.1:") {
				t.Errorf("rejected connection not logged at Warn with its address:\n%s", logs)
			}
			if strings.Contains(logs, hex.EncodeToString(e.key)) || strings.Contains(logs, string(e.key)) {
				t.Error("log contains the session key")
			}
			assertEmpty(t, e.dir)
		})
	}
}

// Offsets in the sender's stream: the first handshake message is a 2-byte
// header and 48 bytes, the select record 19 bytes; the manifest frame
// follows.
func manifestFrameLen(m api.Manifest) int64 {
	b, _ := json.Marshal(m)
	return frameHeader + 1 + int64(len(b)) + tagLen
}

const (
	handshake1Len = frameHeader + 48
	selectLen     = frameHeader + 1 + tagLen
	preambleLen   = handshake1Len + selectLen
)

func TestTamperedStream(t *testing.T) {
	const size = 1 << 20
	m := manifest("file.bin", size)
	dataStart := preambleLen + manifestFrameLen(m)
	tests := []struct {
		name string
		at   int64
	}{
		{"manifest", preambleLen + 5},
		{"data payload", dataStart + frameHeader + 1000},
		{"frame length", dataStart + 1},
		{"later data frame", dataStart + 5*frameBufSize + 12345},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			p := startProxy(t, e.addr(), tc.at, -1)
			recv, send := e.transfer(t.Context(), p.addr(), m, m, bytes.NewReader(randomBytes(size, 1)), ReceiveOptions{})
			if !errors.Is(recv.err, ErrTampered) {
				t.Errorf("receiver error = %v, want ErrTampered", recv.err)
			}
			if !errors.Is(send.err, ErrAborted) || !errors.Is(send.err, ErrTampered) {
				t.Errorf("sender error = %v, want the receiver's abort for tampering", send.err)
			}
			assertEmpty(t, e.dir)
		})
	}
}

func TestTruncatedStream(t *testing.T) {
	const size = 1 << 20
	m := manifest("file.bin", size)
	dataStart := preambleLen + manifestFrameLen(m)
	frames := int64((size + maxPayload - 1) / maxPayload)
	lastFrame := int64(size%maxPayload) + 1 + tagLen + frameHeader
	tests := []struct {
		name string
		cut  int64
	}{
		{"after the manifest", dataStart},
		{"inside a data frame", dataStart + 30000},
		{"on a frame boundary", dataStart + 2*frameBufSize},
		{"before the end record", dataStart + (frames-1)*frameBufSize + lastFrame},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			p := startProxy(t, e.addr(), -1, tc.cut)
			recv, send := e.transfer(t.Context(), p.addr(), m, m, bytes.NewReader(randomBytes(size, 2)), ReceiveOptions{})
			if !errors.Is(recv.err, ErrTruncated) {
				t.Errorf("receiver error = %v, want ErrTruncated", recv.err)
			}
			if send.err == nil {
				t.Error("sender succeeded on a cut connection")
			}
			if !Resumable(recv.err) {
				t.Errorf("a cut connection is not resumable: %v", recv.err)
			}
			assertOnlyPartial(t, e.dir)
		})
	}
}

func TestAcceptIgnoresGarbage(t *testing.T) {
	garbage := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		append([]byte{0, 48}, randomBytes(48, 3)...), // plausible length, bogus content
	}
	e := newEnv(t)
	ctx := t.Context()
	var junk []net.Conn
	for _, g := range garbage {
		c, err := net.Dial("tcp", e.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(g); err != nil {
			t.Fatal(err)
		}
		junk = append(junk, c)
	}
	data := randomBytes(100_000, 4)
	m := manifest("doc.pdf", len(data))

	recvDone := e.receiveAsync(ctx, m)
	// The listener closes the garbage connections without answering.
	for _, c := range junk {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			t.Errorf("garbage connection: read %d bytes, err %v; want it closed", n, err)
		}
	}
	c, err := Dial(ctx, e.addr(), e.key, e.sid, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Send(ctx, m, one(bytes.NewReader(data)), SendOptions{}); err != nil {
		t.Fatalf("send: %v", err)
	}
	if r := <-recvDone; r.err != nil {
		t.Fatalf("receive: %v", r.err)
	}
	if logs := e.logs.String(); strings.Count(logs, "rejected connection") != len(garbage) {
		t.Errorf("want %d rejected connections logged:\n%s", len(garbage), logs)
	}
}

func TestAcceptDropsSilentConnection(t *testing.T) {
	e := newEnv(t)
	e.opts.HandshakeTimeout = 200 * time.Millisecond
	ctx := t.Context()
	silent, err := net.Dial("tcp", e.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	type accepted struct {
		c   *Conn
		err error
	}
	done := make(chan accepted, 1)
	go func() {
		c, err := Accept(ctx, e.ln, e.key, e.sid, e.opts)
		done <- accepted{c, err}
	}()
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("silent connection: %v; want it closed by the listener", err)
	}
	select {
	case a := <-done:
		t.Fatalf("Accept returned after dropping a silent connection: %v", a.err)
	default:
	}
	dialed, err := Dial(ctx, e.addr(), e.key, e.sid, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	dialed.Close()
	a := <-done
	if a.err != nil {
		t.Fatalf("Accept after a silent connection: %v", a.err)
	}
	a.c.Close()
	if !strings.Contains(e.logs.String(), "did not start the handshake within 200ms") {
		t.Errorf("timeout not logged:\n%s", e.logs.String())
	}
}

func TestManifestMismatch(t *testing.T) {
	tests := []struct {
		name   string
		sent   api.Manifest
		expect api.Manifest
	}{
		{"other name", manifest("a.txt", 10), manifest("b.txt", 10)},
		{"other size", manifest("a.txt", 10), manifest("a.txt", 11)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			recv, send := e.transfer(t.Context(), e.addr(), tc.sent, tc.expect, bytes.NewReader(make([]byte, 10)), ReceiveOptions{})
			if !errors.Is(recv.err, ErrManifestMismatch) {
				t.Errorf("receiver error = %v, want ErrManifestMismatch", recv.err)
			}
			if !errors.Is(send.err, ErrAborted) || !errors.Is(send.err, ErrManifestMismatch) {
				t.Errorf("sender error = %v, want abort for manifest mismatch", send.err)
			}
			assertEmpty(t, e.dir)
		})
	}
}

// rawSender dials and writes the given records as they are, bypassing Send's
// checks, then reads the receiver's answer.
func rawSender(ctx context.Context, write func(c *Conn) error) func(*Conn) outcome {
	return func(c *Conn) outcome {
		if err := write(c); err != nil {
			return outcome{err: err}
		}
		return outcome{err: c.readReplies().wait().err}
	}
}

func TestUnsafeNameFromPeer(t *testing.T) {
	for _, name := range []string{"../x", "/etc/passwd", "a/../../b", "x\x1b[2Jy", "CON", "c:x", "a\\b", partialPrefix + "s-0.part"} {
		if !utf8.ValidString(name) {
			continue // JSON cannot carry invalid UTF-8: decoding turns it into U+FFFD
		}
		t.Run(name[:min(len(name), 20)], func(t *testing.T) {
			e := newEnv(t)
			ctx := t.Context()
			body, _ := json.Marshal(manifest(name, 3))
			recv, send := e.pair(ctx, e.addr(), e.key, e.sid,
				recvSide(ctx, manifest("ok.txt", 3), e.dir, ReceiveOptions{}),
				rawSender(ctx, func(c *Conn) error { return c.writeRecord(recManifest, body) }))
			if !errors.Is(recv.err, ErrUnsafeName) {
				t.Errorf("receiver error = %v, want ErrUnsafeName", recv.err)
			}
			if !errors.Is(send.err, ErrUnsafeName) {
				t.Errorf("sender saw %v, want the receiver's abort for an unsafe name", send.err)
			}
			assertEmpty(t, e.dir)
		})
	}
	t.Run("Send refuses", func(t *testing.T) {
		e := newEnv(t)
		m := manifest("../x", 1)
		recv, send := e.transfer(t.Context(), e.addr(), m, manifest("x", 1), strings.NewReader("x"), ReceiveOptions{})
		if !errors.Is(send.err, ErrUnsafeName) {
			t.Errorf("sender error = %v, want ErrUnsafeName", send.err)
		}
		if !errors.Is(recv.err, ErrAborted) {
			t.Errorf("receiver error = %v, want ErrAborted", recv.err)
		}
		assertEmpty(t, e.dir)
	})
}

func TestExistingDestination(t *testing.T) {
	data := []byte("new content")
	m := manifest("report.txt", len(data))
	t.Run("refused", func(t *testing.T) {
		e := newEnv(t)
		dst := filepath.Join(e.dir, "report.txt")
		os.WriteFile(dst, []byte("old"), 0o644)
		recv, send := e.transfer(t.Context(), e.addr(), m, m, bytes.NewReader(data), ReceiveOptions{})
		if !errors.Is(recv.err, ErrExists) {
			t.Errorf("receiver error = %v, want ErrExists", recv.err)
		}
		if !errors.Is(send.err, ErrAborted) || !errors.Is(send.err, ErrExists) {
			t.Errorf("sender error = %v, want abort for an existing file", send.err)
		}
		if strings.Contains(send.err.Error(), e.dir) {
			t.Errorf("receiver's local path leaked to the sender: %v", send.err)
		}
		if got, _ := os.ReadFile(dst); string(got) != "old" {
			t.Errorf("existing file changed to %q", got)
		}
		if ents, _ := os.ReadDir(e.dir); len(ents) != 1 {
			t.Errorf("destination holds %d entries, want only the old file", len(ents))
		}
	})
	t.Run("overwrite", func(t *testing.T) {
		e := newEnv(t)
		dst := filepath.Join(e.dir, "report.txt")
		os.WriteFile(dst, []byte("old"), 0o644)
		recv, send := e.transfer(t.Context(), e.addr(), m, m, bytes.NewReader(data), ReceiveOptions{Overwrite: true})
		if recv.err != nil || send.err != nil {
			t.Fatalf("receive: %v; send: %v", recv.err, send.err)
		}
		if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
			t.Errorf("file holds %q after overwrite", got)
		}
	})
	t.Run("directory", func(t *testing.T) {
		e := newEnv(t)
		os.Mkdir(filepath.Join(e.dir, "report.txt"), 0o755)
		recv, _ := e.transfer(t.Context(), e.addr(), m, m, bytes.NewReader(data), ReceiveOptions{Overwrite: true})
		if !errors.Is(recv.err, ErrExists) {
			t.Errorf("receiver error = %v, want ErrExists", recv.err)
		}
	})
}

// A file that appears at the destination while the data arrives must not be
// replaced by the final move.
func TestPlaceNoReplace(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	r := &receiver{root: root}
	tmp, dst := ".sft-1.part", "f"
	os.WriteFile(filepath.Join(dir, tmp), []byte("new"), 0o600)
	os.WriteFile(filepath.Join(dir, dst), []byte("other"), 0o600)
	if err := r.move(tmp, dst); !errors.Is(err, os.ErrExist) {
		t.Errorf("error = %v, want fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, dst)); string(got) != "other" {
		t.Errorf("dst replaced: %q", got)
	}
	os.Remove(filepath.Join(dir, dst))
	if err := r.move(tmp, dst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, tmp)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp file still there: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, dst)); string(got) != "new" {
		t.Errorf("dst = %q", got)
	}
}

func TestSourceSizeDiffers(t *testing.T) {
	tests := []struct {
		name     string
		declared int
		actual   int
	}{
		{"fewer bytes", 200_000, 150_000},
		{"more bytes", 200_000, 200_001},
		{"empty but declared", 10, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			m := manifest("f", tc.declared)
			recv, send := e.transfer(t.Context(), e.addr(), m, m, bytes.NewReader(randomBytes(tc.actual, 5)), ReceiveOptions{})
			if !errors.Is(send.err, ErrSourceSize) {
				t.Errorf("sender error = %v, want ErrSourceSize", send.err)
			}
			if !errors.Is(recv.err, ErrAborted) || !errors.Is(recv.err, ErrSourceSize) {
				t.Errorf("receiver error = %v, want the sender's abort", recv.err)
			}
			assertEmpty(t, e.dir)
		})
	}
}

// Records a correct sender never sends must fail the transfer cleanly.
func TestProtocolViolations(t *testing.T) {
	m := manifest("f", 4)
	body, _ := json.Marshal(m)
	good := Result{Bytes: 4, CRC32C: crc32.Checksum([]byte("abcd"), castagnoli), SHA256: sha256.Sum256([]byte("abcd"))}
	badSHA := good
	badSHA.SHA256[0] ^= 1
	badLen := good
	badLen.Bytes = 5
	file0 := encodeFile(0, 0)
	type rec struct {
		t recType
		p []byte
	}
	tests := []struct {
		name    string
		records []rec
		want    error
	}{
		{"unknown type", []rec{{recManifest, body}, {recType(99), nil}}, ErrProtocol},
		{"data before manifest", []rec{{recData, []byte("abcd")}}, ErrProtocol},
		{"data before file", []rec{{recManifest, body}, {recData, []byte("abcd")}}, ErrProtocol},
		{"ack from sender", []rec{{recManifest, body}, {recAck, good.encode()}}, ErrProtocol},
		{"resume from sender", []rec{{recManifest, body}, {recResume, encodeFile(0, 0)}}, ErrProtocol},
		{"wrong entry", []rec{{recManifest, body}, {recFile, encodeFile(1, 0)}}, ErrProtocol},
		{"wrong offset", []rec{{recManifest, body}, {recFile, encodeFile(0, 2)}}, ErrProtocol},
		{"malformed file record", []rec{{recManifest, body}, {recFile, []byte{0}}}, ErrProtocol},
		{"too much data", []rec{{recManifest, body}, {recFile, file0}, {recData, []byte("abcde")}}, ErrVerify},
		{"wrong SHA-256", []rec{{recManifest, body}, {recFile, file0}, {recData, []byte("abcd")}, {recEnd, badSHA.encode()}}, ErrVerify},
		{"wrong length in end", []rec{{recManifest, body}, {recFile, file0}, {recData, []byte("abcd")}, {recEnd, badLen.encode()}}, ErrVerify},
		{"short data", []rec{{recManifest, body}, {recFile, file0}, {recData, []byte("abc")}, {recEnd, good.encode()}}, ErrVerify},
		{"malformed end", []rec{{recManifest, body}, {recFile, file0}, {recData, []byte("abcd")}, {recEnd, []byte{1, 2}}}, ErrProtocol},
		{"malformed manifest", []rec{{recManifest, []byte(`{"files":`)}}, ErrBadManifest},
		{"other entries", []rec{{recManifest, []byte(`{"files":[{"name":"f","size":4},{"name":"g","size":1}]}`)}}, ErrManifestMismatch},
		{"stops before end", []rec{{recManifest, body}, {recFile, file0}, {recData, []byte("abcd")}}, ErrTruncated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := t.Context()
			recv, _ := e.pair(ctx, e.addr(), e.key, e.sid,
				recvSide(ctx, m, e.dir, ReceiveOptions{}),
				func(c *Conn) outcome {
					for _, r := range tc.records {
						if err := c.writeRecord(r.t, r.p); err != nil {
							return outcome{err: err}
						}
					}
					return outcome{} // closing now ends the stream
				})
			if !errors.Is(recv.err, tc.want) {
				t.Errorf("receiver error = %v, want %v", recv.err, tc.want)
			}
			if Resumable(recv.err) {
				assertOnlyPartial(t, e.dir)
			} else {
				assertEmpty(t, e.dir)
			}
		})
	}
}

func TestCancelAccept(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := Accept(ctx, e.ln, e.key, e.sid, e.opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Accept error = %v, want context.Canceled", err)
	}
	if _, err := e.ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("listener still open after Accept returned: %v", err)
	}
}

func TestCancelDuringTransfer(t *testing.T) {
	t.Run("receiver", func(t *testing.T) {
		e := newEnv(t)
		const size = 4 << 20
		m := manifest("big", size)
		src := &blockingReader{data: bytes.NewReader(randomBytes(1<<20, 6)), release: make(chan struct{})}
		ctx := t.Context()
		rctx, cancel := context.WithCancel(ctx)
		ro := ReceiveOptions{Progress: func(_ int, n int64) {
			if n >= 1<<20-maxPayload {
				cancel() // the sender is now stuck on its source
			}
		}}
		go func() {
			<-rctx.Done()
			time.Sleep(100 * time.Millisecond)
			close(src.release)
		}()
		recv, send := e.pair(ctx, e.addr(), e.key, e.sid, recvSide(rctx, m, e.dir, ro), sendSide(ctx, m, src))
		if !errors.Is(recv.err, context.Canceled) {
			t.Errorf("receiver error = %v, want context.Canceled", recv.err)
		}
		if !errors.Is(send.err, ErrAborted) || !strings.Contains(send.err.Error(), "receiver cancelled") {
			t.Errorf("sender error = %v, want the receiver's cancellation", send.err)
		}
		assertEmpty(t, e.dir)
	})
	t.Run("sender waiting for confirmation", func(t *testing.T) {
		e := newEnv(t)
		m := manifest("f", 1000)
		ctx := t.Context()
		sctx, cancel := context.WithCancel(ctx)
		// A receiver that reads everything but never confirms.
		peer := func(c *Conn) outcome {
			for {
				t, p, err := c.readRecord()
				if err != nil {
					return outcome{err: err}
				}
				switch t {
				case recManifest:
					c.writeRecord(recStart, nil)
				case recEnd:
					cancel()
				case recAbort:
					return outcome{err: decodeAbort(p)}
				}
			}
		}
		recv, send := e.pair(ctx, e.addr(), e.key, e.sid, peer, sendSide(sctx, m, bytes.NewReader(make([]byte, 1000))))
		if !errors.Is(send.err, context.Canceled) {
			t.Errorf("sender error = %v, want context.Canceled", send.err)
		}
		if !errors.Is(recv.err, ErrAborted) || !strings.Contains(recv.err.Error(), "sender cancelled") {
			t.Errorf("receiver saw %v, want the sender's cancellation", recv.err)
		}
	})
}

func TestDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = Dial(t.Context(), addr, randomKey(t), "s", Options{DialTimeout: 2 * time.Second}) // retried until then, refused each time
	if !errors.Is(err, syscall.ECONNREFUSED) || err.Error() != "cannot reach the peer at "+addr+" (connection refused); no relay" {
		t.Errorf("Dial to a closed port: %v", err)
	}
	if _, err := Dial(t.Context(), addr, make([]byte, 16), "s", Options{}); err == nil {
		t.Error("Dial accepted a 16-byte key")
	}
	if _, err := Dial(t.Context(), addr, randomKey(t), "", Options{}); err == nil {
		t.Error("Dial accepted an empty session id")
	}
}

func TestConnCarriesOneTransfer(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m := manifest("f", 1)
	_, send := e.pair(ctx, e.addr(), e.key, e.sid, recvSide(ctx, m, e.dir, ReceiveOptions{}),
		func(c *Conn) outcome {
			if _, err := c.Send(ctx, m, one(strings.NewReader("x")), SendOptions{}); err != nil {
				return outcome{err: err}
			}
			_, err := c.Send(ctx, m, one(strings.NewReader("x")), SendOptions{})
			return outcome{err: err}
		})
	if send.err == nil {
		t.Error("second Send on one Conn succeeded")
	}
}

func TestAbortReasonIsSanitized(t *testing.T) {
	err := decodeAbort(append([]byte{1}, "gone\x1b[2J\u202eexe.txt\xff"...))
	var ae *AbortError
	if !errors.As(err, &ae) || !errors.Is(err, ErrExists) || !errors.Is(err, ErrAborted) {
		t.Fatalf("decodeAbort = %#v", err)
	}
	if ae.Reason != "gone?[2J?exe.txt?" {
		t.Errorf("reason = %q", ae.Reason)
	}
	if err := decodeAbort([]byte{200}); errors.Is(err, ErrExists) || !errors.Is(err, ErrAborted) {
		t.Errorf("unknown code: %v", err)
	}
}
