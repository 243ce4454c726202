package progress

import (
	"math"
	"math/bits"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// FormatBytes renders n in binary units with one decimal ("512.0 MiB"),
// bytes below 1 KiB as an integer ("100 B").
func FormatBytes(n int64) string {
	if n < 0 {
		n = 0
	}
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	const units = "KMGTPE"
	v := float64(n)
	for i := range len(units) {
		v /= 1024
		// Move up a unit when rounding to one decimal would print 1024.0.
		if v < 1023.95 || i == len(units)-1 {
			return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i:i+1] + "iB"
		}
	}
	panic("unreachable")
}

// formatRate renders a rate in bytes per second.
func formatRate(bps float64) string {
	return FormatBytes(int64(bps)) + "/s"
}

// formatETA renders whole seconds, rounded up so "0s" means finished.
func formatETA(sec int64) string {
	return (time.Duration(sec) * time.Second).String()
}

// etaSeconds is the time left for remaining bytes at rate, rounded up;
// -1 when it cannot be known (no rate, or a stall).
func etaSeconds(remaining int64, rate float64) int64 {
	if remaining <= 0 {
		return 0
	}
	if rate <= 0 {
		return -1
	}
	// Capped so the result still fits a time.Duration.
	const most = math.MaxInt64 / int64(time.Second)
	s := math.Ceil(float64(remaining) / rate)
	if s >= float64(most) {
		return most
	}
	return int64(s)
}

// percent is floor(done*100/size), so 100% appears only when complete;
// an empty entry is 100%.
func percent(done, size int64) int64 {
	if size <= 0 {
		return 100
	}
	if done >= size {
		return 100
	}
	if done <= 0 {
		return 0
	}
	// 128-bit product: done*100 may overflow; the quotient is below 100.
	hi, lo := bits.Mul64(uint64(done), 100)
	q, _ := bits.Div64(hi, lo, uint64(size))
	return int64(q)
}

// displayName returns name unchanged when every rune is printable, and a
// strconv.Quote'd form otherwise, so terminal control sequences or bidi
// overrides in a name (already rejected by manifest validation) can never
// reach the screen raw.
func displayName(name string) string {
	if !utf8.ValidString(name) {
		return strconv.Quote(name)
	}
	for _, r := range name {
		if !strconv.IsPrint(r) {
			return strconv.Quote(name)
		}
	}
	return name
}

// sanitizeText escapes every non-printable rune except newline and tab, for
// free-form messages that may carry peer-supplied text.
func sanitizeText(s string) string {
	clean := utf8.ValidString(s)
	if clean {
		for _, r := range s {
			if r != '\n' && r != '\t' && !strconv.IsPrint(r) {
				clean = false
				break
			}
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(s[i])|0x100, 16)[1:])
		case r == '\n' || r == '\t' || strconv.IsPrint(r):
			b.WriteString(s[i : i+n])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}

// shorten keeps at most max runes of a display name, dropping from the
// front: the tail of a path is the part that tells files apart.
func shorten(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return "…" + string(r[len(r)-(max-1):])
}
