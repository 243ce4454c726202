package link

import (
	"os"
	"path/filepath"
	"testing"
)

// After a write error the sink keeps taking chunks, so the network stage
// never blocks on it, and finish reports the error.
func TestSinkWriteFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path) // read-only: every Write fails
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := startSink(f, newDigest(), 0, newPool(maxFrame), nil)
	for range 3 * pipeDepth {
		buf := <-s.free
		s.full <- chunk{buf: buf, p: buf[:100]}
	}
	if _, err := s.finish(); err == nil {
		t.Fatal("finish reported no error for a failing writer")
	}
	if !s.failed.Load() {
		t.Error("failed flag not set")
	}
}
