package client

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/link"
)

// Sources is what a send offers: the manifest, and how to read each entry.
type Sources struct {
	Manifest api.Manifest
	paths    []string  // local path of each entry; "" for directories and streams
	stream   io.Reader // the one entry of a streamed manifest
	// Skipped lists what the walk left out (symlinks, devices, sockets).
	Skipped []string
}

// Resumable reports whether an interrupted send of these sources can
// continue later: files can be read again from the start, a pipe cannot.
func (s *Sources) Resumable() bool { return s.stream == nil }

// Open opens entry i for link.Send.
func (s *Sources) Open(i int) (io.ReadCloser, error) {
	if s.stream != nil {
		return io.NopCloser(s.stream), nil
	}
	return os.Open(s.paths[i])
}

// FilesFrom builds the sources for files and folders: each argument becomes
// an entry named by its last element, and a folder brings everything under
// it, with relative paths, permission bits and modification times. Symbolic
// links inside folders, devices and sockets are skipped (listed in
// Skipped); a link named as an argument is followed.
func FilesFrom(args []string) (*Sources, error) {
	s := &Sources{}
	for _, arg := range args {
		fi, err := os.Stat(arg)
		if err != nil {
			return nil, err
		}
		abs, err := filepath.Abs(arg)
		if err != nil {
			return nil, err
		}
		base := filepath.Base(abs)
		if base == string(filepath.Separator) || base == "." {
			return nil, fmt.Errorf("%s has no name to send it under", arg)
		}
		if !fi.IsDir() {
			if !fi.Mode().IsRegular() {
				return nil, fmt.Errorf("%s is not a regular file or a folder", arg)
			}
			s.add(base, abs, fi)
			continue
		}
		err = filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(abs, p)
			if err != nil {
				return err
			}
			name := base
			if rel != "." {
				name = base + "/" + filepath.ToSlash(rel)
			}
			if !d.IsDir() && !d.Type().IsRegular() {
				s.Skipped = append(s.Skipped, p)
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			s.add(name, p, info)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := link.CheckManifest(s.Manifest); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sources) add(name, path string, fi fs.FileInfo) {
	f := api.File{Name: name, Mode: uint32(fi.Mode().Perm()), MTime: fi.ModTime().UnixNano()}
	if fi.IsDir() {
		f.Dir = true
		path = ""
	} else {
		f.Size = fi.Size()
	}
	s.Manifest.Files = append(s.Manifest.Files, f)
	s.paths = append(s.paths, path)
}

// StreamFrom offers r (standard input) as one file called name, whose
// length is known only at its end.
func StreamFrom(r io.Reader, name string) (*Sources, error) {
	s := &Sources{
		Manifest: api.Manifest{Files: []api.File{{Name: name, Size: api.SizeUnknown, Mode: 0o644}}},
		stream:   r,
	}
	if err := link.CheckManifest(s.Manifest); err != nil {
		return nil, err
	}
	return s, nil
}

// TextFrom offers a short message, shown by the receiver rather than saved.
func TextFrom(text string) (*Sources, error) {
	if text == "" {
		return nil, errors.New("the text is empty")
	}
	if len(text) > link.MaxText {
		return nil, fmt.Errorf("the text is %d bytes; at most %d can be sent as text (send a file instead)", len(text), link.MaxText)
	}
	s := &Sources{
		Manifest: api.Manifest{Text: true, Files: []api.File{{Name: "text", Size: int64(len(text))}}},
		stream:   strings.NewReader(text),
	}
	return s, link.CheckManifest(s.Manifest)
}

// textBuffer collects a received text, refusing more than a text may hold.
type textBuffer struct{ bytes.Buffer }

func (b *textBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > link.MaxText {
		return 0, errors.New("text longer than declared")
	}
	return b.Buffer.Write(p)
}
