package link

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/sftproject/sft/services/api"
)

// ReceiveOptions tunes Receive.
type ReceiveOptions struct {
	// Overwrite allows replacing an existing file of the same name.
	Overwrite bool
	// Progress, if not nil, is called with the bytes received so far.
	Progress func(received int64)
}

// Receive reads the peer's manifest, checks that it equals expect (the
// manifest the session recorded), and saves the file into dir under its
// manifest name. The data goes to a temporary file in dir, hashed as it is
// written; only when length, CRC-32C and SHA-256 match the sender's summary
// is it synced and moved into place, after which the sender gets the
// confirmation. An existing destination is refused (ErrExists) unless
// opts.Overwrite, both before the first byte is written and at the final
// move. On any failure the temporary file is removed and the sender is told
// why: nothing partial is ever left in dir. Received files get mode 0600.
//
// It returns the result and the path of the saved file.
func (c *Conn) Receive(ctx context.Context, expect api.Manifest, dir string, opts ReceiveOptions) (Result, string, error) {
	if err := c.claim(); err != nil {
		return Result{}, "", err
	}
	stop := watch(ctx, c.nc)
	res, path, err := c.receive(ctx, expect, dir, opts)
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
		return Result{}, "", err
	}
	return res, path, nil
}

func (c *Conn) receive(ctx context.Context, expect api.Manifest, dir string, opts ReceiveOptions) (Result, string, error) {
	if err := checkManifest(expect); err != nil {
		return Result{}, "", fmt.Errorf("expected manifest: %w", err)
	}
	t, p, err := c.readRecord()
	if err != nil {
		return Result{}, "", fmt.Errorf("waiting for the manifest: %w", err)
	}
	switch t {
	case recManifest:
	case recAbort:
		return Result{}, "", decodeAbort(p)
	default:
		return Result{}, "", fmt.Errorf("%w: expected the manifest, got a %s record", ErrProtocol, t)
	}
	m, err := decodeManifest(p)
	if err != nil {
		return Result{}, "", fmt.Errorf("manifest from peer: %w", err)
	}
	if !sameManifest(m, expect) {
		return Result{}, "", fmt.Errorf("%w: peer offers %s, the session recorded %s", ErrManifestMismatch, describe(m), describe(expect))
	}
	f := m.Files[0]
	dst := filepath.Join(dir, f.Name)
	if err := checkDestination(dir, dst, f.Name, opts.Overwrite); err != nil {
		return Result{}, "", err
	}
	res, err := c.receiveFile(f, dir, dst, opts)
	if err != nil {
		return Result{}, "", err
	}
	if err := c.writeRecord(recAck, res.encode()); err != nil {
		// The file is complete, verified and durable; only the sender's
		// confirmation is lost, so this side has succeeded.
		c.log.Warn("peer link: file saved but the sender could not be told", "path", dst, "err", ctxErr(ctx, "confirming", err))
	}
	return res, dst, nil
}

func checkDestination(dir, dst, name string, overwrite bool) error {
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("destination directory: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("destination %s is not a directory", dir)
	}
	fi, err := os.Lstat(dst)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("checking destination: %w", err)
	case fi.IsDir():
		return withReason(fmt.Errorf("%w: %s is a directory", ErrExists, dst),
			fmt.Sprintf("receiver has a directory named %q", name))
	case !overwrite:
		return withReason(fmt.Errorf("%w: %s (allow overwriting to replace it)", ErrExists, dst),
			fmt.Sprintf("receiver already has a file named %q and did not allow overwriting", name))
	}
	return nil
}

