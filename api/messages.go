package api

import "time"

// Bodies of the request-reply API. []byte fields travel base64-encoded.

// AuthInfoReply carries the auth service's public keys: the HPKE key clients
// seal their password to, and the Ed25519 key that verifies tokens.
type AuthInfoReply struct {
	SealKey  []byte `json:"seal_key"`
	TokenKey []byte `json:"token_key"`
}

// LoginRequest logs a user in. The password is sealed to the auth service's
// SealKey and the reply is sealed to ReplyKey, so neither the password nor
// the token crosses the bus in clear.
type LoginRequest struct {
	User           string `json:"user"`
	SealedPassword []byte `json:"sealed_password"`
	ReplyKey       []byte `json:"reply_key"`
}

// LoginReply carries the token sealed to the request's ReplyKey.
type LoginReply struct {
	SealedToken []byte    `json:"sealed_token"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// CreateRequest opens a session: the caller is the initiator, and listens
// at PeerAddrs (none: it is reachable only through a relay).
type CreateRequest struct {
	Responder string   `json:"responder"`
	Manifest  Manifest `json:"manifest"`
	PeerAddrs []string `json:"peer_addrs,omitempty"`
	PeerHost  string   `json:"peer_host,omitempty"`
}

// JoinRequest joins a waiting session as its responder. With PeerAddrs the
// responder listens there and the initiator dials it (the session's
// Listener becomes the responder); without, the responder dials the
// initiator.
type JoinRequest struct {
	SessionID string   `json:"session_id"`
	PeerAddrs []string `json:"peer_addrs,omitempty"`
	PeerHost  string   `json:"peer_host,omitempty"`
}

// ResumeRequest re-attaches a member to a waiting or joined session, after
// its peer link dropped or its process restarted. The listening member
// gives the addresses it listens at now (none: only through a relay), which
// replace the recorded ones; the dialing member gives none.
type ResumeRequest struct {
	SessionID string   `json:"session_id"`
	PeerAddrs []string `json:"peer_addrs,omitempty"`
	PeerHost  string   `json:"peer_host,omitempty"`
}

// RelayRequest asks for a ticket to the relay for one connection attempt
// of the caller's side of a joined session.
type RelayRequest struct {
	SessionID string `json:"session_id"`
}

// RelayReply names the relays to try, best first, and the caller's
// admission ticket: valid for one connection, to any of them, until the
// session expires.
type RelayReply struct {
	Addrs  []string `json:"addrs"`
	Ticket string   `json:"ticket"`
}

// SessionRequest names a session (get).
type SessionRequest struct {
	SessionID string `json:"session_id"`
}

// ListRequest lists the caller's sessions; State filters when set.
type ListRequest struct {
	State State `json:"state,omitempty"`
}

// ListReply is the caller's sessions, newest first. A reply must fit in
// one broker message, so when the sessions (whose manifests may be large)
// do not, the oldest are left out and Omitted counts them.
type ListReply struct {
	Sessions []Session `json:"sessions"`
	Omitted  int       `json:"omitted,omitempty"`
}

// ReportRequest carries a member's outcome.
type ReportRequest struct {
	SessionID string `json:"session_id"`
	Report    Report `json:"report"`
}

// CancelRequest cancels a session that has not ended.
type CancelRequest struct {
	SessionID string `json:"session_id"`
	Reason    string `json:"reason,omitempty"`
}

// DeclineRequest is the responder's refusal of a waiting session, with a
// reason the initiator reads. Without End the session keeps waiting (the
// responder may try again, with other options) and a declined event tells
// the initiator why it cannot receive now; with End the session is
// cancelled.
type DeclineRequest struct {
	SessionID string `json:"session_id"`
	Reason    string `json:"reason,omitempty"`
	End       bool   `json:"end,omitempty"`
}

// WatchRequest starts a relay of events to Deliver, a subject in the
// caller's reply inbox. With SessionID the relay replays that session's
// events from the start and stops after its terminal event; without it, it
// relays every event of the caller's sessions from now on.
//
// AfterSeq resumes a watch after the last event seen (its Seq), so a
// watcher whose relay died misses nothing and sees nothing twice. Resume
// says AfterSeq holds even when it is 0: a watch of every session that
// began on an empty stream resumes from its start, not from now.
type WatchRequest struct {
	SessionID string `json:"session_id,omitempty"`
	Deliver   string `json:"deliver"`
	AfterSeq  uint64 `json:"after_seq,omitempty"`
	Resume    bool   `json:"resume,omitempty"`
}

// WatchReply acknowledges a watch. AfterSeq is the stream sequence a
// watch of every session starts after: a watcher that saw no event yet
// resumes from there (WatchRequest.AfterSeq), so even it misses nothing.
type WatchReply struct {
	WatchID  string `json:"watch_id"`
	AfterSeq uint64 `json:"after_seq,omitempty"`
}

// KeyRequest asks for a session's key, sealed to ReplyKey.
type KeyRequest struct {
	SessionID string `json:"session_id"`
	ReplyKey  []byte `json:"reply_key"`
}

// KeyReply carries the 32-byte session key sealed to the request's ReplyKey,
// bound to the session id.
type KeyReply struct {
	SealedKey []byte `json:"sealed_key"`
}
