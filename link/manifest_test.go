package link

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/sftproject/sft/api"
)

func mfFile(name string, size int64) api.File { return api.File{Name: name, Size: size} }
func mfDir(name string) api.File              { return api.File{Name: name, Dir: true} }
func mfFiles(fs ...api.File) api.Manifest     { return api.Manifest{Files: fs} }

func TestCheckManifest(t *testing.T) {
	withMode := func(mode uint32) api.Manifest { return mfFiles(api.File{Name: "x", Size: 1, Mode: mode}) }
	withMTime := func(mt int64) api.Manifest { return mfFiles(api.File{Name: "x", Size: 1, MTime: mt}) }
	text := func(fs ...api.File) api.Manifest { return api.Manifest{Files: fs, Text: true} }

	for _, c := range []struct {
		desc string
		m    api.Manifest
		want error  // nil, ErrBadManifest or ErrUnsafeName
		why  string // fragment of the message
	}{
		{"no entries", api.Manifest{}, ErrBadManifest, "no entries"},
		{"one file", mfFiles(mfFile("a", 1)), nil, ""},

		{"unsafe name", mfFiles(mfFile("ok", 1), mfFile("../x", 1)), ErrUnsafeName, `"../x"`},
		{"nested names", mfFiles(mfFile("a/b/c.txt", 1), mfFile("a/d", 2)), nil, ""},

		{"negative size", mfFiles(mfFile("a", -2)), ErrBadManifest, "negative size -2"},
		{"min size", mfFiles(mfFile("a", math.MinInt64)), ErrBadManifest, "negative size"},
		{"empty file", mfFiles(mfFile("a", 0)), nil, ""},
		{"largest file", mfFiles(mfFile("a", math.MaxInt64)), nil, ""},
		{"total overflows", mfFiles(mfFile("a", math.MaxInt64), mfFile("b", 1)), ErrBadManifest, "add up"},

		{"lone stream", mfFiles(mfFile("-", api.SizeUnknown)), nil, ""},
		{"stream among files", mfFiles(mfFile("a", 1), mfFile("b", api.SizeUnknown)), ErrBadManifest, "only entry"},
		{"streamed dir", mfFiles(api.File{Name: "d", Dir: true, Size: api.SizeUnknown}), ErrBadManifest, "directory cannot be streamed"},
		{"streamed text", text(mfFile("msg", api.SizeUnknown)), ErrBadManifest, "text message of -1 bytes"},

		{"dir", mfFiles(mfDir("d")), nil, ""},
		{"dir with size", mfFiles(api.File{Name: "d", Dir: true, Size: 5}), ErrBadManifest, "directory with size 5"},

		{"mode 0", withMode(0), nil, ""},
		{"mode 0755", withMode(0o755), nil, ""},
		{"mode 0777", withMode(0o777), nil, ""},
		{"setuid", withMode(0o4755), ErrBadManifest, "04755"},
		{"setgid", withMode(0o2755), ErrBadManifest, "02755"},
		{"sticky", withMode(0o1777), ErrBadManifest, "01777"},
		{"type bits", withMode(uint32(fs.ModeDir | 0o755)), ErrBadManifest, "bits other than permissions"},
		{"high bit", withMode(1 << 31), ErrBadManifest, "bits other than permissions"},

		{"mtime 0", withMTime(0), nil, ""},
		{"mtime negative", withMTime(math.MinInt64), nil, ""},
		{"mtime max", withMTime(math.MaxInt64), nil, ""},

		{"text", text(mfFile("msg", 12)), nil, ""},
		{"empty text", text(mfFile("msg", 0)), nil, ""},
		{"text at limit", text(mfFile("msg", MaxText)), nil, ""},
		{"text too long", text(mfFile("msg", MaxText+1)), ErrBadManifest, "limit is 65536"},
		{"text of two", text(mfFile("a", 1), mfFile("b", 1)), ErrBadManifest, "one entry, the manifest lists 2"},
		{"text dir", text(mfDir("d")), ErrBadManifest, "cannot be a directory"},
		{"text without entries", text(), ErrBadManifest, "no entries"},

		{"same name twice", mfFiles(mfFile("a", 1), mfFile("b", 1), mfFile("a", 2)), ErrBadManifest, `"a" is listed twice`},
		{"dir twice", mfFiles(mfDir("d"), mfDir("d")), ErrBadManifest, "listed twice"},
		{"file and dir of one name", mfFiles(mfDir("d"), mfFile("d", 1)), ErrBadManifest, "listed twice"},
		{"case", mfFiles(mfFile("Read.me", 1), mfFile("READ.ME", 1)), ErrBadManifest, "differ only in case"},
		{"case in a parent", mfFiles(mfFile("a/B", 1), mfFile("A/b", 1)), ErrBadManifest, "differ only in case"},
		{"case dirs", mfFiles(mfDir("d"), mfDir("D")), ErrBadManifest, "differ only in case"},
		{"NFC and NFD", mfFiles(mfFile("caf\u00e9", 1), mfFile("cafe\u0301", 1)), ErrBadManifest, "Unicode form"},
		{"full folding", mfFiles(mfFile("straße", 1), mfFile("STRASSE", 1)), ErrBadManifest, "differ only in case"},
		{"different names", mfFiles(mfFile("a", 1), mfFile("b", 1), mfFile("ab", 1), mfFile("a.b", 1)), nil, ""},
		{"accents differ", mfFiles(mfFile("resume", 1), mfFile("résumé", 1)), nil, ""},

		{"below a file", mfFiles(mfFile("a", 1), mfFile("a/b", 1)), ErrBadManifest, `"a/b" lies below "a"`},
		{"deep below a file", mfFiles(mfFile("a/b/c/d", 1), mfFile("a/b", 1)), ErrBadManifest, "lies below"},
		{"below a file, folded", mfFiles(mfFile("A", 1), mfFile("a/b", 1)), ErrBadManifest, "lies below"},
		{"below a file, names between", mfFiles(mfFile("a", 1), mfFile("a-b", 1), mfFile("a.c", 1), mfFile("a/b", 1)), ErrBadManifest, "lies below"},
		{"below a dir", mfFiles(mfDir("a"), mfFile("a/b", 1), mfDir("a/c"), mfFile("a/c/d", 0)), nil, ""},
		{"below a folded dir", mfFiles(mfDir("A"), mfFile("a/b", 1)), nil, ""},
		{"parents not listed", mfFiles(mfFile("x/y/z", 1), mfFile("x/w", 1)), nil, ""},
		{"prefix is not a parent", mfFiles(mfFile("a", 1), mfFile("ab/c", 1)), nil, ""},
	} {
		err := CheckManifest(c.m)
		switch {
		case c.want == nil && err != nil:
			t.Errorf("%s: CheckManifest = %v, want nil", c.desc, err)
		case c.want != nil && (!errors.Is(err, c.want) || !strings.Contains(err.Error(), c.why)):
			t.Errorf("%s: CheckManifest = %v, want %v saying %q", c.desc, err, c.want, c.why)
		}
	}
}