// receiveFile stores one file's data records in a temporary file and, once
// its end record verifies, moves it to dst.
func (c *Conn) receiveFile(f api.File, dir, dst string, opts ReceiveOptions) (Result, error) {
	tmp, err := os.CreateTemp(dir, ".sft-*.part")
	if err != nil {
		return Result{}, fmt.Errorf("creating a file in %s: %w", dir, err)
	}
	placed := false
	defer func() {
		if !placed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// This goroutine reads and decrypts; the sink hashes and writes.
	sk := startSink(tmp)
	defer sk.finish()
	var (
		received int64
		res      Result
	)
	for done := false; !done; {
		if sk.failed.Load() {
			_, err := sk.finish()
			return Result{}, fmt.Errorf("writing %q: %w", f.Name, err)
		}
		buf := <-sk.free
		t, p, err := c.readRecordInto(buf)
		if err != nil {
			return Result{}, fmt.Errorf("receiving %q after %d of %d bytes: %w", f.Name, received, f.Size, err)
		}
		switch t {
		case recData:
			if int64(len(p)) > f.Size-received {
				return Result{}, fmt.Errorf("%w: peer sent more than the %d bytes the manifest declares for %q", ErrVerify, f.Size, f.Name)
			}
			sk.full <- chunk{buf: buf, p: p}
			received += int64(len(p))
			if opts.Progress != nil {
				opts.Progress(received)
			}
		case recEnd:
			sent, err := decodeSummary(p)
			if err != nil {
				return Result{}, err
			}
			if res, err = sk.finish(); err != nil {
				return Result{}, fmt.Errorf("writing %q: %w", f.Name, err)
			}
			if err := verify(f, sent, res); err != nil {
				return Result{}, err
			}
			done = true
		case recAbort:
			return Result{}, decodeAbort(p)
		default:
			return Result{}, fmt.Errorf("%w: unexpected %s record while receiving %q", ErrProtocol, t, f.Name)
		}
	}
	if err := tmp.Sync(); err != nil {
		return Result{}, fmt.Errorf("saving %q: %w", f.Name, err)
	}
	if err := tmp.Close(); err != nil {
		return Result{}, fmt.Errorf("saving %q: %w", f.Name, err)
	}
	if err := place(tmp.Name(), dst, opts.Overwrite); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return Result{}, withReason(fmt.Errorf("%w: %s appeared while receiving", ErrExists, dst),
				fmt.Sprintf("receiver already has a file named %q", f.Name))
		}
		return Result{}, fmt.Errorf("moving %q into place: %w", f.Name, err)
	}
	placed = true
	if err := syncDir(dir); err != nil {
		return Result{}, fmt.Errorf("saved %s, but flushing directory %s failed: %w", dst, dir, err)
	}
	return res, nil
}

func verify(f api.File, sent, got Result) error {
	switch {
	case sent.Bytes != f.Size:
		return fmt.Errorf("%w: sender reports %d bytes for %q, the manifest declares %d", ErrVerify, sent.Bytes, f.Name, f.Size)
	case got.Bytes != f.Size:
		return fmt.Errorf("%w: received %d of the %d bytes of %q", ErrVerify, got.Bytes, f.Size, f.Name)
	case got.CRC32C != sent.CRC32C:
		return fmt.Errorf("%w: CRC-32C of %q is %08x, the sender's is %08x", ErrVerify, f.Name, got.CRC32C, sent.CRC32C)
	case got.SHA256 != sent.SHA256:
		return fmt.Errorf("%w: SHA-256 of %q differs from the sender's", ErrVerify, f.Name)
	}
	return nil
}

// place moves the finished temporary file to dst. Without overwrite it
// never replaces a file that appeared meanwhile (the error matches
// fs.ErrExist).
func place(tmp, dst string, overwrite bool) error {
	if overwrite {
		return os.Rename(tmp, dst)
	}
	return renameNoReplace(tmp, dst)
}

// linkNoReplace places tmp at dst through a hard link, which fails if dst
// exists.
func linkNoReplace(tmp, dst string) error {
	if err := os.Link(tmp, dst); err != nil {
		return err
	}
	// dst is complete; a leftover name for the same inode is only clutter.
	os.Remove(tmp)
	return nil
}

// syncDir makes the new directory entry durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for sync there
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
