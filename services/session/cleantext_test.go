package session_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sftproject/sft/services/session"
)

func TestCleanText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"wrong file", "wrong file"},
		{"  padded\n", "padded"},
		{"\x1b[31mred\x1b[0m", "[31mred [0m"},
		{"a\r\nb", "a  b"},
		{"tab\there", "tab here"},
		{"del\x7f", "del"},
		{"c1\u0085\u009bx", "c1  x"},
		{"bidi \u202eexe.txt\u202c", "bidi  exe.txt"},
		{"isolate \u2066x\u2069", "isolate  x"},
		{"sep\u2028x\u2029y", "sep x y"},
		{"bad\xffutf8", "bad?utf8"},
		{"emoji 👩‍💻 kept", "emoji 👩‍💻 kept"}, // the zero-width joiner is not a control
		{"ünïcödé", "ünïcödé"},
		{"", ""},
		{"\n\t ", ""},
	}
	for _, tc := range tests {
		if got := session.CleanText(tc.in); got != tc.want {
			t.Errorf("CleanText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := session.CleanText(strings.Repeat("é", session.MaxReason))
	if !strings.HasSuffix(long, "…") || len(long) > session.MaxReason+len("…") || !utf8.ValidString(long) {
		t.Errorf("long text cut to %d bytes: %q", len(long), long)
	}
}

// FuzzCleanText checks the sanitiser's promises on any client text.
func FuzzCleanText(f *testing.F) {
	f.Add("wrong file")
	f.Add("\x1b]0;title\x07")
	f.Add(strings.Repeat("é", 400))
	f.Add("\u202e\u2028\xff")
	f.Fuzz(func(t *testing.T, in string) {
		out := session.CleanText(in)
		checkClean(t, out)
		if len(out) > session.MaxReason+len("…") {
			t.Errorf("%d bytes out", len(out))
		}
		if out != strings.TrimSpace(out) {
			t.Errorf("%q is not trimmed", out)
		}
		if again := session.CleanText(out); len(out) <= session.MaxReason && again != out {
			t.Errorf("not idempotent: %q then %q", out, again)
		}
	})
}
