package link

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/sftproject/sft/api"
)

// Opener opens entry i of the manifest being sent, positioned at its
// start. Send closes what it returns.
type Opener func(i int) (io.ReadCloser, error)

// SendOptions tunes Send.
type SendOptions struct {
	// Progress, if not nil, is called with the bytes of entry file the
	// receiver holds so far (from the offset it resumed at on).
	Progress func(file int, done int64)
}

// Send transfers what m describes: it sends the manifest, learns how much
// of each file the receiver already holds from an earlier attempt, then
// streams every file in manifest order: exactly its declared size read
// through open (fewer or more bytes is ErrSourceSize), of which only the
// part the receiver lacks crosses the link, and its end summary, which
// covers the whole file. It returns once the receiver confirms that it
// verified and saved everything. A confirmation that differs from what was
// sent is ErrVerify; a refusal by the receiver is an *AbortError. On
// failure the Result holds only Moved, what crossed the link before.
//
// ctx interrupts the network side at any point; the readers themselves are
// not interruptible, so they should be files or similar that do not block
// indefinitely (a pipe is fine: the transfer waits for it).
func (c *Conn) Send(ctx context.Context, m api.Manifest, open Opener, opts SendOptions) (Result, error) {
	if err := c.claim(); err != nil {
		return Result{}, err
	}
	stop := watch(ctx, c.nc)
	var moved int64
	res, err := c.send(ctx, m, open, opts, &moved)
	stop()
	if err != nil {
		c.Close()
		return Result{Moved: moved}, err
	}
	return res, nil
}

func (c *Conn) send(ctx context.Context, m api.Manifest, open Opener, opts SendOptions, moved *int64) (Result, error) {
	if err := checkManifest(m); err != nil {
		// Tell the receiver, or it would wait for a manifest until its own timeout.
		err = fmt.Errorf("cannot send: %w", err)
		c.sendAbort(err, "sender")
		return Result{}, err
	}
	body, err := json.Marshal(m)
	if err != nil {
		return Result{}, fmt.Errorf("encoding manifest: %w", err)
	}
	if err := c.writeRecord(recManifest, body); err != nil {
		return Result{}, ctxErr(ctx, "sending the manifest", err)
	}
	offsets, err := c.readResume(m)
	if err != nil {
		err = ctxErr(ctx, "waiting for the receiver to accept", err)
		if !isAbort(err) {
			c.sendAbort(err, "sender")
		}
		return Result{}, err
	}
	// The receiver may refuse at any time (disk full, data tampered, …);
	// a reader running alongside catches its abort while we keep writing.
	replies := c.readReplies()
	s := &sender{c: c, m: m, opts: opts, per: make([]Result, len(m.Files)), free: newPool(frameBufSize)}
	defer func() { *moved = s.moved }()
	for i, f := range m.Files {
		if f.Dir {
			continue
		}
		if err := s.file(ctx, i, offsets[i], open, replies); err != nil {
			return Result{}, c.sendFailed(ctx, err, replies)
		}
	}
	res := manifestSum(m, s.per)
	rep := replies.wait()
	if rep.err != nil {
		err := ctxErr(ctx, "waiting for the receiver's confirmation", rep.err)
		c.sendAbort(err, "sender")
		return Result{}, err
	}
	if rep.ack != res {
		return Result{}, fmt.Errorf("%w: receiver confirmed %d bytes (CRC-32C %08x), but %d bytes (CRC-32C %08x) were sent",
			ErrVerify, rep.ack.Bytes, rep.ack.CRC32C, res.Bytes, res.CRC32C)
	}
	res.Moved = s.moved
	return res, nil
}

// readResume reads the receiver's answer to the manifest: the offsets it
// holds, then start; or its refusal.
func (c *Conn) readResume(m api.Manifest) ([]int64, error) {
	offsets := make([]int64, len(m.Files))
	for {
		t, p, err := c.readRecord()
		if err != nil {
			return nil, err
		}
		switch t {
		case recStart:
			return offsets, nil
		case recAbort:
			return nil, decodeAbort(p)
		case recResume:
			if len(p)%12 != 0 {
				return nil, fmt.Errorf("%w: resume record of %d bytes", ErrProtocol, len(p))
			}
			for ; len(p) > 0; p = p[12:] {
				i, off, err := decodeFile(p[:12])
				if err != nil {
					return nil, err
				}
				if i >= len(m.Files) || m.Files[i].Dir || m.Files[i].Size == api.SizeUnknown || off > m.Files[i].Size {
					return nil, fmt.Errorf("%w: receiver claims %d bytes of entry %d", ErrProtocol, off, i)
				}
				offsets[i] = off
			}
		default:
			return nil, fmt.Errorf("%w: receiver sent a %s record before starting", ErrProtocol, t)
		}
	}
}

// sender is the state of one Send.
type sender struct {
	c     *Conn
	m     api.Manifest
	opts  SendOptions
	per   []Result
	free  pool
	moved int64
}

