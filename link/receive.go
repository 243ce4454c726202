package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/sftproject/sft/api"
)

// ReceiveOptions tunes Receive.
type ReceiveOptions struct {
	// Overwrite allows replacing existing files of the same names.
	Overwrite bool
	// Progress, if not nil, is called with the bytes of entry file present
	// so far (from the resumed offset on).
	Progress func(file int, done int64)
	// Out, when set, takes the bytes of a one-entry transfer (a file, a
	// stream or a text) instead of the destination directory; nothing is
	// saved or kept for resuming then.
	Out io.Writer
}

// Receive reads the peer's manifest, checks that it equals expect (the
// manifest the session recorded), and saves every entry under dir at its
// manifest path. Each file's data goes to a partial file beside its
// destination, hashed as it is written; only when length, CRC-32C and
// SHA-256 match the sender's summary is it synced and counted complete, and
// only once all entries are complete are they moved into place, given their
// modes and modification times, and the sender confirmed. Existing
// destinations are refused (ErrExists) unless opts.Overwrite, both before
// the first byte and at the final move. Nothing outside dir is touched,
// whatever symlinks dir contains.
//
// If the link drops (Resumable reports true for the error), verified data
// stays in dir for a later Receive of the same session, which continues
// where this one stopped; on any other failure the partial data is
// removed and the sender told why. On failure the Result holds only Moved,
// what crossed the link before.
func (c *Conn) Receive(ctx context.Context, expect api.Manifest, dir string, opts ReceiveOptions) (Result, error) {
	if err := c.claim(); err != nil {
		return Result{}, err
	}
	stop := watch(ctx, c.nc)
	var moved int64
	res, err := c.receive(ctx, expect, dir, opts, &moved)
	stop()
	if err != nil {
		err = ctxErr(ctx, "receiving", err)
		if !c.wbroken && !isAbort(err) {
			c.sendAbort(err, "receiver")
			if ctx.Err() == nil {
				c.linger()
			}
		}
		c.Close()
		return Result{Moved: moved}, err
	}
	return res, nil
}

// Resumable reports whether a transfer that failed with err may continue
// where it stopped when both sides run again in the same session: the
// connection broke, rather than a side refusing, a check failing or a user
// cancelling.
func Resumable(err error) bool {
	if err == nil || isAbort(err) || errors.Is(err, context.Canceled) {
		return false
	}
	for _, final := range []error{ErrTampered, ErrVerify, ErrProtocol, ErrBadManifest, ErrManifestMismatch,
		ErrUnsafeName, ErrExists, ErrSourceSize, ErrHandshake, ErrNoSpace} {
		if errors.Is(err, final) {
			return false
		}
	}
	var fsErr *fs.PathError
	if errors.As(err, &fsErr) && !isNetErr(err) {
		return false // a local file problem will not go away by reconnecting
	}
	return true
}

func (c *Conn) receive(ctx context.Context, expect api.Manifest, dir string, opts ReceiveOptions, moved *int64) (Result, error) {
	if err := checkManifest(expect); err != nil {
		return Result{}, fmt.Errorf("expected manifest: %w", err)
	}
	t, p, err := c.readRecord()
	if err != nil {
		return Result{}, fmt.Errorf("waiting for the manifest: %w", err)
	}
	switch t {
	case recManifest:
	case recAbort:
		return Result{}, decodeAbort(p)
	default:
		return Result{}, fmt.Errorf("%w: expected the manifest, got a %s record", ErrProtocol, t)
	}
	m, err := decodeManifest(p)
	if err != nil {
		return Result{}, fmt.Errorf("manifest from peer: %w", err)
	}
	if !sameManifest(m, expect) {
		return Result{}, fmt.Errorf("%w: peer offers %s, the session recorded %s", ErrManifestMismatch, describe(m), describe(expect))
	}
	r := &receiver{c: c, m: m, opts: opts, per: make([]Result, len(m.Files)), free: newPool(maxFrame)}
	defer func() { *moved = r.moved }()
	if opts.Out != nil {
		if !single(m) {
			return Result{}, fmt.Errorf("%w: %s cannot go to one output stream", ErrBadManifest, describe(m))
		}
		if err := c.writeRecord(recStart, nil); err != nil {
			return Result{}, err
		}
		if err := r.entries(ctx); err != nil {
			return Result{}, err
		}
	} else if err := r.toDir(ctx, dir); err != nil {
		return Result{}, err
	}
	res := manifestSum(m, r.per)
	if err := c.writeRecord(recAck, res.encode()); err != nil {
		// Everything is complete, verified and durable; only the sender's
		// confirmation is lost, so this side has succeeded.
		c.log.Warn("peer link: transfer saved but the sender could not be told", "session", c.sid, "err", ctxErr(ctx, "confirming", err))
	}
	res.Moved = r.moved
	return res, nil
}

