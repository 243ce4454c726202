package progress

import (
	"math"
	"testing"
	"time"
)

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{-5, "0 B"},
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{1024*1024 - 1, "1.0 MiB"}, // never "1024.0 KiB"
		{512 * mib, "512.0 MiB"},
		{1 << 30, "1.0 GiB"},
		{300*mib + 205*kib, "300.2 MiB"},
		{5 << 40, "5.0 TiB"},
		{math.MaxInt64, "8.0 EiB"},
	}
	for _, tt := range tests {
		if got := FormatBytes(tt.n); got != tt.want {
			t.Errorf("FormatBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestPercentAndETA(t *testing.T) {
	pct := []struct{ done, size, want int64 }{
		{0, 0, 100},
		{0, 10, 0},
		{5, 10, 50},
		{999, 1000, 99}, // 100% only when complete
		{1000, 1000, 100},
		{math.MaxInt64 / 2, math.MaxInt64, 49},
		{7, -1, 100},
	}
	for _, tt := range pct {
		if got := percent(tt.done, tt.size); got != tt.want {
			t.Errorf("percent(%d, %d) = %d, want %d", tt.done, tt.size, got, tt.want)
		}
	}
	eta := []struct {
		remaining int64
		rate      float64
		want      int64
		text      string
	}{
		{0, 0, 0, "0s"},
		{100, 0, -1, ""},
		{100, 100, 1, "1s"},
		{101, 100, 2, "2s"},
		{3700, 1, 3700, "1h1m40s"},
		{math.MaxInt64, 1e-9, math.MaxInt64 / int64(time.Second), ""},
	}
	for _, tt := range eta {
		got := etaSeconds(tt.remaining, tt.rate)
		if got != tt.want {
			t.Errorf("etaSeconds(%d, %v) = %d, want %d", tt.remaining, tt.rate, got, tt.want)
		}
		if tt.text != "" && formatETA(got) != tt.text {
			t.Errorf("formatETA(%d) = %q, want %q", got, formatETA(got), tt.text)
		}
	}
}

func TestDisplayName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a/b c.txt", "a/b c.txt"},
		{"résumé/日本.txt", "résumé/日本.txt"},
		{"a\nb", `"a\nb"`},
		{"\x1b[2Jx", `"\x1b[2Jx"`},
		{"abc\u202egpj.exe", `"abc\u202egpj.exe"`}, // bidi override
		{"bad\xff", `"bad\xff"`},
		{"tab\t", `"tab\t"`},
	}
	for _, tt := range tests {
		if got := displayName(tt.in); got != tt.want {
			t.Errorf("displayName(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestSanitizeText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain text", "plain text"},
		{"two\nlines\tand tab", "two\nlines\tand tab"},
		{"\x1b[31mred", `\x1b[31mred`},
		{"bell\a", `bell\a`},
		{"bad\xffbyte", `bad\xffbyte`},
		{"rtl\u202e", `rtl\u202e`},
	}
	for _, tt := range tests {
		if got := sanitizeText(tt.in); got != tt.want {
			t.Errorf("sanitizeText(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestShorten(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"exactly-10", 10, "exactly-10"},
		{"a/long/path/name.txt", 10, "…/name.txt"},
		{"日本語のファイル名です", 5, "…ル名です"},
	}
	for _, tt := range tests {
		if got := shorten(tt.in, tt.max); got != tt.want {
			t.Errorf("shorten(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

func TestWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type point struct {
		at time.Duration
		v  int64
	}
	tests := []struct {
		name    string
		samples []point // added in order, starting from (0, 0)
		now     point
		want    float64
		ok      bool
	}{
		{"no time passed", nil, point{0, 100}, 0, false},
		{"steady", []point{{time.Second, 100}}, point{2 * time.Second, 200}, 100, true},
		{"close samples are merged", []point{{100 * time.Millisecond, 10}, {200 * time.Millisecond, 20}}, point{time.Second, 100}, 100, true},
		{"old samples slide out", []point{{time.Second, 1000}, {6 * time.Second, 1000}}, point{7 * time.Second, 1100}, 100, true},
		{"stall reads zero", []point{{time.Second, 500}, {2 * time.Second, 500}}, point{7 * time.Second, 500}, 0, true},
		{"rewind reads zero", []point{{4 * time.Second, 500}}, point{5500 * time.Millisecond, 100}, 0, true},
		{"long gap uses newest", []point{{time.Second, 10}}, point{time.Minute + time.Second, 70}, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWindow(t0, 0)
			for _, p := range tt.samples {
				w.add(at(p.at), p.v)
			}
			got, ok := w.rate(at(tt.now.at), tt.now.v)
			if ok != tt.ok || math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("rate = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestWindowRingWraps adds far more samples than the ring holds.
func TestWindowRingWraps(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := newWindow(t0, 0)
	var v int64
	for i := 1; i <= 10*ringLen; i++ {
		v += 1000
		w.add(t0.Add(time.Duration(i)*time.Second/2), v)
	}
	now := t0.Add(time.Duration(10*ringLen) * time.Second / 2)
	if got, ok := w.rate(now, v); !ok || got != 2000 {
		t.Errorf("rate %v, %v; want 2000", got, ok)
	}
}
