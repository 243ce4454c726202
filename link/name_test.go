package link

import (
	"errors"
	"strings"
	"testing"
)

var unsafeNames = []string{
	"../x", "a/b", "a\\b", "..", ".", "", "x\x1b[31m", "\xff", "a\x00b", "tab\there", "del\x7f",
	"c1\u009b", "evil\u202etxt.exe", "line\u2028sep",
	"CON", "con.txt", "NUL", "Com1", "LPT9.log", "COM¹", "aux .tar.gz",
	"C:x", "c:", strings.Repeat("n", 256),
}

func TestSafeName(t *testing.T) {
	for _, name := range unsafeNames {
		err := SafeName(name)
		if !errors.Is(err, ErrUnsafeName) {
			t.Errorf("SafeName(%q) = %v, want ErrUnsafeName", name, err)
			continue
		}
		if strings.ContainsAny(err.Error(), "\x00\x1b\x7f") {
			t.Errorf("error for %q carries raw control characters: %q", name, err)
		}
	}
	for _, name := range []string{
		"a", "report.pdf", ".bashrc", "...", "my file (1).txt", "résumé.docx", "日本語.txt", "CONSOLE.txt",
		"COM10", "ab:c", "x.CON", "\ufffd", strings.Repeat("n", 255),
	} {
		if err := SafeName(name); err != nil {
			t.Errorf("SafeName(%q) = %v, want nil", name, err)
		}
	}
}