// receiver is the state of one Receive.
type receiver struct {
	c     *Conn
	m     api.Manifest
	opts  ReceiveOptions
	per   []Result // each entry's summary, in manifest order
	free  pool
	moved int64

	// Saving into a directory.
	root    *os.Root
	parts   *partials
	created []string // directories this attempt made, parents first
}

func (r *receiver) toDir(ctx context.Context, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("destination directory: %w", err)
	}
	defer root.Close()
	r.root = root
	if err := r.checkDestinations(); err != nil {
		return err
	}
	if r.parts, err = loadPartials(root, r.c.sid, r.m); err != nil {
		return err
	}
	var held int64
	for i := range r.m.Files {
		held += r.parts.offset(i)
	}
	if err := checkSpace(dir, r.m.TotalSize()-held); err != nil {
		return err
	}
	if err := r.makeDirs(); err != nil {
		r.removeCreated()
		return err
	}
	if err := r.parts.addDirs(r.created); err != nil {
		r.removeCreated()
		return err
	}
	// Directories an earlier attempt of this session made are the
	// transfer's too.
	r.created = slices.Clone(r.parts.dirs)
	slices.Sort(r.created)
	r.created = slices.Compact(r.created)
	err = r.offerResume()
	if err == nil {
		err = r.entries(ctx)
	}
	if err == nil {
		err = r.place()
	}
	if err != nil && (!Resumable(ctxErr(ctx, "receiving", err)) || errors.Is(ctx.Err(), context.Canceled)) {
		r.parts.discard()
		r.removeCreated()
	}
	return err
}

// checkDestinations refuses, before anything is written, entries whose
// names are taken: by a directory where a file goes, by anything that is
// not a directory where a directory goes, and by a file unless overwriting.
func (r *receiver) checkDestinations() error {
	for _, f := range r.m.Files {
		fi, err := r.root.Lstat(f.Name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return withReason(fmt.Errorf("checking destination %s: %w", f.Name, err),
				fmt.Sprintf("receiver cannot use the name %q", f.Name))
		case f.Dir && fi.IsDir():
			continue
		case f.Dir:
			return withReason(fmt.Errorf("%w: %s is not a directory", ErrExists, f.Name),
				fmt.Sprintf("receiver has a file named %q where a directory goes", f.Name))
		case fi.IsDir():
			return withReason(fmt.Errorf("%w: %s is a directory", ErrExists, f.Name),
				fmt.Sprintf("receiver has a directory named %q", f.Name))
		case !r.opts.Overwrite:
			return withReason(fmt.Errorf("%w: %s (allow overwriting to replace it)", ErrExists, f.Name),
				fmt.Sprintf("receiver already has a file named %q and did not allow overwriting", f.Name))
		}
	}
	return nil
}

// makeDirs creates the directory entries and the parents of files, which
// must exist to hold the partial files, remembering which are new.
func (r *receiver) makeDirs() error {
	var need []string
	for _, f := range r.m.Files {
		d := f.Name
		if !f.Dir {
			d = path.Dir(f.Name)
		}
		for ; d != "."; d = path.Dir(d) {
			need = append(need, d)
		}
	}
	slices.Sort(need) // parents sort before their children
	need = slices.Compact(need)
	for _, d := range need {
		err := r.root.Mkdir(d, 0o700)
		switch {
		case err == nil:
			r.created = append(r.created, d)
		case errors.Is(err, fs.ErrExist):
			if fi, serr := r.root.Stat(d); serr != nil || !fi.IsDir() {
				return withReason(fmt.Errorf("%w: %s is not a directory", ErrExists, d),
					fmt.Sprintf("receiver has a file named %q where a directory goes", d))
			}
		default:
			return fmt.Errorf("creating directory %s: %w", d, err)
		}
	}
	return nil
}

// removeCreated removes the directories this attempt created, children
// first, if they are empty.
func (r *receiver) removeCreated() {
	for _, d := range slices.Backward(r.created) {
		r.root.Remove(d)
	}
	r.created = nil
}

