package relaybench

import (
	"crypto/ed25519"
	"os"
	"runtime"
	"testing"

	"github.com/sftproject/sft/services/relay"
)

func TestMain(m *testing.M) {
	ServeTestChild()
	os.Exit(m.Run())
}

// TestProcess moves bytes through a relay process over a few pairs and
// reads its figures.
func TestProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the figures come from /proc")
	}
	ctx := t.Context()
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(ctx, TestChild(pub))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	}()
	ps, err := Connect(ctx, p.Addr, relay.NewIssuer(key), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if ps.Len() != 3 {
		t.Fatalf("%d pairs", ps.Len())
	}
	for range 2 {
		if err := ps.Move(ctx, 1<<20+17); err != nil {
			t.Fatal(err)
		}
	}
	u, err := p.Usage()
	if err != nil || u.RSSKiB <= 0 || u.PeakRSSKiB < u.RSSKiB || u.CPU < 0 {
		t.Errorf("Usage = %+v, %v", u, err)
	}
	m1, err := p.Mallocs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m2, err := p.Mallocs(ctx); err != nil || m2 < m1 {
		t.Errorf("Mallocs = %d then %d, %v", m1, m2, err)
	}

	// A ticket the relay's key did not sign is refused.
	_, other, _ := ed25519.GenerateKey(nil)
	if _, err := Connect(ctx, p.Addr, relay.NewIssuer(other), 1); err == nil {
		t.Error("a pair with foreign tickets connected")
	}
}

// TestStartFails: a process that prints no address leaves nothing behind.
func TestStartFails(t *testing.T) {
	cmd := TestChild(nil)
	cmd.Env = append(cmd.Env, envChildKey+"=not-hex")
	if _, err := Start(t.Context(), cmd); err == nil {
		t.Fatal("started a process that printed no address")
	}
	if cmd.ProcessState == nil {
		t.Error("the process was not waited for")
	}
}
