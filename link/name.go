package link

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// Limits on names received from a peer.
const (
	// MaxNameLen is the longest path element accepted, in bytes (the common
	// file system limit).
	MaxNameLen = 255
	// MaxPathLen is the longest whole path accepted, in bytes (Linux PATH_MAX).
	MaxPathLen = 4096
	// MaxDepth is the largest number of elements in a path.
	MaxDepth = 64
)

// SafeName checks a single path element received from a peer, such as the
// name of a lone file. It applies the element rules of SafePath and also
// refuses '/'. The error wraps ErrUnsafeName and names the problem.
func SafeName(name string) error {
	if strings.Contains(name, "/") {
		return fmt.Errorf("%w %s: contains a path separator", ErrUnsafeName, quote(name))
	}
	return SafePath(name)
}

// SafePath checks a manifest entry name before the receiver turns it into a
// path below its destination directory. p must be relative, use '/' between
// elements and be in canonical form. SafePath refuses anything that could
// leave the destination (absolute paths, "..", backslashes), forms that name
// the same file in several ways ("a//b", "./a", trailing '/', names Windows
// strips of trailing dots and spaces), names unusable or dangerous on some
// platform (drive prefixes, device names like CON or nul.txt), and
// characters that could rewrite a terminal or disguise the name (control
// characters, C1, direction overrides, line separators, invisible format
// characters, invalid UTF-8). The error wraps ErrUnsafeName and says what is
// wrong; the name is quoted with escapes, so printing it is safe.
func SafePath(p string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w %s: %s", ErrUnsafeName, quote(p), why)
	}
	switch {
	case p == "":
		return fmt.Errorf("%w: empty name", ErrUnsafeName)
	case len(p) > MaxPathLen:
		return fmt.Errorf("%w %s…: %d bytes long, the limit is %d", ErrUnsafeName, quote(p[:32]), len(p), MaxPathLen)
	case !utf8.ValidString(p):
		return bad("not valid UTF-8")
	case p[0] == '/' || p[0] == '\\':
		return bad("is an absolute path")
	}
	for _, r := range p {
		switch {
		case r == '\\':
			return bad(`contains a backslash (the separator is "/")`)
		case r == 0:
			return bad("contains a NUL byte")
		case isControl(r):
			return bad(fmt.Sprintf("contains control character %U", r))
		case isInvisible(r):
			return bad(fmt.Sprintf("contains invisible character %U", r))
		}
	}
	if n := strings.Count(p, "/") + 1; n > MaxDepth {
		return bad(fmt.Sprintf("%d levels deep, the limit is %d", n, MaxDepth))
	}
	for elem := range strings.SplitSeq(p, "/") {
		if why := elementProblem(elem); why != "" {
			if elem == p {
				return bad(why)
			}
			return bad(fmt.Sprintf("element %s %s", quote(elem), why))
		}
	}
	return nil
}

// elementProblem applies the rules for one path element whose characters
// have already been checked; it returns "" for a usable element.
func elementProblem(e string) string {
	switch {
	case e == "":
		return "has an empty element (a doubled or trailing '/')"
	case e == "." || e == "..":
		return "refers to a directory"
	case len(e) > MaxNameLen:
		return fmt.Sprintf("is %d bytes long, the limit is %d", len(e), MaxNameLen)
	case len(e) >= 2 && e[1] == ':' && isASCIILetter(e[0]):
		return "starts with a Windows drive prefix"
	case isWindowsDevice(e):
		return "is a reserved Windows device name"
	case e[len(e)-1] == '.' || e[len(e)-1] == ' ':
		// Windows drops them, so "a." and "a" would be one file.
		return "ends in a dot or space"
	}
	return ""
}

// quote is %q that also escapes the few invisible characters Go counts as
// printable (the Hangul fillers), so a refused name shows what it holds.
func quote(s string) string {
	q := strconv.Quote(s)
	if !strings.ContainsFunc(q, isInvisible) {
		return q
	}
	var b strings.Builder
	for _, r := range q {
		if isInvisible(r) {
			fmt.Fprintf(&b, `\u%04x`, r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isASCIILetter(b byte) bool { return 'a' <= b|0x20 && b|0x20 <= 'z' }

// isWindowsDevice reports names Windows maps to devices whatever the
// directory: CON, NUL, COM1… also with an extension ("nul.txt"), a stream
// suffix ("con:x") or trailing spaces, in any case.
func isWindowsDevice(name string) bool {
	base := name
	if i := strings.IndexAny(base, ".:"); i >= 0 {
		base = base[:i]
	}
	base = strings.TrimRight(base, " ")
	if len(base) > len("CONOUT$") {
		return false
	}
	base = strings.ToUpper(base)
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

// isInvisible reports characters that isControl lets through but that
// render as nothing, so "a\u200bb" would pass for "ab": format characters
// (zero-width space, soft hyphen, BOM, tags…) and the Hangul fillers. The
// zero-width joiner and non-joiner stay allowed: emoji sequences and
// Persian words need them.
func isInvisible(r rune) bool {
	switch r {
	case '\u200c', '\u200d':
		return false
	case '\u115f', '\u1160', '\u3164', '\uffa0':
		return true
	}
	return r >= 0x80 && unicode.Is(unicode.Cf, r)
}

// Fold returns the key under which the receiver's file system may treat two
// names as one: Unicode case folding and canonical (NFC) normalisation,
// applied element by element, so "Résumé/A" and "re\u0301sume\u0301/a" fold
// alike, as they would name one file on Windows or macOS. Two manifest
// entries whose names fold alike collide. The result is a comparison key,
// not a path to create.
func Fold(p string) string {
	return newFolder().fold(p)
}

// folder holds a case folder, which is stateful (one per goroutine), and
// the keys of the non-ASCII elements seen so far: in a tree, directory
// names repeat in every path below them.
type folder struct {
	c    cases.Caser
	seen map[string]string
}

func newFolder() *folder { return &folder{c: cases.Fold(), seen: make(map[string]string)} }

func (f *folder) fold(p string) string {
	if isASCIIFolded(p) {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i, e := range strings.Split(p, "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(f.element(e))
	}
	return b.String()
}

func (f *folder) element(e string) string {
	if isASCII(e) {
		// Folding ASCII is lower-casing it.
		return strings.ToLower(e)
	}
	if k, ok := f.seen[e]; ok {
		return k
	}
	// NFD first: folding is defined on decomposed text (Unicode's
	// canonical caseless match), then NFC makes the key canonical.
	k := norm.NFC.String(f.c.String(norm.NFD.String(e)))
	f.seen[e] = k
	return k
}

// isASCIIFolded reports strings that folding leaves unchanged: ASCII with
// no upper case letter. Most names are, and skip the Unicode machinery.
func isASCIIFolded(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || ('A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
