package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"
)

const (
	caseRawTCP            = "raw TCP"
	caseFloor             = "encrypted-copy floor"
	caseFloorPipelined    = "encrypted-copy floor, pipelined"
	caseSFT               = "SFT send/recv"
	caseSFTRelay          = "SFT send/recv via relay"
	caseCroc              = "croc"
	caseCrocNoCompress    = "croc --no-compress"
	caseLifecycleEmbedded = "lifecycle (embedded)"
	caseLifecycleRedis    = "lifecycle (redis + processes)"
	caseLogin             = "login"
	caseClusterOne        = "cluster: 1 NATS node"
	caseClusterThree      = "cluster: 3 NATS nodes"
)

// randomFile writes size random bytes: incompressible, like the files that
// matter, and fair to croc's compression.
func randomFile(ctx context.Context, dir string, size int64) (string, error) {
	path := filepath.Join(dir, "payload.bin")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	for left := size; left > 0; {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n := min(left, int64(len(buf)))
		rand.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			return "", fmt.Errorf("write test file: %w", err)
		}
		left -= n
	}
	return path, f.Close()
}

func mbps(size int64, d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }

func gib(n int64) float64 { return float64(n) / (1 << 30) }

func mib(kib int64) float64 { return float64(kib) / 1024 }

// repeat runs one warm-up and then o.runs measured runs of fn.
func repeat(o options, c *Case, fn func(measured bool) error) *Case {
	for i := 0; i <= o.runs; i++ {
		if err := fn(i > 0); err != nil {
			return &Case{Name: c.Name, Skipped: "failed: " + err.Error()}
		}
	}
	return c
}

// benchRawTCP is the physical limit: plain io.Copy over loopback into a
// file, then fsync, no crypto and no checks.
func benchRawTCP(ctx context.Context, o options, dir, src string) *Case {
	c := newCase(caseRawTCP)
	dst := filepath.Join(dir, "raw-out.bin")
	return repeat(o, c, func(measured bool) error {
		defer os.Remove(dst)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		done := make(chan error, 1)
		t0 := time.Now()
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			defer conn.Close()
			f, err := os.Create(dst)
			if err != nil {
				done <- err
				return
			}
			defer f.Close()
			if _, err := io.Copy(f, conn); err != nil {
				done <- err
				return
			}
			done <- f.Sync()
		}()
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		f, err := os.Open(src)
		if err != nil {
			conn.Close()
			return err
		}
		_, err = io.Copy(conn, f)
		f.Close()
		conn.Close()
		if err := errors.Join(err, <-done); err != nil {
			return err
		}
		if measured {
			c.add("throughput", "MB/s", mbps(o.size, time.Since(t0)))
		}
		return nil
	})
}
