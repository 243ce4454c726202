package link

import (
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
)

const benchSize = 256 << 20

// BenchmarkTransfer sends 256 MiB through the encrypted link over loopback
// TCP into a file that is synced and moved into place.
func BenchmarkTransfer(b *testing.B) {
	ctx := b.Context()
	key := randomKey(b)
	dir := b.TempDir()
	pattern := randomBytes(1<<20, 9)
	m := manifest("bench.bin", benchSize)
	opts := Options{Logger: slog.New(slog.DiscardHandler)}
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			c, err := Accept(ctx, ln, key, "bench", opts)
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			_, err = c.Receive(ctx, m, dir, ReceiveOptions{Overwrite: true})
			done <- err
		}()
		c, err := Dial(ctx, ln.Addr().String(), key, "bench", opts)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Send(ctx, m, one(&patternReader{pattern: pattern, n: benchSize}), SendOptions{}); err != nil {
			b.Fatal(err)
		}
		c.Close()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawTCP is the baseline: the same bytes copied over plain
// loopback TCP into a file that is synced.
func BenchmarkRawTCP(b *testing.B) {
	dir := b.TempDir()
	pattern := randomBytes(1<<20, 9)
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			defer ln.Close()
			c, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			f, err := os.Create(filepath.Join(dir, "raw.bin"))
			if err != nil {
				done <- err
				return
			}
			defer f.Close()
			if _, err := io.Copy(f, c); err != nil {
				done <- err
				return
			}
			done <- f.Sync()
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(c, &patternReader{pattern: pattern, n: benchSize}); err != nil {
			b.Fatal(err)
		}
		c.Close()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}
