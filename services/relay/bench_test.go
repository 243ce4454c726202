//go:build linux

package relay_test

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"testing"

	"github.com/sftproject/sft/services/relay"
	"github.com/sftproject/sft/services/relay/relaybench"
)

// TestMain lets the test binary be the relay process of BenchmarkRelay,
// so the relay's CPU, memory and allocations are measured apart from the
// clients'.
func TestMain(m *testing.M) {
	relaybench.ServeTestChild()
	os.Exit(m.Run())
}

// BenchmarkRelay moves 64 MiB per operation through a relay process,
// over 1 and over 50 pairs at once, and reports the relay's CPU per GiB,
// its allocations per operation and its memory (resident now and at its
// peak), besides MB/s.
func BenchmarkRelay(b *testing.B) {
	for _, pairs := range []int{1, 50} {
		b.Run(fmt.Sprintf("pairs=%d", pairs), func(b *testing.B) { benchRelay(b, pairs) })
	}
}

func benchRelay(b *testing.B, pairs int) {
	const perOp = 64 << 20
	ctx := b.Context()
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	proc, err := relaybench.Start(ctx, relaybench.TestChild(pub))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := proc.Stop(); err != nil {
			b.Error(err)
		}
	})
	ps, err := relaybench.Connect(ctx, proc.Addr, relay.NewIssuer(key), pairs)
	if err != nil {
		b.Fatal(err)
	}
	defer ps.Close()
	per := int64(perOp / pairs)

	usage := func() (relaybench.Usage, uint64) {
		u, err := proc.Usage()
		if err != nil {
			b.Fatal(err)
		}
		m, err := proc.Mallocs(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return u, m
	}
	before, mallocs0 := usage()
	b.SetBytes(per * int64(pairs))
	b.ReportAllocs()
	for b.Loop() {
		if err := ps.Move(ctx, per); err != nil {
			b.Fatal(err)
		}
	}
	after, mallocs1 := usage()
	gib := float64(per*int64(pairs)*int64(b.N)) / (1 << 30)
	b.ReportMetric((after.CPU-before.CPU).Seconds()/gib, "relay-CPU-s/GiB")
	b.ReportMetric(float64(mallocs1-mallocs0)/float64(b.N), "relay-allocs/op")
	b.ReportMetric(float64(after.RSSKiB)/1024, "relay-RSS-MiB")
	b.ReportMetric(float64(after.PeakRSSKiB)/1024, "relay-peak-RSS-MiB")
}
