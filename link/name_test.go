package link

import (
	"errors"
	"strings"
	"testing"
)

// pathCases pairs each rule with names it must refuse (why is a fragment of
// the expected message, so a name refused for another reason fails) and
// near misses it must accept (why == "").
var pathCases = []struct {
	name, why string
}{
	{"", "empty name"},
	{"a", ""},

	{"/etc/passwd", "absolute path"},
	{"\\x", "absolute path"},
	{"etc/passwd", ""},

	{"a\\b", "backslash"},
	{"a/b\\", "backslash"},
	{"a/b", ""},

	{"a//b", "empty element"},
	{"a/", "empty element"},
	{"a/b/c", ""},

	{".", "refers to a directory"},
	{"..", "refers to a directory"},
	{"../x", "refers to a directory"},
	{"a/./b", "refers to a directory"},
	{"a/..", "refers to a directory"},
	{"..a/b..c", ""},
	{".bashrc", ""},
	{"a/.git/config", ""},

	{"c:", "drive prefix"},
	{"C:x", "drive prefix"},
	{"a/c:x", "drive prefix"},
	{"ab:c", ""},
	{"1:x", ""},

	{"CON", "device name"},
	{"con.txt", "device name"},
	{"NUL", "device name"},
	{"Com1", "device name"},
	{"LPT9.log", "device name"},
	{"COM¹", "device name"},
	{"aux .tar.gz", "device name"},
	{"con:x", "device name"},
	{"dir/nul", "device name"},
	{"CONSOLE.txt", ""},
	{"COM10", ""},
	{"x.CON", ""},
	{"dir/nully", ""},

	{"a.", "ends in a dot or space"},
	{"a ", "ends in a dot or space"},
	{"...", "ends in a dot or space"},
	{"dir./x", "ends in a dot or space"},
	{"x/ ", "ends in a dot or space"},
	{"a.b", ""},
	{" a", ""},

	{"\xff", "not valid UTF-8"},
	{"a/\xc3", "not valid UTF-8"},
	{"\ufffd", ""},
	{"résumé/日本語.txt", ""},

	{"a\x00b", "NUL"},
	{"x\x1b[31m", "control character U+001B"},
	{"tab\there", "control character U+0009"},
	{"new\nline", "control character U+000A"},
	{"del\x7f", "control character U+007F"},
	{"c1\u009b", "control character U+009B"},
	{"evil\u202etxt.exe", "control character U+202E"},
	{"iso\u2066late", "control character U+2066"},
	{"line\u2028sep", "control character U+2028"},
	{"para\u2029sep", "control character U+2029"},
	{"zero\u200bwidth", "invisible character U+200B"},
	{"soft\u00adhyphen", "invisible character U+00AD"},
	{"\ufeffbom", "invisible character U+FEFF"},
	{"tag\U000E0041", "invisible character U+E0041"},
	{"hangul\u3164filler", "invisible character U+3164"},
	{"family\U0001F468\u200d\U0001F469\u200d\U0001F467", ""}, // emoji ZWJ sequence
	{"می\u200cخواهم", ""},                                    // Persian with ZWNJ
	{"heart\u2764\ufe0f", ""},                                // emoji variation selector

	{strings.Repeat("n", 256), "256 bytes long"},
	{"d/" + strings.Repeat("n", 256), "256 bytes long"},
	{strings.Repeat("n", 255), ""},
	{strings.Repeat("é", 128), "256 bytes long"},

	{strings.Repeat(strings.Repeat("d", 200)+"/", 20) + strings.Repeat("f", 77), "4097 bytes long"},
	{strings.Repeat(strings.Repeat("d", 200)+"/", 20) + strings.Repeat("f", 76), ""},

	{strings.Repeat("d/", 64) + "f", "65 levels deep"},
	{strings.Repeat("d/", 63) + "f", ""},
}

func TestSafePath(t *testing.T) {
	for _, c := range pathCases {
		err := SafePath(c.name)
		if c.why == "" {
			if err != nil {
				t.Errorf("SafePath(%q) = %v, want nil", c.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrUnsafeName) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("SafePath(%q) = %v, want ErrUnsafeName saying %q", c.name, err, c.why)
			continue
		}
		if strings.ContainsFunc(err.Error(), isControl) || strings.ContainsFunc(err.Error(), isInvisible) {
			t.Errorf("error for %q carries raw control characters: %q", c.name, err)
		}
	}
}

func TestSafeName(t *testing.T) {
	// A single element obeys every element rule of SafePath.
	for _, c := range pathCases {
		if strings.Contains(c.name, "/") {
			continue
		}
		err := SafeName(c.name)
		if (err == nil) != (c.why == "") || (err != nil && !errors.Is(err, ErrUnsafeName)) {
			t.Errorf("SafeName(%q) = %v, want refused: %v", c.name, err, c.why != "")
		}
	}
	for _, name := range []string{"a/b", "../x", "a/", "/"} {
		if err := SafeName(name); !errors.Is(err, ErrUnsafeName) {
			t.Errorf("SafeName(%q) = %v, want ErrUnsafeName", name, err)
		}
	}
	if err := SafeName("a/b"); err == nil || !strings.Contains(err.Error(), "path separator") {
		t.Errorf("SafeName(%q) = %v, want a path separator error", "a/b", err)
	}
}

func TestFold(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{"a", "a", true},
		{"README", "readme", true},
		{"Dir/File.TXT", "dir/file.txt", true},
		{"résumé", "re\u0301sume\u0301", true}, // NFC vs NFD
		{"RÉSUMÉ", "re\u0301sume\u0301", true}, // case and form at once
		{"Straße", "STRASSE", true},            // full folding
		{"\u212a", "k", true},                  // Kelvin sign
		{"ΣΊΣΥΦΟΣ", "σίσυφος", true},           // final sigma
		{"a/b", "a/c", false},
		{"ab", "a/b", false},
		{"resume", "résumé", false},
	} {
		if got := Fold(c.a) == Fold(c.b); got != c.same {
			t.Errorf("Fold(%q) == Fold(%q) is %v, want %v (%q, %q)", c.a, c.b, got, c.same, Fold(c.a), Fold(c.b))
		}
	}
	if got := Fold("ÀB/Ç"); got != "àb/ç" {
		t.Errorf("Fold(%q) = %q, want %q", "ÀB/Ç", got, "àb/ç")
	}
}
