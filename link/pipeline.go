package link

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/sftproject/sft/api"
)

// pipeDepth is the number of record buffers in flight between the two
// stages of a side. Each side splits its work in two so that hashing
// (SHA-256 is the largest cost) overlaps with encryption and network I/O;
// memory stays at pipeDepth buffers whatever the file size or count. Each
// stage hashes a buffer right before or after its own copy of it, while
// the bytes are still in that core's cache: two stages per side, with the
// hash beside the file I/O, beat three (and cost one goroutine less).
const pipeDepth = 4

// chunk is one record's buffer travelling from one stage to the next.
type chunk struct {
	buf  []byte // whole buffer, returned to the pool when done
	p    []byte // payload within buf
	skip bool   // part of a prefix the receiver already holds: hash, do not send
}

// pool is a side's fixed set of record buffers, shared by its files.
type pool chan []byte

func newPool(size int) pool {
	p := make(pool, pipeDepth)
	for range pipeDepth {
		p <- make([]byte, size)
	}
	return p
}

// source reads and hashes a sender's file on a goroutine of its own,
// filling frame buffers with payload at payloadOffset for the network
// stage. The whole file is read and hashed; chunks before skip are marked
// so the network stage drops them, since the summary covers the whole file
// even when the receiver already holds its start.
type source struct {
	full chan chunk
	free pool
	quit chan struct{}
	done chan struct{}
	once sync.Once

	// Set before full is closed.
	err error
	sum Result
}

func startSource(f api.File, r io.Reader, skip int64, free pool) *source {
	s := &source{
		full: make(chan chunk, pipeDepth),
		free: free,
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	go s.read(f, r, skip)
	return s
}

func (s *source) read(f api.File, r io.Reader, skip int64) {
	defer close(s.done)
	defer close(s.full)
	d := newDigest()
	stream := f.Size == api.SizeUnknown
	var n int64
	for stream || n < f.Size {
		var buf []byte
		select {
		case buf = <-s.free:
		case <-s.quit:
			s.err = errStopped
			return
		}
		want := int64(maxPayload)
		if !stream {
			want = min(want, f.Size-n)
		}
		if n < skip {
			want = min(want, skip-n) // a chunk boundary falls exactly at skip
		}
		p := buf[payloadOffset : payloadOffset+int(want)]
		got, err := io.ReadFull(r, p)
		if stream && got > 0 && errors.Is(err, io.ErrUnexpectedEOF) {
			err = nil
		}
		if err != nil {
			s.free <- buf
			switch {
			case stream && errors.Is(err, io.EOF):
				s.sum = d.result()
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				s.err = fmt.Errorf("%w: %q ended after %d of %d bytes (did it change while sending?)",
					ErrSourceSize, f.Name, n+int64(got), f.Size)
			default:
				s.err = fmt.Errorf("reading %q: %w", f.Name, err)
			}
			return
		}
		d.write(p[:got])
		s.full <- chunk{buf: buf, p: p[:got], skip: n < skip} // never blocks: full holds every buffer
		n += int64(got)
	}
	// More bytes than declared is as wrong as fewer: the receiver would get
	// something other than what the session announced.
	var one [1]byte
	if got, err := io.ReadFull(r, one[:]); got > 0 {
		s.err = fmt.Errorf("%w: %q holds more than the %d bytes declared (did it change while sending?)", ErrSourceSize, f.Name, f.Size)
	} else if !errors.Is(err, io.EOF) {
		s.err = fmt.Errorf("reading %q: %w", f.Name, err)
	} else {
		s.sum = d.result()
	}
}

// errStopped marks a source stopped before the end; nobody reads the
// result then.
var errStopped = errors.New("source stopped")

// stop ends the reader and waits for it, returning every buffer to the
// pool. A Read blocked in the source cannot be interrupted; stop
// returns once it does.
func (s *source) stop() {
	s.once.Do(func() { close(s.quit) })
	for c := range s.full {
		s.free <- c.buf
	}
	<-s.done
}

// sink writes and hashes a receiver's data on a goroutine of its own while
// the network stage reads and decrypts the next records.
//
// When it writes to a file, every checkpointEvery bytes another goroutine
// syncs the file and calls checkpoint with the length written by then,
// which records that prefix as verified for a later resume (every byte in
// it arrived authenticated). Writing goes on meanwhile: a sync covers at
// least what was written before it started.
type sink struct {
	full   chan chunk
	free   pool
	done   chan struct{}
	once   sync.Once
	failed atomic.Bool

	cps    chan int64 // lengths to make durable and record
	cpDone chan struct{}
	cpErr  error

	// Read after done is closed.
	d       *digest
	err     error
	written int64 // file length reached: the starting offset plus what was written
}

// writebackEvery is how much written data the sink lets accumulate before
// asking the kernel to start flushing it; checkpointEvery how much it lets
// accumulate before making it durable and recording it as resumable.
const (
	writebackEvery  = 8 << 20
	checkpointEvery = 64 << 20
)

// startSink starts a sink for a file whose first off bytes are already in
// w and hashed into d.
func startSink(w io.Writer, d *digest, off int64, free pool, checkpoint func(int64) error) *sink {
	s := &sink{
		full:    make(chan chunk, pipeDepth),
		free:    free,
		done:    make(chan struct{}),
		d:       d,
		written: off,
	}
	f, _ := w.(*os.File)
	if f != nil && checkpoint != nil {
		s.cps, s.cpDone = make(chan int64, 1), make(chan struct{})
		go s.checkpoints(f, checkpoint)
	}
	go s.write(w, f)
	return s
}

func (s *sink) write(w io.Writer, f *os.File) {
	defer close(s.done)
	if s.cps != nil {
		defer func() {
			close(s.cps)
			<-s.cpDone
			if s.cpErr != nil && s.err == nil {
				s.fail(s.cpErr)
			}
		}()
	}
	flushed, marked := s.written, s.written
	for c := range s.full {
		// After a write error keep draining, so the network stage never
		// blocks on a full pipe; it notices failed and stops.
		if s.err == nil {
			if _, err := w.Write(c.p); err != nil {
				s.fail(err)
			} else {
				s.written += int64(len(c.p))
				if f != nil && s.written-flushed >= writebackEvery {
					startWriteback(f, flushed, s.written-flushed)
					flushed = s.written
				}
				if s.cps != nil && s.written-marked >= checkpointEvery {
					select {
					case s.cps <- s.written:
						marked = s.written
					default: // the previous checkpoint is still syncing
					}
				}
				s.d.write(c.p)
			}
		}
		s.free <- c.buf
	}
}

// checkpoints makes each length it is given durable and records it.
func (s *sink) checkpoints(f *os.File, checkpoint func(int64) error) {
	defer close(s.cpDone)
	for n := range s.cps {
		if s.cpErr != nil {
			continue
		}
		if err := f.Sync(); err != nil {
			s.cpErr = err
		} else if err := checkpoint(n); err != nil {
			s.cpErr = err
		}
		if s.cpErr != nil {
			s.failed.Store(true)
		}
	}
}

func (s *sink) fail(err error) {
	s.err = err
	s.failed.Store(true)
}

// finish waits until every chunk is written and hashed (and any checkpoint
// is done) and returns what was written. It may be called more than once.
func (s *sink) finish() (Result, error) {
	s.once.Do(func() { close(s.full) })
	<-s.done
	return s.d.result(), s.err
}
