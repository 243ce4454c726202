package api

import "time"

// Version is the API version embedded in every subject. A breaking change to
// a body or to the meaning of a subject bumps it, so old and new services can
// share one broker during a rollout.
const Version = "v1"

// Prefix is the root of every SFT subject.
const Prefix = "sft." + Version

// Request subjects. Services subscribe to these in queue groups, so any
// number of replicas may run; clients may only publish to them.
const (
	SubjectAuthInfo   = Prefix + ".auth.info"
	SubjectAuthLogin  = Prefix + ".auth.login"
	SubjectAuthLogout = Prefix + ".auth.logout"

	SubjectSessionCreate = Prefix + ".session.create"
	SubjectSessionJoin   = Prefix + ".session.join"
	SubjectSessionResume = Prefix + ".session.resume"
	SubjectSessionGet    = Prefix + ".session.get"
	SubjectSessionList   = Prefix + ".session.list"
	SubjectSessionReport = Prefix + ".session.report"
	SubjectSessionCancel = Prefix + ".session.cancel"
	SubjectSessionWatch  = Prefix + ".session.watch"
	SubjectSessionRelay  = Prefix + ".session.relay"

	// The responder refuses a waiting session (DeclineRequest).
	SubjectSessionDecline = Prefix + ".session.decline"

	// Every service replica on the bus and the open sessions (admin
	// only; StatusRequest, StatusReply).
	SubjectSessionStatus = Prefix + ".session.status"

	SubjectKeyGet = Prefix + ".key.get"
)

// InboxPrefix returns the reply-inbox prefix of user's connections
// ("_INBOX.alice"). The broker lets a connection subscribe only under its
// own user's prefix, so nothing addressed there reaches another user. User
// names hold no '.', so one user's prefix never covers another's.
func InboxPrefix(user string) string { return "_INBOX." + user }

// EventsPrefix is the root of the event subjects
// (sft.v1.events.<session-id>.<type>). Only services may publish or
// subscribe there; clients receive events through the watch relay.
const EventsPrefix = Prefix + ".events"

// EventStream is the JetStream stream that keeps events, so a watcher that
// starts late can replay what it missed.
const EventStream = "SFT_EVENTS"

// EventSubject is the subject of one event.
func EventSubject(sessionID string, t EventType) string {
	return EventsPrefix + "." + sessionID + "." + string(t)
}

// SessionEvents is the wildcard subject of every event of one session.
func SessionEvents(sessionID string) string {
	return EventsPrefix + "." + sessionID + ".>"
}

// AllEvents is the wildcard subject of every event.
const AllEvents = EventsPrefix + ".>"

// QueueGroup is the queue group every service replica joins.
const QueueGroup = "sft"

// AuthHeader carries the caller's bearer token on every authenticated request.
const AuthHeader = "Authorization"

// RequestIDHeader names one logical request across the client's retries
// (the format of a session id: NewRequestID). The session service records
// the id of each change it writes, so a retried request whose change was
// already applied is answered as done rather than applied twice or
// refused; a create's id becomes the session's id.
const RequestIDHeader = "Sft-Request-Id"

// Watch relay headers: a heartbeat is a request the client must answer, an
// end marker tells the client the relay stopped and why, and a resume
// marker beside it says the watch may go on through another replica.
const (
	HeartbeatHeader   = "Sft-Heartbeat"
	WatchEndHeader    = "Sft-Watch-End"
	WatchResumeHeader = "Sft-Watch-Resume"
)

// HeartbeatEvery is how often a watch relay proves it is alive. A watcher
// that hears nothing for a few periods assumes its relay died with its
// replica and asks for a new one.
const HeartbeatEvery = 2 * time.Second
