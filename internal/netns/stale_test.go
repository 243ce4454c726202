package netns

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A namespace of a run whose lock is free (its process was killed) is
// removed with the lock file; one of a run that still holds its lock is
// left alone.
func TestSweepRemovesStale(t *testing.T) {
	tp := New(t)
	dead, live := "dead"+runID[:4], "live"+runID[:4]
	deadNS, liveNS := prefix+dead+"-1-x", prefix+live+"-1-x"
	for _, name := range []string{deadNS, liveNS} {
		tp.run(tp.ip, "netns", "add", name)
		t.Cleanup(func() { _ = exec.Command(tp.ip, "netns", "delete", name).Run() })
	}
	deadLock := filepath.Join(lockDir, dead+".lock")
	if err := os.WriteFile(deadLock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	liveLock := filepath.Join(lockDir, live+".lock")
	f, err := os.OpenFile(liveLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(); os.Remove(liveLock) })
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}

	sweep(tp.ip, t.Logf)

	out, err := exec.Command(tp.ip, "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	if slices.Contains(names, deadNS) {
		t.Errorf("stale %s survived the sweep", deadNS)
	}
	if !slices.Contains(names, liveNS) {
		t.Errorf("the sweep removed %s of a live run", liveNS)
	}
	if _, err := os.Stat(deadLock); !os.IsNotExist(err) {
		t.Errorf("lock file of the dead run: %v, want it removed", err)
	}
	if _, err := os.Stat(liveLock); err != nil {
		t.Errorf("lock file of the live run: %v", err)
	}
}
