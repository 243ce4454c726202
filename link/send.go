package link

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/sftproject/sft/services/api"
)

// Send transfers the file m describes: it sends the manifest, then exactly
// m.Files[0].Size bytes read from r (a reader holding fewer or more bytes is
// an error, ErrSourceSize), then the end summary, and waits until the
// receiver confirms that it verified and saved the file. A confirmation that
// differs from what was sent is ErrVerify; a refusal by the receiver is an
// *AbortError. progress, if not nil, is called with the bytes sent so far.
//
// ctx interrupts the network side at any point; r itself is not
// interruptible, so it should be a file or similar that does not block
// indefinitely.
func (c *Conn) Send(ctx context.Context, m api.Manifest, r io.Reader, progress func(sent int64)) (Result, error) {
	if err := c.claim(); err != nil {
		return Result{}, err
	}
	stop := watch(ctx, c.nc)
	res, err := c.send(ctx, m, r, progress)
	stop()
	if err != nil {
		c.Close()
		return Result{}, err
	}
	return res, nil
}

func (c *Conn) send(ctx context.Context, m api.Manifest, r io.Reader, progress func(int64)) (Result, error) {
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
	// The receiver may refuse at any time (file exists, data tampered, …);
	// a reader running alongside catches its abort while we keep writing.
	replies := c.readReplies()
	res, err := c.sendFile(ctx, m.Files[0], r, progress, replies)
	if err != nil {
		return Result{}, c.sendFailed(ctx, err, replies)
	}
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
	return res, nil
}

// sendFile streams one file's data records and its end record. The source
// is read and hashed on another goroutine while this one encrypts and
// writes.
func (c *Conn) sendFile(ctx context.Context, f api.File, r io.Reader, progress func(int64), replies *replyReader) (Result, error) {
	src := startSource(f, r)
	defer src.stop()
	var sent int64
	for ch := range src.full {
		if rep, ok := replies.poll(); ok {
			if rep.err != nil {
				return Result{}, rep.err
			}
			return Result{}, fmt.Errorf("%w: receiver confirmed before the transfer ended", ErrProtocol)
		}
		if err := ctx.Err(); err != nil {
			return Result{}, fmt.Errorf("sending %q interrupted: %w", f.Name, err)
		}
		if err := c.writeFrame(ch.buf, recData, len(ch.p)); err != nil {
			return Result{}, err
		}
		sent += int64(len(ch.p))
		src.free <- ch.buf
		if progress != nil {
			progress(sent)
		}
	}
	if src.err != nil {
		return Result{}, src.err
	}
	if err := c.writeRecord(recEnd, src.sum.encode()); err != nil {
		return Result{}, err
	}
	return src.sum, nil
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

// replyReader reads the one record a receiver sends back (ack or abort) on
// its own goroutine, which ends once that record, or a read error, arrives.
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
