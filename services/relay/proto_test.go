package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sftproject/sft/api"
)

func TestPreamble(t *testing.T) {
	b, err := appendPreamble(nil, "a.b.c")
	if err != nil {
		t.Fatal(err)
	}
	if want := "SFTR1\n\x00\x05a.b.c"; string(b) != want {
		t.Fatalf("preamble %q, want %q", b, want)
	}
	r := bytes.NewReader(append(b, "peer bytes"...))
	got, err := readPreamble(r)
	if err != nil || got != "a.b.c" {
		t.Fatalf("readPreamble = %q, %v", got, err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "peer bytes" {
		t.Errorf("readPreamble read past the preamble: %q left", rest)
	}
	for _, bad := range []string{"", strings.Repeat("x", MaxTicket+1)} {
		if _, err := appendPreamble(nil, bad); err == nil {
			t.Errorf("appendPreamble of %d bytes succeeded", len(bad))
		}
	}

	for name, in := range map[string]string{
		"empty":         "",
		"http":          "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"other version": "SFTR2\n\x00\x01x",
		"zero length":   "SFTR1\n\x00\x00",
		"too long":      "SFTR1\n\x08\x01" + strings.Repeat("x", 2049),
		"truncated":     "SFTR1\n\x00\x05a.b",
		"no length":     "SFTR1\n\x00",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := readPreamble(strings.NewReader(in)); !errors.Is(err, errPreamble) {
				t.Fatalf("readPreamble = %v, want errPreamble", err)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	var b []byte
	b = appendStatus(b, kindAccepted, "waiting for the peer")
	b = append(b, refusal(api.Errorf(api.CodeForbidden, "ticket expired"))...)
	b = appendStatus(b, kindPaired, "")
	b = append(b, "peer"...)
	r := bytes.NewReader(b)
	for _, want := range []struct {
		k   kind
		msg string
	}{{kindAccepted, "waiting for the peer"}, {kindRefused, "forbidden: ticket expired"}, {kindPaired, ""}} {
		k, msg, err := readStatus(r)
		if err != nil || k != want.k || msg != want.msg {
			t.Fatalf("readStatus = %s %q %v, want %s %q", k, msg, err, want.k, want.msg)
		}
	}
	if rest, _ := io.ReadAll(r); string(rest) != "peer" {
		t.Errorf("readStatus read past its frames: %q left", rest)
	}

	long := strings.Repeat("é", maxStatus) // 2 bytes each
	k, msg, err := readStatus(bytes.NewReader(appendStatus(nil, kindAccepted, long)))
	if err != nil || k != kindAccepted || len(msg) > maxStatus || !strings.HasPrefix(long, msg) {
		t.Errorf("a long message: %s %d bytes, %v; want it cut to %d bytes at a rune", k, len(msg), err, maxStatus)
	}

	frame := func(k byte, msg string) string {
		return string(append(binary.BigEndian.AppendUint16([]byte{k}, uint16(len(msg))), msg...))
	}
	for name, in := range map[string]string{
		"empty":            "",
		"unknown kind":     frame(9, "x"),
		"zero kind":        frame(0, ""),
		"over the limit":   string([]byte{1, 0x04, 0x01}) + strings.Repeat("x", maxStatus+1),
		"truncated":        frame(1, "waiting")[:5],
		"invalid UTF-8":    frame(1, "\xff"),
		"escape":           frame(3, "forbidden: \x1b[2Jgone"),
		"bidi override":    frame(3, "forbidden: \u202egnp.exe"),
		"refusal no code":  frame(3, "no code here"),
		"refusal bad code": frame(3, "Forbidden: x"),
		"refusal empty":    frame(3, ""),
	} {
		t.Run(name, func(t *testing.T) {
			if k, msg, err := readStatus(strings.NewReader(in)); err == nil {
				t.Fatalf("readStatus accepted %q as %s %q", in, k, msg)
			}
		})
	}
}

func FuzzReadPreamble(f *testing.F) {
	f.Add([]byte("SFTR1\n\x00\x05a.b.c"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		ticket, err := readPreamble(r)
		if err != nil {
			return
		}
		// What is accepted is a preamble, re-encoded the same, and nothing
		// after it was read.
		again, err := appendPreamble(nil, ticket)
		if err != nil {
			t.Fatalf("accepted a ticket appendPreamble refuses: %v", err)
		}
		if used := len(b) - r.Len(); !bytes.Equal(b[:used], again) {
			t.Fatalf("read %q, which re-encodes as %q", b[:used], again)
		}
	})
}

func FuzzReadStatus(f *testing.F) {
	f.Add([]byte("\x01\x00\x14waiting for the peer"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		k, msg, err := readStatus(r)
		if err != nil {
			return
		}
		if !utf8.ValidString(msg) || strings.ContainsFunc(msg, unprintable) || len(msg) > maxStatus {
			t.Fatalf("accepted an unprintable or long message %q", msg)
		}
		if k == kindRefused {
			if _, _, err := parseRefusal(msg); err != nil {
				t.Fatalf("accepted a refusal without a code: %q", msg)
			}
		}
		if used := len(b) - r.Len(); !bytes.Equal(b[:used], appendStatus(nil, k, msg)) {
			t.Fatalf("read %q past its frame, or it re-encodes otherwise", b[:used])
		}
	})
}