// file streams entry i's file record, the data records from off on, and
// its end record. The source is read and hashed on other goroutines while
// this one encrypts and writes.
func (s *sender) file(ctx context.Context, i int, off int64, open Opener, replies *replyReader) error {
	f := s.m.Files[i]
	r, err := open(i)
	if err != nil {
		return fmt.Errorf("opening %q: %w", f.Name, err)
	}
	defer r.Close()
	if err := s.c.writeRecord(recFile, encodeFile(i, off)); err != nil {
		return err
	}
	src := startSource(f, r, off, s.free)
	defer src.stop()
	done := off
	if s.opts.Progress != nil {
		s.opts.Progress(i, done)
	}
	for ch := range src.full {
		if ch.skip {
			src.free <- ch.buf
			continue
		}
		if rep, ok := replies.poll(); ok {
			src.free <- ch.buf
			if rep.err != nil {
				return rep.err
			}
			return fmt.Errorf("%w: receiver confirmed before the transfer ended", ErrProtocol)
		}
		if err := ctx.Err(); err != nil {
			src.free <- ch.buf
			return fmt.Errorf("sending %q interrupted: %w", f.Name, err)
		}
		if err := s.c.writeFrame(ch.buf, recData, len(ch.p)); err != nil {
			src.free <- ch.buf
			return err
		}
		done += int64(len(ch.p))
		s.moved += int64(len(ch.p))
		src.free <- ch.buf
		if s.opts.Progress != nil {
			s.opts.Progress(i, done)
		}
	}
	if src.err != nil {
		return src.err
	}
	if err := s.c.writeRecord(recEnd, src.sum.encode()); err != nil {
		return err
	}
	s.per[i] = src.sum
	return nil
}

// sendFailed settles a failed send: it tells the receiver why we stop, when
// the stream still allows, and returns once the reply reader has finished.
// When our own write failed, the receiver's abort (if it sent one) is the
// better explanation than a broken pipe.
func (c *Conn) sendFailed(ctx context.Context, err error, replies *replyReader) error {
	rep, replied := replies.poll()
	if replied && isAbort(rep.err) && ctx.Err() == nil {
		return rep.err
	}
	err = ctxErr(ctx, "transfer", err)
	c.sendAbort(err, "sender")
	if replied {
		return err
	}
	if ctx.Err() != nil {
		c.nc.SetReadDeadline(aLongTimeAgo)
	} else {
		c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	}
	if rep := replies.wait(); c.wbroken && isAbort(rep.err) && ctx.Err() == nil {
		return rep.err
	}
	return err
}

type reply struct {
	ack Result
	err error
}

// replyReader reads the one record a receiver sends back once data flows
// (ack or abort) on its own goroutine, which ends once that record, or a
// read error, arrives.
type replyReader struct {
	ch  chan reply
	got *reply
}

func (c *Conn) readReplies() *replyReader {
	rr := &replyReader{ch: make(chan reply, 1)}
	go func() { rr.ch <- c.readReply() }()
	return rr
}

func (rr *replyReader) poll() (reply, bool) {
	if rr.got == nil {
		select {
		case r := <-rr.ch:
			rr.got = &r
		default:
			return reply{}, false
		}
	}
	return *rr.got, true
}

func (rr *replyReader) wait() reply {
	if rr.got == nil {
		r := <-rr.ch
		rr.got = &r
	}
	return *rr.got
}

func (c *Conn) readReply() reply {
	t, p, err := c.readRecord()
	if err != nil {
		return reply{err: err}
	}
	switch t {
	case recAck:
		sum, err := decodeSummary(p)
		return reply{ack: sum, err: err}
	case recAbort:
		return reply{err: decodeAbort(p)}
	}
	return reply{err: fmt.Errorf("%w: receiver sent a %s record", ErrProtocol, t)}
}

// Summarize computes, without a peer, the Result a transfer of m would
// confirm: each entry read through open and hashed. A sender whose
// receiver confirmed everything before the sender could record it (the
// sender stopped in between) uses it to check its files still match.
func Summarize(ctx context.Context, m api.Manifest, open Opener) (Result, error) {
	if err := checkManifest(m); err != nil {
		return Result{}, err
	}
	per := make([]Result, len(m.Files))
	for i, f := range m.Files {
		if f.Dir {
			continue
		}
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		r, err := open(i)
		if err != nil {
			return Result{}, fmt.Errorf("opening %q: %w", f.Name, err)
		}
		d := newDigest()
		_, err = io.Copy(digestWriter{d}, r)
		r.Close()
		if err != nil {
			return Result{}, fmt.Errorf("reading %q: %w", f.Name, err)
		}
		if f.Size != api.SizeUnknown && d.n != f.Size {
			return Result{}, fmt.Errorf("%w: %q holds %d bytes, %d declared", ErrSourceSize, f.Name, d.n, f.Size)
		}
		per[i] = d.result()
	}
	return manifestSum(m, per), nil
}
