package relay

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The two directions share a budget: neither can starve the other by
// holding what it does not use, and the total never exceeds it.
func TestBudget(t *testing.T) {
	ctx := within(t, time.Minute)
	b := budget{left: 100}
	quiet, err := b.take(ctx, 64) // one direction holds 64 and waits for bytes
	if err != nil || quiet != 64 {
		t.Fatalf("take = %d, %v", quiet, err)
	}
	busy, _ := b.take(ctx, 64)
	if busy != 36 {
		t.Fatalf("take = %d, want the 36 left", busy)
	}
	b.give(busy, busy)
	got := make(chan int64, 1)
	go func() {
		n, err := b.take(ctx, 64) // nothing left: waits for the quiet one
		if err != nil {
			n = -1
		}
		got <- n
	}()
	waitFor(t, ctx, "the busy direction to wait", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.waiter != nil })
	b.give(quiet, 0) // the quiet one's copy returns empty ...
	if n := <-got; n != 64 {
		t.Fatalf("the waiting direction got %d, want the 64 given back", n)
	}
	// ... and cannot take it again: it waits until the busy one is done,
	// which spends the whole budget.
	again := make(chan error, 1)
	go func() {
		_, err := b.take(ctx, 64)
		again <- err
	}()
	waitFor(t, ctx, "the quiet direction to wait", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.waiter != nil })
	b.give(64, 64)
	if err := <-again; !errors.Is(err, errLimit) {
		t.Fatalf("take after all 100 bytes = %v, want errLimit", err)
	}

	// A waiter whose pair ends gives up.
	b = budget{left: 10}
	n, _ := b.take(ctx, 10)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.take(cctx, 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("take with an ended context = %v", err)
	}
	b.give(n, 0)
	if b.left != 10 || b.held != 0 {
		t.Fatalf("budget %d left, %d held after all was given back", b.left, b.held)
	}
}
