package link

import (
	"fmt"
	"io/fs"
	"math"
	"slices"
	"strings"

	"github.com/sftproject/sft/api"
)

// MaxText is the largest text message, in bytes: it is shown, not saved.
const MaxText = 64 << 10

// CheckManifest validates a manifest by the rules every receiver and the
// session service apply: at least one entry; every name passes SafePath;
// sizes are zero or more, except one lone streamed file (api.SizeUnknown);
// directories have size 0; modes hold permission bits only; a text message
// is one file of at most MaxText bytes; no two names fold alike (see Fold)
// and no entry lies below an entry that is not a directory. Directories may
// be listed along with their contents, and parents need not be listed. The
// error wraps ErrUnsafeName for a bad name, ErrBadManifest otherwise.
func CheckManifest(m api.Manifest) error {
	if len(m.Files) == 0 {
		return fmt.Errorf("%w: no entries", ErrBadManifest)
	}
	var total int64
	for _, f := range m.Files {
		if err := checkEntry(f, len(m.Files)); err != nil {
			return err
		}
		if f.Size > math.MaxInt64-total {
			return fmt.Errorf("%w: the sizes add up to more than %d bytes", ErrBadManifest, int64(math.MaxInt64))
		}
		total += max(f.Size, 0)
	}
	if m.Text {
		f := m.Files[0]
		switch {
		case len(m.Files) != 1:
			return fmt.Errorf("%w: a text message is one entry, the manifest lists %d", ErrBadManifest, len(m.Files))
		case f.Dir:
			return fmt.Errorf("%w: a text message cannot be a directory", ErrBadManifest)
		case f.Size < 0 || f.Size > MaxText:
			return fmt.Errorf("%w: a text message of %d bytes, the limit is %d", ErrBadManifest, f.Size, MaxText)
		}
	}
	return checkCollisions(m.Files)
}

func checkEntry(f api.File, entries int) error {
	if err := SafePath(f.Name); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: entry %q: %s", ErrBadManifest, f.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case f.Size == api.SizeUnknown && f.Dir:
		return bad("a directory cannot be streamed")
	case f.Size == api.SizeUnknown && entries != 1:
		return bad("a stream of unknown size must be the only entry, the manifest lists %d", entries)
	case f.Size < api.SizeUnknown:
		return bad("negative size %d", f.Size)
	case f.Dir && f.Size != 0:
		return bad("a directory with size %d (must be 0)", f.Size)
	case f.Mode&^uint32(fs.ModePerm) != 0:
		// setuid, setgid and sticky bits from a peer are a privilege risk;
		// file type bits have no meaning here.
		return bad("mode %#o has bits other than permissions (0o777)", f.Mode)
	}
	return nil
}

// checkCollisions refuses two entries that would be one file on a case- or
// normalisation-insensitive file system, and entries below a file. Keys
// are folded names with '/' replaced by NUL (never in a safe name): sorted,
// every path that starts with "x/" then comes right after "x", so one pass
// over neighbours finds both kinds of conflict in O(n log n).
func checkCollisions(files []api.File) error {
	type entry struct {
		key string
		i   int
	}
	fo := newFolder()
	es := make([]entry, len(files))
	for i, f := range files {
		es[i] = entry{strings.ReplaceAll(fo.fold(f.Name), "/", "\x00"), i}
	}
	slices.SortFunc(es, func(a, b entry) int { return strings.Compare(a.key, b.key) })
	for j := 1; j < len(es); j++ {
		prev, cur := files[es[j-1].i], files[es[j].i]
		switch {
		case es[j].key == es[j-1].key && prev.Name == cur.Name:
			return fmt.Errorf("%w: %q is listed twice", ErrBadManifest, cur.Name)
		case es[j].key == es[j-1].key:
			return fmt.Errorf("%w: %q and %q differ only in case or Unicode form, and would be one file on some systems",
				ErrBadManifest, prev.Name, cur.Name)
		case !prev.Dir && strings.HasPrefix(es[j].key, es[j-1].key+"\x00"):
			return fmt.Errorf("%w: %q lies below %q, which is not a directory", ErrBadManifest, cur.Name, prev.Name)
		}
	}
	return nil
}
