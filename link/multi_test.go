package link

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
)

// tree is a set of entries to send, with their contents.
type tree struct {
	m    api.Manifest
	data map[int][]byte
}

func (tr tree) open(i int) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(tr.data[i])), nil
}

func sampleTree() tree {
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC).UnixNano()
	tr := tree{data: map[int][]byte{}}
	add := func(f api.File, data []byte) {
		if !f.Dir {
			f.Size = int64(len(data))
			tr.data[len(tr.m.Files)] = data
		}
		tr.m.Files = append(tr.m.Files, f)
	}
	add(api.File{Name: "a.txt", Mode: 0o640, MTime: mtime}, []byte("alpha"))
	add(api.File{Name: "b", Dir: true, Mode: 0o750, MTime: mtime}, nil)
	add(api.File{Name: "b/empty", Dir: true, Mode: 0o700}, nil)
	add(api.File{Name: "b/c/d.bin", Mode: 0o600, MTime: mtime}, randomBytes(3*maxPayload+11, 9))
	add(api.File{Name: "b/zero", Mode: 0o644}, []byte{})
	add(api.File{Name: "e.sh", Mode: 0o755}, []byte("#!/bin/sh\n"))
	return tr
}

func (e *env) sendTree(tr tree, dialAddr string, ro ReceiveOptions) (recv, send outcome) {
	e.t.Helper()
	ctx := e.t.Context()
	return e.pair(ctx, dialAddr, e.key, e.sid, recvSide(ctx, tr.m, e.dir, ro), func(c *Conn) outcome {
		res, err := c.Send(ctx, tr.m, tr.open, SendOptions{})
		return outcome{res: res, err: err}
	})
}

func checkTree(t *testing.T, dir string, tr tree) {
	t.Helper()
	for i, f := range tr.m.Files {
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", f.Name, err)
			continue
		}
		if fi.IsDir() != f.Dir {
			t.Errorf("%s: directory = %v, want %v", f.Name, fi.IsDir(), f.Dir)
		}
		if f.Mode != 0 && uint32(fi.Mode().Perm()) != f.Mode {
			t.Errorf("%s: mode %o, want %o", f.Name, fi.Mode().Perm(), f.Mode)
		}
		if f.MTime != 0 && fi.ModTime().UnixNano() != f.MTime {
			t.Errorf("%s: mtime %s, want %s", f.Name, fi.ModTime(), time.Unix(0, f.MTime))
		}
		if !f.Dir {
			got, _ := os.ReadFile(p)
			if !bytes.Equal(got, tr.data[i]) {
				t.Errorf("%s: content differs", f.Name)
			}
		}
	}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if strings.HasPrefix(d.Name(), partialPrefix) {
			t.Errorf("left behind: %s", p)
		}
		return nil
	})
}

func TestManyEntries(t *testing.T) {
	e := newEnv(t)
	tr := sampleTree()
	var progress = map[int]int64{}
	recv, send := e.sendTree(tr, e.addr(), ReceiveOptions{Progress: func(i int, n int64) { progress[i] = n }})
	if recv.err != nil || send.err != nil {
		t.Fatalf("receive: %v; send: %v", recv.err, send.err)
	}
	if recv.res != send.res {
		t.Errorf("results differ: received %+v, sent %+v", recv.res, send.res)
	}
	if recv.res.Bytes != tr.m.TotalSize() {
		t.Errorf("bytes = %d, want %d", recv.res.Bytes, tr.m.TotalSize())
	}
	checkTree(t, e.dir, tr)
	for i, f := range tr.m.Files {
		if !f.Dir && progress[i] != f.Size {
			t.Errorf("progress of %s = %d, want %d", f.Name, progress[i], f.Size)
		}
	}
}

