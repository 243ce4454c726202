package procstat

import (
	"os"
	"runtime"
	"testing"
	"time"
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

func TestHostTicks(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	total0, steal0, err := HostTicks()
	if err != nil || total0 <= 0 || steal0 < 0 || steal0 > total0 {
		t.Fatalf("HostTicks = %d, %d, %v", total0, steal0, err)
	}
	// Busy long enough for the machine's clock to tick (USER_HZ is 100).
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
	}
	total1, steal1, err := HostTicks()
	if err != nil || total1 <= total0 || steal1 < steal0 {
		t.Fatalf("HostTicks after = %d, %d, %v; before %d, %d", total1, steal1, err, total0, steal0)
	}
}
