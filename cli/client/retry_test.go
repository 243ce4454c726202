package client

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/api"
)

// TestRetry checks which answers send a request again: the attempts a
// sequence of answers leads to, and the error the caller sees.
func TestRetry(t *testing.T) {
	unavailable := api.Errorf(api.CodeUnavailable, "the state store is unavailable; retry shortly")
	tests := []struct {
		name     string
		answers  []error // the attempts' results, in order; past the end: success
		attempts int
		want     error
	}{
		{"success", nil, 1, nil},
		{"unavailable, then success", []error{unavailable, unavailable}, 3, nil},
		{"lost answer, then success", []error{fmt.Errorf("request: %w", context.DeadlineExceeded)}, 2, nil},
		{"reconnecting, then success", []error{nats.ErrConnectionReconnecting}, 2, nil},
		{"no responders, then success", []error{nats.ErrNoResponders}, 2, nil},
		{"refused: not sent again", []error{api.Errorf(api.CodeConflict, "already joined")}, 1, api.Errorf(api.CodeConflict, "")},
		{"forbidden: not sent again", []error{api.Errorf(api.CodeForbidden, "no")}, 1, api.Errorf(api.CodeForbidden, "")},
		{"an undecodable answer: not sent again", []error{errors.New("decode reply: bad")}, 1, errors.New("decode")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			err := retry(context.Background(), retryable, func(context.Context) error {
				n++
				if n <= len(tc.answers) {
					return tc.answers[n-1]
				}
				return nil
			})
			if n != tc.attempts {
				t.Errorf("%d attempts, want %d", n, tc.attempts)
			}
			switch {
			case tc.want == nil && err != nil:
				t.Errorf("error %v, want none", err)
			case tc.want != nil && err == nil:
				t.Errorf("no error, want %v", tc.want)
			case tc.want != nil && api.CodeOf(tc.want) != api.CodeOf(err):
				t.Errorf("error %v, want code %q", err, api.CodeOf(tc.want))
			}
		})
	}
}

// TestRetryGivesUp: a request nobody serves is sent again for
// noResponderFor only, and the caller's context ends the retries at once.
func TestRetryGivesUp(t *testing.T) {
	n := 0
	err := retry(context.Background(), retryable, func(context.Context) error { n++; return nats.ErrNoResponders })
	if !errors.Is(err, nats.ErrNoResponders) || n < 2 {
		t.Errorf("after %d attempts: %v", n, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	n = 0
	err = retry(ctx, retryable, func(context.Context) error {
		n++
		cancel()
		return api.Errorf(api.CodeUnavailable, "down")
	})
	if n != 1 || api.CodeOf(err) != api.CodeUnavailable {
		t.Errorf("after the context ended: %d attempts, %v", n, err)
	}
}

// TestRetryUnanswered: under the policy for requests whose "unavailable"
// answer is final, only a request that got no answer is sent again.
func TestRetryUnanswered(t *testing.T) {
	for _, tc := range []struct {
		answer   error
		attempts int
	}{
		{api.Errorf(api.CodeUnavailable, "this server offers no relay"), 1},
		{fmt.Errorf("request: %w", context.DeadlineExceeded), 2},
		{nats.ErrNoResponders, 2},
	} {
		n := 0
		_ = retry(context.Background(), unanswered, func(context.Context) error {
			if n++; n == 1 {
				return tc.answer
			}
			return nil
		})
		if n != tc.attempts {
			t.Errorf("after %v: %d attempts, want %d", tc.answer, n, tc.attempts)
		}
	}
}
