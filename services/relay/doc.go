// Package relay carries a peer link between two clients that cannot reach
// each other (both behind NAT): each dials the relay, which pairs the two
// connections of one session and copies bytes between them. The peers'
// Noise handshake runs end to end through it, so the relay sees only
// ciphertext and cannot read, change or impersonate either side.
//
// Admission. A client presents a ticket (see Ticket): an Ed25519 JWT the
// session service signs for one member of one session, which the relay
// checks with the public key alone. Each ticket is admitted once (its ID is
// remembered until it expires); a connection for a role that already waits
// replaces the waiting one (its client probably restarted); one for a
// session already relayed is refused. A lone connection waits for its peer
// at most Options.PairTimeout and never past its ticket's expiry.
//
// Wire protocol. Client to relay, once:
//
//	"SFTR1\n"   6 bytes, the protocol and its version
//	length      2 bytes, big-endian: the ticket's length, 1 to 2048
//	ticket      the ticket
//
// within Options.AdmissionTimeout of connecting. Relay to client, status
// frames of a 1-byte kind, a 2-byte big-endian length and a UTF-8 message
// (at most 1024 bytes, no control characters):
//
//	1 accepted  admitted, waiting for the peer
//	2 paired    the peer is here; every later byte, either way, is the peer's
//	3 refused   not admitted: the message starts with a stable api code and
//	            ": " ("forbidden: ticket expired"); the relay then closes
//
// A client sends nothing after its preamble until it has read paired.
// Refusal codes: invalid (no or a malformed preamble, data before paired),
// forbidden (a ticket that fails a check, or is used again), conflict (the
// session is already relayed, or a newer connection replaced this one),
// throttled (the relay is at Options.MaxSessions pairs, Options.MaxWaiting
// waiting connections, or remembers too many tickets), unavailable (no
// peer in time, or the relay is shutting down).
//
// Guarantees. Refusing a connection never disturbs a relayed pair: a burst
// of connections, garbage and silent ones included, costs each at most its
// admission deadline, and at most Options.MaxAdmitting of them are held at
// once (the oldest gives way to a new one). A pair relays at most the
// smaller MaxBytes of its two tickets, both directions together, at most
// Options.RatePerSession bytes a second, and is closed after
// Options.IdleTimeout without a byte either way. A peer's orderly close
// (FIN) reaches the other peer as one, and the other direction carries on.
// On Linux the bytes never enter user space (splice), and memory does not
// grow with the bytes relayed.
package relay
