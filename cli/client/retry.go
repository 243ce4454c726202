package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/rpc"
)

// A request whose answer says "not now" is sent again, with the same
// request id so that a change applied before the answer was lost is not
// applied twice. "Not now" is a replica or a broker node that died under
// the request (no answer), a store failing over or a cluster electing a
// leader (unavailable), or no replica at all for a moment (no responders).
const (
	// attemptTimeout is how long one attempt waits for its answer: well
	// over a request's usual milliseconds, well under rpc.Timeout, so a
	// request lost with a killed replica is sent again soon.
	attemptTimeout = 5 * time.Second
	// retryFor bounds the retries of one request, unless the caller's
	// context ends first.
	retryFor = 30 * time.Second
	// noResponderFor is shorter: no replica at all is more often a service
	// that is not running than one in the middle of a failover.
	noResponderFor = 5 * time.Second
)

// call sends one logical request, retrying as described above.
func (c *Client) call(ctx context.Context, subject string, req, rep any) error {
	return c.callRetrying(ctx, retryable, subject, req, rep)
}

// callAnswered is call for a request whose "unavailable" answer is final
// (the relay ticket: the server offers no relay): only a request that got
// no answer is sent again.
func (c *Client) callAnswered(ctx context.Context, subject string, req, rep any) error {
	return c.callRetrying(ctx, unanswered, subject, req, rep)
}

// callRetrying sends one logical request, under one request id, again
// while again accepts its error.
func (c *Client) callRetrying(ctx context.Context, again func(error) bool, subject string, req, rep any) error {
	id := api.NewID()
	return retry(ctx, again, func(ctx context.Context) error {
		return rpc.CallID(ctx, c.nc, subject, c.token, id, req, rep)
	})
}

// callOnce sends a request once: for callers with their own retry policy.
func (c *Client) callOnce(ctx context.Context, subject string, req, rep any) error {
	return rpc.Call(ctx, c.nc, subject, c.token, req, rep)
}

// retry runs attempt until it succeeds, fails with an error again does not
// accept, or the retry time is up; it returns the last attempt's error.
func retry(ctx context.Context, again func(error) bool, attempt func(context.Context) error) error {
	start := time.Now()
	backoff := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := attempt(actx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		limit := retryFor
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			limit = noResponderFor
		case !again(err):
			return err
		}
		wait := backoff/2 + rand.N(backoff/2+1) // jittered, so retries of many clients spread
		if time.Since(start)+wait > limit {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// retryable tells whether err means the request may not have been served
// and may be sent again.
func retryable(err error) bool {
	return api.CodeOf(err) == api.CodeUnavailable || unanswered(err)
}

// unanswered tells whether err means the request got no answer.
func unanswered(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrNoResponders)
}
