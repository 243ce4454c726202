package procstat

import (
	"os"
	"runtime"
	"testing"
)

func TestSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	// Some work, so there is CPU time to see.
	b := make([]byte, 8<<20)
	for i := range b {
		b[i] = byte(i)
	}
	cpu, err := CPU(os.Getpid())
	if err != nil || cpu < 0 {
		t.Fatalf("CPU = %v, %v", cpu, err)
	}
	rss, peak, err := Memory(os.Getpid())
	if err != nil || rss <= 0 || peak < rss {
		t.Fatalf("Memory = %d, %d KiB, %v", rss, peak, err)
	}
	if _, err := CPU(-1); err == nil {
		t.Error("CPU of no process")
	}
	if _, _, err := Memory(-1); err == nil {
		t.Error("Memory of no process")
	}
}
