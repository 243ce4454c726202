package api

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidUserName(t *testing.T) {
	valid := []string{
		"a",
		"alice",
		"bob2",
		"a_b",
		"a-b",
		"x0_-9",
		"a" + strings.Repeat("b", 31), // 32: the longest
	}
	for _, name := range valid {
		if err := ValidUserName(name); err != nil {
			t.Errorf("ValidUserName(%q) = %v, want nil", name, err)
		}
	}

	invalid := []string{
		"",
		"a" + strings.Repeat("b", 32), // 33
		"Alice",
		"aLICE",
		"1alice",
		"_alice",
		"-alice",
		"al.ice",  // a subject token separator
		"al*",     // subject wildcards
		"al>",     //
		"a b",     //
		"a/b",     // a path separator in storage keys
		"a\\b",    //
		"alice\n", // $ must not match before a trailing newline
		"alice\x00",
		"élise",
		"alice ", //
		" alice", //
	}
	for _, name := range invalid {
		err := ValidUserName(name)
		if err == nil {
			t.Errorf("ValidUserName(%q) = nil, want an error", name)
			continue
		}
		if CodeOf(err) != CodeInvalid {
			t.Errorf("ValidUserName(%q) code = %q, want %q", name, CodeOf(err), CodeInvalid)
		}
		if strings.ContainsAny(err.Error(), "\n\x00") {
			t.Errorf("ValidUserName(%q) message carries raw control characters: %q", name, err)
		}
	}
}

func TestValidSessionID(t *testing.T) {
	valid := []string{
		"abcdefghijklmnop",
		"qrstuvwxyz234567",
		"aaaaaaaaaaaaaaaa",
		"2222222222222222",
	}
	for _, id := range valid {
		if err := ValidSessionID(id); err != nil {
			t.Errorf("ValidSessionID(%q) = %v, want nil", id, err)
		}
	}

	invalid := []string{
		"",
		"abcdefghijklmno",   // 15
		"abcdefghijklmnopq", // 17
		"ABCDEFGHIJKLMNOP",  // base32 upper case is not the wire form
		"abcdefghijklmno0",  // 0, 1, 8, 9 are not base32
		"abcdefghijklmno1",
		"abcdefghijklmno8",
		"abcdefghijklmno9",
		"abcdefghijklmno=",
		"abcdefgh.jklmnop", // subject separator
		"abcdefgh*jklmnop",
		"abcdefgh>jklmnop",
		"abcdefghijklmnop\n",
		"abcdefghijklmnop ",
	}
	for _, id := range invalid {
		err := ValidSessionID(id)
		if err == nil {
			t.Errorf("ValidSessionID(%q) = nil, want an error", id)
			continue
		}
		if CodeOf(err) != CodeInvalid {
			t.Errorf("ValidSessionID(%q) code = %q, want %q", id, CodeOf(err), CodeInvalid)
		}
	}
}

// A hostile id must not make the error message (which travels in a reply
// header) arbitrarily long or raw.
func TestValidSessionIDMessageBounded(t *testing.T) {
	for _, id := range []string{
		strings.Repeat("x", 100_000),
		strings.Repeat("é", 1000), // truncation may cut a rune in half
		"line1\r\nline2",
	} {
		err := ValidSessionID(id)
		if err == nil {
			t.Fatalf("ValidSessionID accepted %q", id[:10])
		}
		msg := err.Error()
		if len(msg) > 200 {
			t.Errorf("message has %d bytes, want a truncated id", len(msg))
		}
		if !utf8.ValidString(msg) || strings.ContainsAny(msg, "\r\n") {
			t.Errorf("message is not clean printable text: %q", msg)
		}
	}
}
