package link

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sftproject/sft/api"
)

func FuzzSafePath(f *testing.F) {
	root := filepath.FromSlash("/dest/root")
	f.Fuzz(func(t *testing.T, p string) {
		err := SafePath(p)
		if err != nil {
			if !errors.Is(err, ErrUnsafeName) {
				t.Fatalf("SafePath(%q) = %v, not ErrUnsafeName", p, err)
			}
			if strings.ContainsFunc(err.Error(), isControl) || strings.ContainsFunc(err.Error(), isInvisible) {
				t.Fatalf("error message carries control characters: %q", err)
			}
			return
		}
		elems := strings.Split(p, "/")
		switch {
		case !utf8.ValidString(p), strings.ContainsFunc(p, isControl), strings.ContainsFunc(p, isInvisible):
			t.Fatalf("accepted %q, which holds invalid or control characters", p)
		case strings.HasPrefix(p, "/"), strings.Contains(p, `\`), slices.Contains(elems, ".."):
			t.Fatalf("accepted %q, which could leave the destination", p)
		case len(p) > MaxPathLen, len(elems) > MaxDepth:
			t.Fatalf("accepted %q, beyond the limits", p)
		case filepath.ToSlash(filepath.Clean(filepath.FromSlash(p))) != p:
			t.Fatalf("accepted %q, which is not in canonical form", p)
		case !filepath.IsLocal(filepath.FromSlash(p)):
			t.Fatalf("accepted %q, which is not local", p)
		}
		for _, e := range elems {
			if len(e) > MaxNameLen || SafeName(e) != nil {
				t.Fatalf("accepted %q, whose element %q is not a safe name", p, e)
			}
		}
		joined := filepath.Join(root, filepath.FromSlash(p))
		if !strings.HasPrefix(joined, root+string(filepath.Separator)) {
			t.Fatalf("%q escapes the destination: lands at %s", p, joined)
		}
		if rel, err := filepath.Rel(root, joined); err != nil || rel != filepath.FromSlash(p) {
			t.Fatalf("%q lands at %s, not at the path it names", p, joined)
		}
		if k := Fold(p); strings.Count(k, "/") != len(elems)-1 {
			t.Fatalf("Fold(%q) = %q changes the number of elements", p, k)
		}
	})
}

// fuzzDecodeManifest decodes as strictly as the peer link does: unknown
// fields and trailing data are refused.
func fuzzDecodeManifest(p []byte) (api.Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.DisallowUnknownFields()
	var m api.Manifest
	if err := dec.Decode(&m); err != nil {
		return api.Manifest{}, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return api.Manifest{}, errors.New("data after the manifest")
	}
	return m, nil
}

func FuzzCheckManifest(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := fuzzDecodeManifest(data)
		if err != nil {
			return
		}
		if err := CheckManifest(m); err != nil {
			if !errors.Is(err, ErrBadManifest) && !errors.Is(err, ErrUnsafeName) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if strings.ContainsFunc(err.Error(), isControl) {
				t.Fatalf("error message carries control characters: %q", err)
			}
			return
		}
		if len(m.Files) == 0 {
			t.Fatal("accepted a manifest without entries")
		}
		if len(m.Files) <= 200 && !pairwiseOK(m.Files) {
			t.Fatalf("accepted %q, which has colliding entries", fileNames(m.Files))
		}
		seen := make(map[string]bool, len(m.Files))
		for _, f := range m.Files {
			if SafePath(f.Name) != nil {
				t.Fatalf("accepted unsafe name %q", f.Name)
			}
			k := Fold(f.Name)
			if seen[k] {
				t.Fatalf("accepted two names that fold to %q", k)
			}
			seen[k] = true
			if f.Size < 0 && !(f.Size == api.SizeUnknown && len(m.Files) == 1 && !f.Dir && !m.Text) {
				t.Fatalf("accepted size %d in %+v", f.Size, m)
			}
			if f.Mode&^0o777 != 0 || (f.Dir && f.Size != 0) {
				t.Fatalf("accepted entry %+v", f)
			}
		}
		if m.Text && (len(m.Files) != 1 || m.Files[0].Dir || m.Files[0].Size > MaxText) {
			t.Fatalf("accepted text manifest %+v", m)
		}
		// What the session service stores and the sender re-encodes must
		// still be accepted.
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := fuzzDecodeManifest(again)
		if err != nil {
			t.Fatalf("re-encoded manifest %s does not decode: %v", again, err)
		}
		if err := CheckManifest(m2); err != nil {
			t.Fatalf("re-encoded manifest %s is refused: %v", again, err)
		}
	})
}
