package link

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/sftproject/sft/services/api"
)

// pipeDepth is the number of record buffers in flight between the two
// stages of a side. Both sides split their work so that hashing (SHA-256 is
// the largest cost) overlaps with encryption and network I/O; memory stays
// at pipeDepth buffers whatever the file size.
const pipeDepth = 4

// chunk is one record's buffer travelling from one stage to the next.
type chunk struct {
	buf []byte // whole buffer, returned to the pool when done
	p   []byte // payload within buf
}

// source reads and hashes a sender's file on its own goroutine, filling
// frame buffers with payload at payloadOffset for the network stage.
type source struct {
	full chan chunk
	free chan []byte
	quit chan struct{}
	done chan struct{}
	once sync.Once

	// Set before full is closed.
	err error
	sum Result
}

func startSource(f api.File, r io.Reader) *source {
	s := &source{
		full: make(chan chunk, pipeDepth),
		free: make(chan []byte, pipeDepth),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	for range pipeDepth {
		s.free <- make([]byte, frameBufSize)
	}
	go s.run(f, r)
	return s
}

func (s *source) run(f api.File, r io.Reader) {
	defer close(s.done)
	defer close(s.full)
	d := newDigest()
	for d.n < f.Size {
		var buf []byte
		select {
		case buf = <-s.free:
		case <-s.quit:
			return
		}
		p := buf[payloadOffset : payloadOffset+min(maxPayload, f.Size-d.n)]
		if n, err := io.ReadFull(r, p); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				s.err = fmt.Errorf("%w: %q ended after %d of %d bytes (did it change while sending?)",
					ErrSourceSize, f.Name, d.n+int64(n), f.Size)
			} else {
				s.err = fmt.Errorf("reading %q: %w", f.Name, err)
			}
			return
		}
		d.write(p)
		s.full <- chunk{buf: buf, p: p} // never blocks: full holds every buffer
	}
	// More bytes than declared is as wrong as fewer: the receiver would get
	// something other than what the session announced.
	var one [1]byte
	if n, err := io.ReadFull(r, one[:]); n > 0 {
		s.err = fmt.Errorf("%w: %q holds more than the %d bytes declared (did it change while sending?)", ErrSourceSize, f.Name, f.Size)
		return
	} else if !errors.Is(err, io.EOF) {
		s.err = fmt.Errorf("reading %q: %w", f.Name, err)
		return
	}
	s.sum = d.result()
}

// stop ends the goroutine and waits for it. A Read blocked in the source
// cannot be interrupted; stop returns once it does.
func (s *source) stop() {
	s.once.Do(func() { close(s.quit) })
	<-s.done
}

// sink hashes and writes a receiver's data on its own goroutine while the
// network stage reads and decrypts the next records.
type sink struct {
	full   chan chunk
	free   chan []byte
	done   chan struct{}
	once   sync.Once
	failed atomic.Bool

	// Read after done is closed.
	d   *digest
	err error
}

// writebackEvery is how much written data the sink lets accumulate before
// asking the kernel to start flushing it.
const writebackEvery = 8 << 20

func startSink(w *os.File) *sink {
	s := &sink{
		full: make(chan chunk, pipeDepth),
		free: make(chan []byte, pipeDepth),
		done: make(chan struct{}),
		d:    newDigest(),
	}
	for range pipeDepth {
		s.free <- make([]byte, maxFrame)
	}
	go s.run(w)
	return s
}

func (s *sink) run(w *os.File) {
	defer close(s.done)
	var flushed int64
	for c := range s.full {
		// After a write error keep draining, so the network stage never
		// blocks on a full pipe; it notices failed and stops.
		if s.err == nil {
			if _, err := w.Write(c.p); err != nil {
				s.err = err
				s.failed.Store(true)
			} else {
				s.d.write(c.p)
				if s.d.n-flushed >= writebackEvery {
					startWriteback(w, flushed, s.d.n-flushed)
					flushed = s.d.n
				}
			}
		}
		s.free <- c.buf
	}
}

// finish waits until every chunk is written and returns what was written.
// It may be called more than once.
func (s *sink) finish() (Result, error) {
	s.once.Do(func() { close(s.full) })
	<-s.done
	return s.d.result(), s.err
}