// Cutting the connection part way and running again moves only what the
// receiver lacks, and the result is the same as one uninterrupted run.
func TestResume(t *testing.T) {
	big := randomBytes(5<<20+123, 11)
	onefile := tree{m: manifest("big.bin", len(big)), data: map[int][]byte{0: big}}
	multi := sampleTree()
	multi.m.Files = append(multi.m.Files, api.File{Name: "z/big.bin", Size: int64(len(big))})
	multi.data[len(multi.m.Files)-1] = big
	for _, tc := range []struct {
		name string
		tr   tree
		cuts []int64 // the connection is cut after this many bytes, once per attempt
	}{
		{"one file", onefile, []int64{2 << 20}},
		{"one file twice", onefile, []int64{1 << 20, 2 << 20}},
		{"tree", multi, []int64{3 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var moved int64
			for _, cut := range tc.cuts {
				p := startProxy(t, e.addr(), -1, cut)
				recv, send := e.sendTree(tc.tr, p.addr(), ReceiveOptions{})
				if !Resumable(recv.err) || send.err == nil {
					t.Fatalf("cut at %d: receive: %v; send: %v", cut, recv.err, send.err)
				}
				assertNoFinalFiles(t, e.dir)
				moved += cut
				e.relisten()
			}
			recv, send := e.sendTree(tc.tr, e.addr(), ReceiveOptions{})
			if recv.err != nil || send.err != nil {
				t.Fatalf("resume: receive: %v; send: %v", recv.err, send.err)
			}
			checkTree(t, e.dir, tc.tr)
			total := tc.tr.m.TotalSize()
			if send.res.Moved != recv.res.Moved || send.res.Moved >= total {
				t.Errorf("resume moved %d (receiver %d) of %d bytes", send.res.Moved, recv.res.Moved, total)
			}
			if moved+send.res.Moved > total+total/2 {
				t.Errorf("%d bytes in all for %d", moved+send.res.Moved, total)
			}
			if single(tc.tr.m) && send.res.SHA256 != sha256.Sum256(big) {
				t.Error("summary of the resumed file is not the whole file's SHA-256")
			}
		})
	}
}

// A resumed prefix that changed on disk is caught by the final check and
// nothing is placed.
func TestResumeCorruptPrefix(t *testing.T) {
	e := newEnv(t)
	big := randomBytes(2<<20, 12)
	tr := tree{m: manifest("big.bin", len(big)), data: map[int][]byte{0: big}}
	p := startProxy(t, e.addr(), -1, 1<<20)
	if recv, _ := e.sendTree(tr, p.addr(), ReceiveOptions{}); !Resumable(recv.err) {
		t.Fatalf("cut: %v", recv.err)
	}
	part := filepath.Join(e.dir, partialName(e.sid, tr.m, 0))
	f, err := os.OpenFile(part, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff, 0xfe}, 100)
	f.Close()
	e.relisten()
	recv, send := e.sendTree(tr, e.addr(), ReceiveOptions{})
	if !errors.Is(recv.err, ErrVerify) || !errors.Is(send.err, ErrVerify) {
		t.Fatalf("receive: %v; send: %v; want ErrVerify on both", recv.err, send.err)
	}
	assertEmpty(t, e.dir)
}

func TestDiscard(t *testing.T) {
	e := newEnv(t)
	tr := sampleTree()
	p := startProxy(t, e.addr(), -1, 100<<10)
	if recv, _ := e.sendTree(tr, p.addr(), ReceiveOptions{}); !Resumable(recv.err) {
		t.Fatalf("cut: %v", recv.err)
	}
	if Held(e.dir, e.sid, tr.m) == 0 {
		// The cut came before the first checkpoint of a file's data.
		t.Log("no verified data held")
	}
	if false {
		t.Error("Held reports nothing after a cut transfer")
	}
	if err := Discard(e.dir, e.sid, tr.m); err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(e.dir, func(p string, d os.DirEntry, err error) error {
		if strings.HasPrefix(d.Name(), partialPrefix) {
			t.Errorf("left behind: %s", p)
		}
		return nil
	})
}

