package rpc_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/sftproject/sft/services/rpc"
)

// TestAddServiceConcurrent: instances serve one endpoint's requests at
// once (micro alone serves them one by one), and act as one service.
func TestAddServiceConcurrent(t *testing.T) {
	url := startNATS(t)
	nc := connect(t, url)
	svc, err := rpc.AddService(nc, micro.Config{Name: "conc", Version: "1.0.0", QueueGroup: "q"}, 8)
	if err != nil {
		t.Fatal(err)
	}
	var inFlight, most atomic.Int64
	second := make(chan struct{})
	var once sync.Once
	err = svc.AddEndpoint("slow", micro.HandlerFunc(func(r micro.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		if n >= 2 {
			once.Do(func() { close(second) })
		}
		// Hold the request until another one is served beside it (or give
		// up, so a serial service fails the test instead of hanging).
		select {
		case <-second:
		case <-time.After(2 * time.Second):
		}
		_ = r.Respond([]byte("ok"))
	}), micro.WithEndpointSubject("test.slow"))
	if err != nil {
		t.Fatal(err)
	}
	// The subscriptions must reach the server before the other connection asks.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	const requests = 16
	client := connect(t, url)
	var wg sync.WaitGroup
	for range requests {
		wg.Go(func() {
			if _, err := client.Request("test.slow", nil, 10*time.Second); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if most.Load() < 2 {
		t.Errorf("at most %d request served at once, want several", most.Load())
	}
	// micro counts a request once its handler has returned, which may be
	// just after the caller has the reply.
	total := 0
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		total = 0
		for _, e := range svc.Stats().Endpoints {
			total += e.NumRequests
		}
		if total == requests || time.Now().After(deadline) {
			break
		}
	}
	if total != requests {
		t.Errorf("stats count %d requests, want %d", total, requests)
	}
	if err := svc.Stop(); err != nil {
		t.Fatal(err)
	}
	if !svc.Stopped() {
		t.Error("Stopped() = false after Stop")
	}
}
