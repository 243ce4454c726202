package api

import (
	"fmt"
	"time"
)

// State is a session's place in its lifecycle:
//
//	waiting → joined → completed | failed | cancelled | expired
//
// waiting and joined may also end in cancelled or expired.
type State string

const (
	StateWaiting   State = "waiting"
	StateJoined    State = "joined"
	StateCompleted State = "completed"
	StateFailed    State = "failed"
	StateCancelled State = "cancelled"
	StateExpired   State = "expired"
)

// Terminal reports whether no transition leaves s.
func (s State) Terminal() bool {
	switch s {
	case StateCompleted, StateFailed, StateCancelled, StateExpired:
		return true
	}
	return false
}

// Role names a member's side of a session.
type Role string

const (
	RoleInitiator Role = "initiator"
	RoleResponder Role = "responder"
)

// File is one entry of a manifest.
type File struct {
	// Name is the entry's path relative to the transfer's root, elements
	// separated by '/' (link.CheckManifest holds the rules every receiver
	// and the session service apply).
	Name string `json:"name"`
	// Size is the length in bytes, or SizeUnknown for a stream (a pipe)
	// whose length is known only at its end.
	Size int64 `json:"size"`
	// Mode holds the permission bits (0o777) the receiver gives the entry;
	// 0 leaves the receiver's default.
	Mode uint32 `json:"mode,omitempty"`
	// MTime is the modification time in Unix nanoseconds; 0 leaves it.
	MTime int64 `json:"mtime,omitempty"`
	// Dir marks a directory entry (Size 0), so empty folders arrive too.
	Dir bool `json:"dir,omitempty"`
}

// SizeUnknown is the Size of a streamed entry. A manifest holds at most
// one, and then nothing else.
const SizeUnknown = -1

// Manifest describes what the initiator will send. The session service
// records it at creation; the receiver checks the manifest that arrives over
// the peer link against this one, so the sender cannot switch files after
// the responder agreed to them.
type Manifest struct {
	Files []File `json:"files"`
	// Text marks a message rather than a file: one entry whose bytes the
	// receiver shows instead of saving.
	Text bool `json:"text,omitempty"`
}

// TotalSize is the sum of the declared sizes; a stream counts as 0.
func (m Manifest) TotalSize() int64 {
	var n int64
	for _, f := range m.Files {
		n += max(f.Size, 0)
	}
	return n
}

// Streamed reports whether the manifest is one entry of unknown size.
func (m Manifest) Streamed() bool {
	return len(m.Files) == 1 && m.Files[0].Size == SizeUnknown
}

// Summary describes the manifest in a few words for messages: the one
// file's name, or the number of entries.
func (m Manifest) Summary() string {
	switch {
	case m.Text:
		return "a text message"
	case len(m.Files) == 1:
		return m.Files[0].Name
	}
	return fmt.Sprintf("%d entries", len(m.Files))
}

// Report is what one member says about the transfer once its side is done.
type Report struct {
	OK     bool      `json:"ok"`
	Bytes  int64     `json:"bytes"`
	CRC32C uint32    `json:"crc32c"`
	SHA256 string    `json:"sha256,omitempty"` // hex
	Error  string    `json:"error,omitempty"`  // why the member's side failed
	At     time.Time `json:"at"`
	// Path is how the last peer link went (PathDirect or PathRelay) and
	// Via the address it went to: the listener's or the relay's.
	Path Path   `json:"path,omitempty"`
	Via  string `json:"via,omitempty"`
}

// Path is the way the peer link reached the other member.
type Path string

const (
	PathDirect Path = "direct" // a TCP connection between the peers
	PathRelay  Path = "relay"  // through the relay, which sees only ciphertext
)

// Valid reports whether p is a known path (or none).
func (p Path) Valid() bool { return p == "" || p == PathDirect || p == PathRelay }

// MaxPeerAddrs bounds the candidate addresses a listener may announce.
const MaxPeerAddrs = 16

