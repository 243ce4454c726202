package redisstore

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/store"
	"github.com/sftproject/sft/services/store/redisstore/redistest"
	"github.com/sftproject/sft/services/store/storetest"
)

// sentinelOptions reach the primary of st through its sentinels.
func sentinelOptions(st *redistest.Sentinel, o redistest.SentinelOptions) Options {
	return Options{
		URL:              st.URL(),
		SentinelMaster:   redistest.MasterName,
		SentinelAddrs:    st.Addrs(),
		SentinelPassword: o.SentinelPassword,
		Prefix:           uniquePrefix(),
	}
}

func TestSentinelConformance(t *testing.T) {
	t.Parallel()
	o := redistest.SentinelOptions{}
	st := redistest.StartSentinel(t, o)
	storetest.Run(t, func(t *testing.T) storetest.Store {
		s, err := Open(t.Context(), sentinelOptions(st, o))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s // Run closes it
	})
	// The key service's combined reads and writes, waiting for a replica.
	t.Run("session and key", func(t *testing.T) {
		opts := sentinelOptions(st, o)
		opts.Prefix = uniquePrefix()
		checkIssueKey(t, openStore(t, opts), nil, opts.Prefix)
	})
}

// TestSentinelFailover kills the primary: what the store acknowledged
// before is on the promoted replica, a write while no primary answers
// fails with ErrUnavailable, as does one no replica holds, and the store
// follows the new primary without being reopened.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	o := redistest.SentinelOptions{Password: "data secret", SentinelPassword: "sentinel secret"}
	st := redistest.StartSentinel(t, o)
	s := openStore(t, sentinelOptions(st, o))
	ctx := t.Context()

	sess, rev := writeDurable(t, s)

	killed := st.Primary()
	killed.Kill()
	// The sentinels need a second to call the primary down, so the store
	// still points at the dead one. (Should the promotion come first, the
	// write finds no replica: still ErrUnavailable.)
	_, err := s.CreateSession(ctx, newSession("lost", "carol", "dave"), time.Hour)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("CreateSession with the primary dead: %v, want ErrUnavailable", err)
	}
	st.WaitFailover(killed)

	// A caller retries on ErrUnavailable; the first try may meet a
	// connection the failover cut.
	untilAvailable(t, func() error { _, _, err := s.GetSession(ctx, "durable"); return err })

	// The promoted primary has no replica yet: a store opened now says so,
	// a write is applied but not acknowledged, and the caller is told.
	var logs syncbuf.Buffer
	opts := sentinelOptions(st, o)
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	openStore(t, opts)
	if !strings.Contains(logs.String(), "no replica in sync") {
		t.Errorf("no warning of the missing replica; log:\n%s", logs.String())
	}
	orphan := newSession("unreplicated", "carol", "dave")
	if _, err := s.CreateSession(ctx, orphan, time.Hour); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("CreateSession with no replica: %v, want ErrUnavailable", err)
	}

	st.Rejoin(killed)
	checkDurable(t, s, sess, rev, "after the failover")
	if _, err := s.CreateSession(ctx, newSession("later", "carol", "dave"), time.Hour); err != nil {
		t.Fatalf("CreateSession once a replica is back: %v", err)
	}
	if got, _, err := s.GetSession(ctx, "later"); err != nil || got.State != api.StateWaiting {
		t.Fatalf("GetSession(later) = %+v, %v", got, err)
	}
}

// untilAvailable runs op until it returns anything but ErrUnavailable, a
// few times at most, and fails the test on an error.
func untilAvailable(t *testing.T, op func() error) {
	t.Helper()
	var err error
	for range 5 {
		if err = op(); !errors.Is(err, store.ErrUnavailable) {
			break
		}
	}
	if err != nil {
		t.Fatalf("after the failover: %v", err)
	}
}