// TestCheckCollisionsAgainstPairs compares the sorted pass with the
// definition, every pair of entries, on random manifests built from names
// chosen to collide often.
func TestCheckCollisionsAgainstPairs(t *testing.T) {
	elems := []string{"a", "A", "b", "é", "e\u0301", "É", "a-", "a.b", "ß", "ss", "k", "\u212a"}
	r := rand.New(rand.NewPCG(1, 2))
	var refused, accepted int
	for range 5000 {
		files := make([]api.File, 1+r.IntN(6))
		for i := range files {
			parts := make([]string, 1+r.IntN(3))
			for j := range parts {
				parts[j] = elems[r.IntN(len(elems))]
			}
			files[i] = api.File{Name: strings.Join(parts, "/"), Dir: r.IntN(2) == 0}
		}
		got := checkCollisions(files) == nil
		want := pairwiseOK(files)
		if got != want {
			t.Fatalf("checkCollisions(%q) accepted = %v, pairwise check says %v", fileNames(files), got, want)
		}
		if got {
			accepted++
		} else {
			refused++
		}
	}
	if accepted == 0 || refused == 0 {
		t.Fatalf("random manifests not varied enough: %d accepted, %d refused", accepted, refused)
	}
}

// pairwiseOK is the definition of a collision-free manifest, in O(n²).
func pairwiseOK(files []api.File) bool {
	keys := make([]string, len(files))
	for i, f := range files {
		keys[i] = Fold(f.Name)
	}
	for i, a := range files {
		for j := range files {
			if i == j {
				continue
			}
			if keys[i] == keys[j] || (!a.Dir && strings.HasPrefix(keys[j], keys[i]+"/")) {
				return false
			}
		}
	}
	return true
}

// bigManifest lists n entries in a tree of directories, about 20 per
// directory, with mixed-case names.
func bigManifest(n int) api.Manifest {
	files := make([]api.File, 0, n)
	for i := 0; len(files) < n; i++ {
		dir := fmt.Sprintf("Projekt/Teil %d/Ünterordner %d", i/400, i/20)
		if i%20 == 0 {
			files = append(files, mfDir(dir))
		}
		files = append(files, api.File{Name: fmt.Sprintf("%s/Datei-%d.TXT", dir, i), Size: int64(i), Mode: 0o644, MTime: int64(i)})
	}
	return mfFiles(files[:n]...)
}

func TestCheckManifestLarge(t *testing.T) {
	m := bigManifest(10000)
	if err := CheckManifest(m); err != nil {
		t.Fatalf("CheckManifest(10000 entries) = %v", err)
	}
	// A collision between the first and the last entry is still found.
	first := m.Files[0]
	m.Files[len(m.Files)-1] = api.File{Name: strings.ToUpper(first.Name), Dir: true}
	if err := CheckManifest(m); !errors.Is(err, ErrBadManifest) {
		t.Fatalf("CheckManifest with a folded duplicate = %v, want ErrBadManifest", err)
	}
}

func BenchmarkCheckManifest10k(b *testing.B) {
	m := bigManifest(10000)
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckManifest(m); err != nil {
			b.Fatal(err)
		}
	}
}

func fileNames(files []api.File) []string {
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
		if f.Dir {
			names[i] += "/"
		}
	}
	return names
}