func TestReceiveToWriter(t *testing.T) {
	data := randomBytes(200<<10, 13)
	for _, tc := range []struct {
		name string
		m    api.Manifest
	}{
		{"file", manifest("f.bin", len(data))},
		{"stream", api.Manifest{Files: []api.File{{Name: "stdin", Size: api.SizeUnknown}}}},
		{"text", api.Manifest{Text: true, Files: []api.File{{Name: "text", Size: int64(len(data[:1000]))}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			want := data
			if tc.m.Text {
				want = data[:1000]
			}
			var out bytes.Buffer
			ctx := t.Context()
			recv, send := e.pair(ctx, e.addr(), e.key, e.sid, recvSide(ctx, tc.m, e.dir, ReceiveOptions{Out: &out}),
				sendSide(ctx, tc.m, bytes.NewReader(want)))
			if recv.err != nil || send.err != nil {
				t.Fatalf("receive: %v; send: %v", recv.err, send.err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("got %d bytes, want %d", out.Len(), len(want))
			}
			if recv.res.Bytes != int64(len(want)) || recv.res.SHA256 != sha256.Sum256(want) || recv.res != send.res {
				t.Errorf("results: received %+v, sent %+v", recv.res, send.res)
			}
			assertEmpty(t, e.dir)
		})
	}
	t.Run("several entries refused", func(t *testing.T) {
		e := newEnv(t)
		tr := sampleTree()
		recv, send := e.sendTree(tr, e.addr(), ReceiveOptions{Out: io.Discard})
		if !errors.Is(recv.err, ErrBadManifest) || !errors.Is(send.err, ErrAborted) {
			t.Errorf("receive: %v; send: %v", recv.err, send.err)
		}
	})
}

// The destination's own symlinks cannot lead the transfer outside it.
func TestSymlinkOutOfDestination(t *testing.T) {
	e := newEnv(t)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(e.dir, "b")); err != nil {
		t.Skip("no symlinks here:", err)
	}
	tr := sampleTree() // has b/, b/c/d.bin, …
	recv, send := e.sendTree(tr, e.addr(), ReceiveOptions{})
	if recv.err == nil || send.err == nil {
		t.Fatal("transfer through a symlink out of the destination succeeded")
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("wrote %s outside the destination", ents[0].Name())
	}
	ents, _ := os.ReadDir(e.dir)
	for _, d := range ents {
		if d.Name() != "b" {
			t.Errorf("left behind: %s", d.Name())
		}
	}
}

func TestDestinationConflicts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(dir string)
	}{
		{"file where a directory goes", func(dir string) { os.WriteFile(filepath.Join(dir, "b"), nil, 0o600) }},
		{"directory where a file goes", func(dir string) { os.MkdirAll(filepath.Join(dir, "b/c/d.bin"), 0o700) }},
		{"existing file", func(dir string) { os.WriteFile(filepath.Join(dir, "e.sh"), nil, 0o600) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.prepare(e.dir)
			before := listTree(e.dir)
			recv, send := e.sendTree(sampleTree(), e.addr(), ReceiveOptions{})
			if !errors.Is(recv.err, ErrExists) || !errors.Is(send.err, ErrExists) {
				t.Errorf("receive: %v; send: %v; want ErrExists", recv.err, send.err)
			}
			if after := listTree(e.dir); after != before {
				t.Errorf("destination changed:\n%s\nbecame\n%s", before, after)
			}
		})
	}
}

// assertNoFinalFiles fails if dir holds a file under a name of its own:
// after a cut, only partial files (in the directories they need) remain.
func assertNoFinalFiles(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), partialPrefix) {
			t.Errorf("final file present after a failed transfer: %s", p)
		}
		return nil
	})
}

func listTree(dir string) string {
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		fmt.Fprintln(&b, strings.TrimPrefix(p, dir))
		return nil
	})
	return b.String()
}

func TestNoSpace(t *testing.T) {
	e := newEnv(t)
	m := manifest("huge", 1<<60)
	recv, send := e.transfer(t.Context(), e.addr(), m, m, strings.NewReader(""), ReceiveOptions{})
	if !errors.Is(recv.err, ErrNoSpace) || !errors.Is(send.err, ErrNoSpace) {
		t.Errorf("receive: %v; send: %v; want ErrNoSpace", recv.err, send.err)
	}
	assertEmpty(t, e.dir)
}

// Summarize, without a peer, gives what a transfer of the same entries
// confirms.
func TestSummarize(t *testing.T) {
	for _, tr := range []tree{sampleTree(), {m: manifest("one", 70000), data: map[int][]byte{0: randomBytes(70000, 3)}}} {
		e := newEnv(t)
		recv, send := e.sendTree(tr, e.addr(), ReceiveOptions{})
		if recv.err != nil || send.err != nil {
			t.Fatalf("receive: %v; send: %v", recv.err, send.err)
		}
		got, err := Summarize(t.Context(), tr.m, tr.open)
		if err != nil {
			t.Fatal(err)
		}
		if got != send.res.sum() {
			t.Errorf("Summarize = %+v, transfer confirmed %+v", got, send.res.sum())
		}
	}
	short := tree{m: manifest("short", 10), data: map[int][]byte{0: []byte("abc")}}
	if _, err := Summarize(t.Context(), short.m, short.open); !errors.Is(err, ErrSourceSize) {
		t.Errorf("a file shorter than declared: %v, want ErrSourceSize", err)
	}
}
