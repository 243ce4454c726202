package api

import "time"

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
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// Manifest describes what the initiator will send. The session service
// records it at creation; the receiver checks the manifest that arrives over
// the peer link against this one, so the sender cannot switch files after
// the responder agreed to them.
type Manifest struct {
	Files []File `json:"files"`
}

// TotalSize is the sum of the declared file sizes.
func (m Manifest) TotalSize() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Report is what one member says about the transfer once its side is done.
type Report struct {
	OK     bool      `json:"ok"`
	Bytes  int64     `json:"bytes"`
	CRC32C uint32    `json:"crc32c"`
	SHA256 string    `json:"sha256,omitempty"` // hex
	Error  string    `json:"error,omitempty"`  // why the member's side failed
	At     time.Time `json:"at"`
}

// Session is the record the session service keeps and returns to members.
// It never holds a secret: the key lives with the key service.
type Session struct {
	ID        string   `json:"id"`
	State     State    `json:"state"`
	Initiator string   `json:"initiator"`
	Responder string   `json:"responder"`
	Manifest  Manifest `json:"manifest"`
	// PeerAddr is where the initiator's peer link listens (host:port).
	PeerAddr  string          `json:"peer_addr"`
	Reports   map[Role]Report `json:"reports,omitempty"`
	Reason    string          `json:"reason,omitempty"` // why it failed, was cancelled or expired
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
	ExpiresAt time.Time       `json:"expires_at"`
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
	EventReported  EventType = "reported"
	EventCompleted EventType = "completed"
	EventFailed    EventType = "failed"
	EventCancelled EventType = "cancelled"
	EventExpired   EventType = "expired"
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
	Reason    string    `json:"reason,omitempty"`
	Report    *Report   `json:"report,omitempty"` // with EventReported
	Role      Role      `json:"role,omitempty"`   // with EventReported: whose report
	At        time.Time `json:"at"`
	Seq       uint64    `json:"seq,omitempty"` // stream sequence, set by the watch relay
}
