package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// levelNATSDebug sits below slog.LevelDebug: nats-server's debug output is
// per connection and per subscription, far noisier than SFT's own debug.
const levelNATSDebug = slog.LevelDebug - 4

// natsLogger routes nats-server's logging into slog. Trace output is never
// enabled: it echoes protocol lines, message payloads included.
type natsLogger struct {
	log *slog.Logger

	mu    sync.Mutex
	fatal error // first Fatalf: the server gave up starting
}

func newNATSLogger(l *slog.Logger) *natsLogger {
	return &natsLogger{log: l.With("component", "nats-server")}
}

func (n *natsLogger) debugEnabled() bool {
	return n.log.Enabled(context.Background(), levelNATSDebug)
}

func (n *natsLogger) emit(level slog.Level, format string, v []any) {
	if !n.log.Enabled(context.Background(), level) {
		return
	}
	n.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

// Noticef carries the startup banner and lifecycle chatter; StartEmbedded
// logs the one line a user needs, so these stay at debug.
func (n *natsLogger) Noticef(format string, v ...any) { n.emit(slog.LevelDebug, format, v) }

func (n *natsLogger) Warnf(format string, v ...any) {
	// The no-auth client user has no password by design (the server fills
	// in the stored one when mapping it), and the service password is always
	// a bcrypt hash, so this warning never points at a real problem here.
	if strings.HasPrefix(format, "Plaintext passwords detected") {
		n.emit(slog.LevelDebug, format, v)
		return
	}
	n.emit(slog.LevelWarn, format, v)
}

// Errorf: nats-server reports a misbehaving or misconfigured peer (failed
// TLS handshake, authorization or permission violation) as an error of that
// connection; such lines carry a "cid:" prefix and are the peer's problem,
// not the broker's, so they are warnings.
func (n *natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	level := slog.LevelError
	if strings.Contains(msg, " - cid:") {
		level = slog.LevelWarn
	}
	n.log.Log(context.Background(), level, msg)
}

// Fatalf is what nats-server calls when it cannot go on (e.g. the port is
// taken); it must not exit the process, so it is recorded for StartEmbedded.
func (n *natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	n.mu.Lock()
	if n.fatal == nil {
		n.fatal = errors.New(msg)
	}
	n.mu.Unlock()
	n.log.Error(msg)
}

func (n *natsLogger) Debugf(format string, v ...any) { n.emit(levelNATSDebug, format, v) }

func (n *natsLogger) Tracef(string, ...any) {}

func (n *natsLogger) fatalErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fatal
}
