package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/sftproject/sft/api"
)

// ErrDeclined is what ReceiveOptions.Confirm returns, wrapped or not, when
// the user refuses the transfer: Receive then declines the session for
// good, so the sender stops waiting and is told why.
var ErrDeclined = errors.New("declined")

// refusal is a local reason not to receive now (a name taken, too little
// space): Receive tells the sender, in words meant for it, and the session
// keeps waiting for a retry with other options.
type refusal struct {
	err    error  // what this side's user reads
	reason string // what the sender reads: no local paths
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// refuse marks err as a refusal the sender reads as reason.
func refuse(err error, format string, args ...any) error {
	return &refusal{err: err, reason: fmt.Sprintf(format, args...)}
}

// tellSender tells the sender of a waiting sess why this receiver stops: for
// good when the user said no (ErrDeclined), for now when a local check
// refused (a refusal). Any other error, or a session no longer waiting,
// is left alone. It returns err with what became of the session.
func (c *Client) tellSender(ctx context.Context, sess *api.Session, err error, log *slog.Logger) error {
	var r *refusal
	end := errors.Is(err, ErrDeclined)
	if sess.State != api.StateWaiting || (!end && !errors.As(err, &r)) {
		return err
	}
	reason := ""
	if r != nil {
		reason = r.reason
	}
	if _, derr := c.Decline(ctx, sess.ID, reason, end); derr != nil {
		if log != nil {
			log.Warn("could not tell the sender", "session", sess.ID, "err", derr)
		}
		return fmt.Errorf("%w (%s could not be told: %v)", err, sess.Initiator, derr)
	}
	if end {
		return fmt.Errorf("%w: session %s cancelled, %s was told", err, sess.ID, sess.Initiator)
	}
	return fmt.Errorf("%w; %s was told, and session %s waits for a retry (`sft-cli recv --decline %s` refuses it)",
		err, sess.Initiator, sess.ID, sess.ID)
}

// noteDeclined tells the user of a waiting sender that the receiver tried
// and cannot receive now; the session still waits.
func (s *side) noteDeclined(ev api.Event) {
	if ev.Type != api.EventDeclined {
		return
	}
	msg := fmt.Sprintf("%s cannot receive now", ev.Actor)
	if ev.Reason != "" {
		msg += ": " + ev.Reason
	}
	s.say("%s; still waiting — Ctrl-C to cancel", msg)
}

// DeclineSession declines for good the named session, or the one waiting
// for the user, without receiving: it is cancelled, and its sender told
// why (reason may be empty).
func (c *Client) DeclineSession(ctx context.Context, id, reason string) (*api.Session, error) {
	sess, err := c.pick(ctx, id)
	if err != nil {
		return nil, err
	}
	return c.Decline(ctx, sess.ID, reason, true)
}