// offerResume tells the sender how much of each file is already here.
func (r *receiver) offerResume() error {
	var buf []byte
	for i := range r.m.Files {
		off := r.parts.offset(i)
		if off == 0 {
			continue
		}
		buf = append(buf, encodeFile(i, off)...)
		if len(buf)/12 == resumePairs {
			if err := r.c.writeRecord(recResume, buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		if err := r.c.writeRecord(recResume, buf); err != nil {
			return err
		}
	}
	return r.c.writeRecord(recStart, nil)
}

// entries receives each file in manifest order; directories carry no data.
func (r *receiver) entries(ctx context.Context) error {
	for i, f := range r.m.Files {
		if f.Dir {
			continue
		}
		if err := r.file(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// file receives entry i: its file record, data records and end record.
func (r *receiver) file(ctx context.Context, i int) error {
	f := r.m.Files[i]
	var off int64
	if r.parts != nil {
		off = r.parts.offset(i)
	}
	t, p, err := r.c.readRecord()
	if err != nil {
		return fmt.Errorf("receiving %q: %w", f.Name, err)
	}
	switch t {
	case recFile:
	case recAbort:
		return decodeAbort(p)
	default:
		return fmt.Errorf("%w: expected the start of %q, got a %s record", ErrProtocol, f.Name, t)
	}
	idx, start, err := decodeFile(p)
	if err != nil {
		return err
	}
	if idx != i || start != off {
		return fmt.Errorf("%w: sender starts entry %d at %d, expected entry %d at %d", ErrProtocol, idx, start, i, off)
	}

	w, d, closeFn, err := r.open(i, off)
	if err != nil {
		return err
	}
	defer closeFn()
	var checkpoint func(int64) error
	if r.parts != nil {
		checkpoint = func(n int64) error { return r.parts.record(i, n) }
	}
	sk := startSink(w, d, off, r.free, checkpoint)
	res, err := r.data(ctx, i, sk, off)
	if err != nil {
		sk.finish()
		// Whatever reached the file arrived authenticated: keep it for a
		// resume when the link is what failed.
		if file, ok := w.(*os.File); ok && r.parts != nil && sk.err == nil && Resumable(err) && sk.written > off {
			if file.Sync() == nil {
				r.parts.record(i, sk.written)
			}
		}
		return err
	}
	if file, ok := w.(*os.File); ok && r.parts != nil {
		if err := file.Sync(); err != nil {
			return fmt.Errorf("saving %q: %w", f.Name, err)
		}
		if err := r.parts.record(i, res.Bytes); err != nil {
			return err
		}
	}
	r.per[i] = res
	return nil
}

// open returns where entry i's data goes, with a digest already holding
// the first off bytes: the partial file (truncated to its verified length,
// whose bytes are hashed again) or opts.Out.
func (r *receiver) open(i int, off int64) (io.Writer, *digest, func(), error) {
	d := newDigest()
	if r.parts == nil {
		return r.opts.Out, d, func() {}, nil
	}
	f := r.m.Files[i]
	pf, err := r.root.OpenFile(partialName(r.c.sid, r.m, i), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("creating a partial file for %q: %w", f.Name, err)
	}
	closeFn := func() { pf.Close() }
	if err := pf.Truncate(off); err != nil {
		closeFn()
		return nil, nil, nil, fmt.Errorf("preparing %q: %w", f.Name, err)
	}
	if off > 0 {
		if _, err := io.Copy(digestWriter{d}, io.LimitReader(pf, off)); err != nil || d.n != off {
			closeFn()
			return nil, nil, nil, fmt.Errorf("re-reading the received part of %q: %v", f.Name, err)
		}
	}
	if _, err := pf.Seek(off, io.SeekStart); err != nil {
		closeFn()
		return nil, nil, nil, fmt.Errorf("preparing %q: %w", f.Name, err)
	}
	return pf, d, closeFn, nil
}

type digestWriter struct{ d *digest }

func (w digestWriter) Write(p []byte) (int, error) { w.d.write(p); return len(p), nil }

// data reads entry i's data records into the sink until its end record,
// and verifies the result.
func (r *receiver) data(_ context.Context, i int, sk *sink, off int64) (Result, error) {
	f := r.m.Files[i]
	received := off
	if r.opts.Progress != nil {
		r.opts.Progress(i, received)
	}
	for {
		if sk.failed.Load() {
			_, err := sk.finish()
			return Result{}, fmt.Errorf("writing %q: %w", f.Name, err)
		}
		buf := <-sk.free
		t, p, err := r.c.readRecordInto(buf)
		if err != nil {
			sk.free <- buf
			return Result{}, fmt.Errorf("receiving %q after %d bytes: %w", f.Name, received, err)
		}
		switch t {
		case recData:
			if f.Size != api.SizeUnknown && int64(len(p)) > f.Size-received {
				sk.free <- buf
				return Result{}, fmt.Errorf("%w: peer sent more than the %d bytes the manifest declares for %q", ErrVerify, f.Size, f.Name)
			}
			sk.full <- chunk{buf: buf, p: p}
			received += int64(len(p))
			r.moved += int64(len(p))
			if r.opts.Progress != nil {
				r.opts.Progress(i, received)
			}
			continue
		case recEnd:
			sent, err := decodeSummary(p)
			sk.free <- buf
			if err != nil {
				return Result{}, err
			}
			res, err := sk.finish()
			if err != nil {
				return Result{}, fmt.Errorf("writing %q: %w", f.Name, err)
			}
			return res, verify(f, sent, res)
		case recAbort:
			err := decodeAbort(p)
			sk.free <- buf
			return Result{}, err
		}
		sk.free <- buf
		return Result{}, fmt.Errorf("%w: unexpected %s record while receiving %q", ErrProtocol, t, f.Name)
	}
}

func verify(f api.File, sent, got Result) error {
	switch {
	case f.Size != api.SizeUnknown && sent.Bytes != f.Size:
		return fmt.Errorf("%w: sender reports %d bytes for %q, the manifest declares %d", ErrVerify, sent.Bytes, f.Name, f.Size)
	case got.Bytes != sent.Bytes:
		return fmt.Errorf("%w: received %d of the %d bytes of %q", ErrVerify, got.Bytes, sent.Bytes, f.Name)
	case got.CRC32C != sent.CRC32C:
		return fmt.Errorf("%w: CRC-32C of %q is %08x, the sender's is %08x", ErrVerify, f.Name, got.CRC32C, sent.CRC32C)
	case got.SHA256 != sent.SHA256:
		return fmt.Errorf("%w: SHA-256 of %q differs from the sender's", ErrVerify, f.Name)
	}
	return nil
}

// place moves every complete file to its name, then gives files and the
// directories this transfer made their modes and modification times
// (directories last, deepest first, as placing files changes their times),
// makes the new names durable and forgets the resume state.
func (r *receiver) place() error {
	dirs := map[string]bool{}
	for i, f := range r.m.Files {
		if f.Dir {
			continue
		}
		tmp := partialName(r.c.sid, r.m, i)
		if err := r.move(tmp, f.Name); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return withReason(fmt.Errorf("%w: %s appeared while receiving", ErrExists, f.Name),
					fmt.Sprintf("receiver already has a file named %q", f.Name))
			}
			return fmt.Errorf("moving %q into place: %w", f.Name, err)
		}
		if err := r.setAttrs(f); err != nil {
			return err
		}
		dirs[path.Dir(f.Name)] = true
	}
	created := map[string]bool{}
	for _, d := range r.created {
		created[d] = true
	}
	for _, f := range slices.Backward(r.m.Files) {
		if f.Dir && created[f.Name] {
			if err := r.setAttrs(f); err != nil {
				return err
			}
		}
	}
	// Directories made but not listed (parents of files) get the usual mode.
	for _, d := range r.created {
		if !slices.ContainsFunc(r.m.Files, func(f api.File) bool { return f.Dir && f.Name == d }) {
			r.root.Chmod(d, 0o755)
		}
		dirs[path.Dir(d)] = true
	}
	r.created = nil // placed: no longer ours to remove
	for d := range dirs {
		if err := syncDir(r.root, d); err != nil {
			return fmt.Errorf("flushing directory %s: %w", d, err)
		}
	}
	r.root.Remove(stateName(r.c.sid))
	return nil
}

// move places tmp at dst: replacing dst when overwriting, otherwise never
// replacing a file that appeared meanwhile (the error matches fs.ErrExist).
func (r *receiver) move(tmp, dst string) error {
	if r.opts.Overwrite {
		return r.root.Rename(tmp, dst)
	}
	if err := r.root.Link(tmp, dst); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		// No hard links on this file system: check, then rename.
		if _, serr := r.root.Lstat(dst); serr == nil {
			return fs.ErrExist
		}
		return r.root.Rename(tmp, dst)
	}
	// dst is complete; a leftover name for the same inode is only clutter.
	return r.root.Remove(tmp)
}

func (r *receiver) setAttrs(f api.File) error {
	if f.Mode != 0 {
		if err := r.root.Chmod(f.Name, fs.FileMode(f.Mode)&fs.ModePerm); err != nil {
			return fmt.Errorf("setting the mode of %s: %w", f.Name, err)
		}
	} else if f.Dir {
		r.root.Chmod(f.Name, 0o755)
	}
	if f.MTime != 0 {
		t := time.Unix(0, f.MTime)
		if err := r.root.Chtimes(f.Name, t, t); err != nil {
			return fmt.Errorf("setting the time of %s: %w", f.Name, err)
		}
	}
	return nil
}

// syncDir makes new directory entries in d durable.
func syncDir(root *os.Root, d string) error {
	if isWindows {
		return nil // directories cannot be opened for sync there
	}
	f, err := root.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Paths returns where Receive puts the entries of m under dir, in manifest
// order.
func Paths(dir string, m api.Manifest) []string {
	out := make([]string, len(m.Files))
	for i, f := range m.Files {
		out[i] = dir + string(os.PathSeparator) + strings.ReplaceAll(f.Name, "/", string(os.PathSeparator))
	}
	return out
}
