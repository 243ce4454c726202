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

// source reads a sender's file on one goroutine and hashes it on another,
// filling frame buffers with payload at payloadOffset for the network
// stage: three stages, so that a sender uses more than one core.
type source struct {
	full  chan chunk
	readq chan chunk // read, on their way to the hasher
	free  chan []byte
	quit  chan struct{}
	done  chan struct{}
	once  sync.Once

	rerr error // the reader's error, read by the hasher once readq is closed

	// Set before full is closed.
	err error
	sum Result
}

func startSource(f api.File, r io.Reader) *source {
	s := &source{
		full:  make(chan chunk, pipeDepth),
		readq: make(chan chunk, pipeDepth),
		free:  make(chan []byte, pipeDepth),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	for range pipeDepth {
		s.free <- make([]byte, frameBufSize)
	}
	go s.read(f, r)
	go s.hash()
	return s
}

func (s *source) read(f api.File, r io.Reader) {
	defer close(s.readq)
	var n int64
	for n < f.Size {
		var buf []byte
		select {
		case buf = <-s.free:
		case <-s.quit:
			s.rerr = errStopped
			return
		}
		p := buf[payloadOffset : payloadOffset+min(maxPayload, f.Size-n)]
		if got, err := io.ReadFull(r, p); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				s.rerr = fmt.Errorf("%w: %q ended after %d of %d bytes (did it change while sending?)",
					ErrSourceSize, f.Name, n+int64(got), f.Size)
			} else {
				s.rerr = fmt.Errorf("reading %q: %w", f.Name, err)
			}
			return
		}
		n += int64(len(p))
		s.readq <- chunk{buf: buf, p: p} // never blocks: readq holds every buffer
	}
	// More bytes than declared is as wrong as fewer: the receiver would get
	// something other than what the session announced.
	var one [1]byte
	if got, err := io.ReadFull(r, one[:]); got > 0 {
		s.rerr = fmt.Errorf("%w: %q holds more than the %d bytes declared (did it change while sending?)", ErrSourceSize, f.Name, f.Size)
	} else if !errors.Is(err, io.EOF) {
		s.rerr = fmt.Errorf("reading %q: %w", f.Name, err)
	}
}

// errStopped marks a source stopped before the end; nobody reads the
// result then.
var errStopped = errors.New("source stopped")

func (s *source) hash() {
	defer close(s.done)
	defer close(s.full)
	d := newDigest()
	for c := range s.readq {
		d.write(c.p)
		s.full <- c // never blocks: full holds every buffer
	}
	if s.rerr != nil {
		s.err = s.rerr
		return
	}
	s.sum = d.result()
}

// stop ends the goroutines and waits for them. A Read blocked in the source
// cannot be interrupted; stop returns once it does.
func (s *source) stop() {
	s.once.Do(func() { close(s.quit) })
	<-s.done
}

// sink writes a receiver's data on one goroutine and hashes it on another,
// while the network stage reads and decrypts the next records: three
// stages, so that a receiver uses more than one core.
type sink struct {
	full   chan chunk
	hashq  chan chunk // written chunks, on their way to the hasher
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
		full:  make(chan chunk, pipeDepth),
		hashq: make(chan chunk, pipeDepth),
		free:  make(chan []byte, pipeDepth),
		done:  make(chan struct{}),
		d:     newDigest(),
	}
	for range pipeDepth {
		s.free <- make([]byte, maxFrame)
	}
	go s.write(w)
	go s.hash()
	return s
}

func (s *sink) write(w *os.File) {
	defer close(s.hashq)
	var written, flushed int64
	for c := range s.full {
		// After a write error keep draining, so the network stage never
		// blocks on a full pipe; it notices failed and stops.
		if s.err == nil {
			if _, err := w.Write(c.p); err != nil {
				s.err = err
				s.failed.Store(true)
			} else {
				written += int64(len(c.p))
				if written-flushed >= writebackEvery {
					startWriteback(w, flushed, written-flushed)
					flushed = written
				}
				s.hashq <- c // never blocks: hashq holds every buffer
				continue
			}
		}
		s.free <- c.buf
	}
}

func (s *sink) hash() {
	defer close(s.done)
	for c := range s.hashq {
		s.d.write(c.p)
		s.free <- c.buf
	}
}

// finish waits until every chunk is written and hashed and returns what
// was written. It may be called more than once.
func (s *sink) finish() (Result, error) {
	s.once.Do(func() { close(s.full) })
	<-s.done
	return s.d.result(), s.err
}
