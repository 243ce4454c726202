package link

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/flynn/noise"
)

func FuzzSafeName(f *testing.F) {
	f.Fuzz(func(t *testing.T, name string) {
		err := SafeName(name)
		if err != nil {
			if !errors.Is(err, ErrUnsafeName) {
				t.Fatalf("SafeName(%q) = %v, not ErrUnsafeName", name, err)
			}
			if strings.ContainsFunc(err.Error(), isControl) {
				t.Fatalf("error message carries control characters: %q", err)
			}
			return
		}
		if !utf8.ValidString(name) || len(name) > MaxNameLen || strings.ContainsFunc(name, isControl) {
			t.Fatalf("accepted %q", name)
		}
		if !filepath.IsLocal(name) || filepath.Base(name) != name || strings.ContainsAny(name, `/\`) {
			t.Fatalf("accepted %q, which is not a single local path element", name)
		}
		if dir := filepath.Dir(filepath.Join("/dest", name)); dir != "/dest" {
			t.Fatalf("%q escapes the destination: lands in %s", name, dir)
		}
	})
}

func FuzzManifestDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeManifest(data)
		if err != nil {
			if !errors.Is(err, ErrBadManifest) && !errors.Is(err, ErrUnsafeName) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if err := checkManifest(m); err != nil {
			t.Fatalf("decoded manifest fails its own check: %v", err)
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := decodeManifest(again)
		if err != nil || !sameManifest(m, m2) {
			t.Fatalf("re-encoded manifest %s does not decode to itself: %v", again, err)
		}
	})
}

// fuzzRecords splits s into records the way the record fuzzers read their
// input: a type byte, a 2-byte big-endian length, then the payload, cut to
// what is left and to maxPayload. It stops early when each returns false.
func fuzzRecords(s []byte, each func(t recType, p []byte) bool) {
	for len(s) > 0 {
		t := recType(s[0])
		s = s[1:]
		n := 0
		if len(s) >= 2 {
			n = int(binary.BigEndian.Uint16(s))
			s = s[2:]
		}
		n = min(n, len(s), maxPayload)
		if !each(t, s[:n]) {
			return
		}
		s = s[n:]
	}
}

// fuzzManifest is what the receiver in FuzzRecord expects; the seed corpus
// holds a valid transfer of it.
var fuzzManifest = manifest("f", 5)

// FuzzRecord drives a receiver with arbitrary record sequences after the
// handshake. The first input byte selects how the rest is used: odd, as
// records (type byte, 2-byte big-endian length, payload) that the harness
// encrypts with the right keys, so decoding past the AEAD gets exercised;
// even, as raw bytes on the wire. Whatever arrives, Receive must not panic
// and must leave either a verified file or nothing in the directory.
func FuzzRecord(f *testing.F) {
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) == 0 {
			return
		}
		dir := t.TempDir()
		a, b := net.Pipe()
		snd, rcv := newConn(a, log), newConn(b, log)
		rcv.sid = "fuzz"
		k1, k2 := [32]byte{1}, [32]byte{2}
		snd.enc, rcv.dec = noise.UnsafeNewCipherState(cipherSuite, k1, 0), noise.UnsafeNewCipherState(cipherSuite, k1, 0)
		rcv.enc, snd.dec = noise.UnsafeNewCipherState(cipherSuite, k2, 0), noise.UnsafeNewCipherState(cipherSuite, k2, 0)

		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			io.Copy(io.Discard, a) // the receiver's ack or abort
		}()
		go func() {
			defer wg.Done()
			defer a.Close()
			if input[0]%2 == 0 {
				a.Write(input[1:])
				return
			}
			fuzzRecords(input[1:], func(t recType, p []byte) bool { return snd.writeRecord(t, p) == nil })
		}()
		res, err := rcv.Receive(t.Context(), fuzzManifest, dir, ReceiveOptions{})
		rcv.Close()
		wg.Wait()

		if err != nil {
			// Only partial data kept for a resume may remain, never
			// anything under the file's name.
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if !strings.HasPrefix(e.Name(), partialPrefix) || !Resumable(err) {
					t.Fatalf("failed receive (%v) left %s in the directory", err, e.Name())
				}
			}
			return
		}
		path := filepath.Join(dir, fuzzManifest.Files[0].Name)
		got, rerr := os.ReadFile(path)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if int64(len(got)) != fuzzManifest.Files[0].Size || sha256.Sum256(got) != res.SHA256 {
			t.Fatalf("saved file does not match the reported result %+v", res)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Fatalf("directory holds %d entries after a successful receive", len(ents))
		}
	})
}

// FuzzSelect feeds readSelect what the accepting side reads after the
// handshake. As in FuzzRecord, the first input byte selects how the rest is
// used: odd, as records (type byte, 2-byte big-endian length, payload) that
// the harness encrypts with the right key; even, as raw bytes. readSelect
// must accept exactly a first record that is an empty select, and must
// never read past the first frame, which belongs to the Conn.
func FuzzSelect(f *testing.F) {
	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) == 0 {
			return
		}
		k := [32]byte{3}
		enc, dec := noise.UnsafeNewCipherState(cipherSuite, k, 0), noise.UnsafeNewCipherState(cipherSuite, k, 0)
		var wire []byte
		validFirst := false
		if input[0]%2 == 0 {
			wire = input[1:]
		} else {
			fuzzRecords(input[1:], func(rt recType, p []byte) bool {
				if len(wire) == 0 {
					validFirst = rt == recSelect && len(p) == 0
				}
				ct, err := enc.Encrypt(nil, nil, append([]byte{byte(rt)}, p...))
				if err != nil {
					t.Fatal(err)
				}
				wire = binary.BigEndian.AppendUint16(wire, uint16(len(ct)))
				wire = append(wire, ct...)
				return true
			})
		}
		r := bytes.NewReader(wire)
		err := readSelect(r, dec)
		read := len(wire) - r.Len()
		if len(wire) >= frameHeader {
			if frame := frameHeader + int(binary.BigEndian.Uint16(wire)); read > frame {
				t.Fatalf("read %d bytes, past the first frame of %d", read, frame)
			}
		}
		switch {
		case validFirst && err != nil:
			t.Fatalf("rejected a valid select record: %v", err)
		case input[0]%2 == 1 && !validFirst && err == nil:
			t.Fatal("accepted a first record that is not an empty select")
		case err != nil && !errors.Is(err, ErrHandshake) && !errors.Is(err, ErrProtocol) && !peerClosed(err):
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}
