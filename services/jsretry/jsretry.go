// Package jsretry repeats JetStream requests that go unanswered: those that
// declare a stream, a bucket or a consumer, and publishes with a
// de-duplication id.
//
// Two processes declaring the same stream at once on a NATS cluster may see
// only one of them answered: the other waits out the request timeout,
// although the stream now exists. Asking again finds it. A single server
// answers both, so there this changes nothing.
package jsretry

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// attempts bounds the tries: a stream that cannot be declared three times
// in a row has a real problem, which the last error names.
const attempts = 3

// notFoundPause is the wait before asking again about a stream not found.
const notFoundPause = 250 * time.Millisecond

// Do runs fn until it returns something other than a timeout or "stream
// not found", ctx ends, or it was tried three times, and returns its last
// result.
func Do[T any](ctx context.Context, fn func() (T, error)) (T, error) {
	for try := 1; ; try++ {
		v, err := fn()
		switch {
		case err == nil || try == attempts || ctx.Err() != nil:
			return v, err
		case errors.Is(err, jetstream.ErrStreamNotFound):
			select {
			case <-ctx.Done():
				return v, err
			case <-time.After(notFoundPause):
			}
		case !errors.Is(err, context.DeadlineExceeded):
			return v, err
		}
	}
}

// publishAttempt bounds one publish: one sent to a stream leader that died
// meanwhile is never answered, and the next may find the new one.
const publishAttempt = 2 * time.Second

// Publish stores data on subject with msgID as the stream's de-duplication
// id, asking again until it is stored or ctx ends: a cluster electing a
// stream leader answers nothing for a moment, and an id still being
// stored by an earlier attempt is refused until it is. The id makes every
// attempt after the first harmless. opts are added to every attempt (a
// message schedule, for example).
func Publish(ctx context.Context, js jetstream.JetStream, subject string, data []byte, msgID string, opts ...jetstream.PublishOpt) error {
	opts = append([]jetstream.PublishOpt{jetstream.WithMsgID(msgID)}, opts...)
	pause := 50 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, publishAttempt)
		_, err := js.Publish(actx, subject, data, opts...)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}
