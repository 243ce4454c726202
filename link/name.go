package link

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxNameLen is the longest file name accepted, in bytes (the common file
// system limit).
const MaxNameLen = 255

// SafeName checks a file name received from a peer before it is used as a
// path element. It refuses anything that could leave the destination
// directory (separators, ".", ".."), names that are unusable or dangerous on
// some platform (Windows drive prefixes and device names), and characters
// that could rewrite a terminal or disguise the name (control characters,
// C1, Unicode direction overrides, invalid UTF-8). The error wraps
// ErrUnsafeName and names the problem; the name is quoted with escapes.
func SafeName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s", ErrUnsafeName, name, why)
	}
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrUnsafeName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w %q…: %d bytes long, the limit is %d", ErrUnsafeName, name[:32], len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return bad("not valid UTF-8")
	case name == "." || name == "..":
		return bad("refers to a directory")
	}
	for _, r := range name {
		switch {
		case r == '/' || r == '\\':
			return bad("contains a path separator")
		case r == 0:
			return bad("contains a NUL byte")
		case isControl(r):
			return bad(fmt.Sprintf("contains control character %U", r))
		}
	}
	if len(name) >= 2 && name[1] == ':' && isASCIILetter(name[0]) {
		return bad("starts with a Windows drive prefix")
	}
	if isWindowsDevice(name) {
		return bad("is a reserved Windows device name")
	}
	return nil
}

func isASCIILetter(b byte) bool { return 'a' <= b|0x20 && b|0x20 <= 'z' }

// isWindowsDevice reports names Windows maps to devices whatever the
// directory: CON, NUL, COM1… also with an extension ("nul.txt") or trailing
// spaces, in any case.
func isWindowsDevice(name string) bool {
	base, _, _ := strings.Cut(name, ".")
	base = strings.ToUpper(strings.TrimRight(base, " "))
	switch base {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$":
		return true
	}
	if len(base) < 4 || (base[:3] != "COM" && base[:3] != "LPT") {
		return false
	}
	switch base[3:] {
	case "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "¹", "²", "³":
		return true
	}
	return false
}