// Session is the record the session service keeps and returns to members.
// It never holds a secret: the key lives with the key service.
type Session struct {
	ID        string   `json:"id"`
	State     State    `json:"state"`
	Initiator string   `json:"initiator"`
	Responder string   `json:"responder"`
	Manifest  Manifest `json:"manifest"`
	// Listener is the member whose peer link listens for the other to dial:
	// the initiator, unless the responder asked to listen when it joined.
	Listener Role `json:"listener,omitempty"`
	// PeerAddrs are the listener's candidate addresses (host:port), best
	// first; empty when the listener is reachable only through a relay.
	PeerAddrs []string `json:"peer_addrs,omitempty"`
	// PeerHost identifies the listener's host and network namespace
	// (opaque), so a dialer on the same one may also try loopback.
	PeerHost  string          `json:"peer_host,omitempty"`
	Reports   map[Role]Report `json:"reports,omitempty"`
	Reason    string          `json:"reason,omitempty"` // why it failed, was cancelled or expired
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
	ExpiresAt time.Time       `json:"expires_at"`

	// LastEvent and LastRole record the event of the record's latest write
	// and the role of the member who caused it (empty for expiry). The
	// session service republishes that event when a request builds on the
	// write, in case the request that wrote it has not published it yet.
	LastEvent EventType `json:"last_event,omitempty"`
	LastRole  Role      `json:"last_role,omitempty"`

	// Outbox holds the events of the record's latest write, stored in the
	// same write: whoever reads the record next publishes them if the
	// writer died before it could, and the event ids make a second copy
	// harmless. Request is the id of the request that made that write
	// (RequestIDHeader). Both stay on the server: replies leave them out.
	Outbox  []Event `json:"outbox,omitempty"`
	Request string  `json:"request,omitempty"`
}

// Public is s as its members see it: without the server's bookkeeping.
func (s *Session) Public() *Session {
	c := *s
	c.Outbox, c.Request, c.LastEvent, c.LastRole = nil, "", "", ""
	return &c
}

// RoleOf returns the role user plays in s, or false when user is not a member.
func (s *Session) RoleOf(user string) (Role, bool) {
	switch user {
	case s.Initiator:
		return RoleInitiator, true
	case s.Responder:
		return RoleResponder, true
	}
	return "", false
}

// EventType names a state change.
type EventType string

const (
	EventCreated   EventType = "created"
	EventJoined    EventType = "joined"
	EventResumed   EventType = "resumed" // a member re-attached after its peer link dropped
	EventReported  EventType = "reported"
	EventCompleted EventType = "completed"
	EventFailed    EventType = "failed"
	EventCancelled EventType = "cancelled"
	EventExpired   EventType = "expired"

	// EventDeclined says the responder cannot receive now, and why
	// (Reason); the session still waits for it to try again.
	EventDeclined EventType = "declined"
)

// Event is published on every session change. Events carry no secrets, so
// any member may watch them.
type Event struct {
	ID        string    `json:"id"` // unique; also the JetStream de-duplication id
	Type      EventType `json:"type"`
	Session   string    `json:"session"`
	State     State     `json:"state"`
	Actor     string    `json:"actor,omitempty"` // the user who caused it; empty for expiry
	Initiator string    `json:"initiator"`
	Responder string    `json:"responder"`
	Reason    string    `json:"reason,omitempty"` // with a terminal event, and with EventDeclined
	Report    *Report   `json:"report,omitempty"` // with EventReported
	Role      Role      `json:"role,omitempty"`   // with EventReported: whose report
	// Path and Via say how the bytes went (with EventCompleted), from the
	// dialing member's report.
	Path Path      `json:"path,omitempty"`
	Via  string    `json:"via,omitempty"`
	At   time.Time `json:"at"`
	Seq  uint64    `json:"seq,omitempty"` // stream sequence, set by the watch relay
}
