package broker

import (
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/sftproject/sft/api"
)

// The services, each with its own NATS identity (a user nkey) and
// ServicePermissions of its own, so a compromised service cannot act as
// another one on the bus.
const (
	ServiceAuth    = "auth"
	ServiceSession = "session"
	ServiceKey     = "key"
)

// Services lists the service names.
func Services() []string { return []string{ServiceAuth, ServiceSession, ServiceKey} }

// ServiceInboxPrefix is the root of the services' reply inboxes. Each
// service lives under its own ServiceInbox; clients may subscribe only
// under their own user's prefix (api.InboxPrefix), never here.
const ServiceInboxPrefix = "_SFT_SVC_INBOX"

// ServiceInbox is the reply-inbox prefix of service's connections: its
// JetStream API answers, KV watch deliveries and service-to-service
// replies, which no other identity may hear.
func ServiceInbox(service string) string { return ServiceInboxPrefix + "." + service }

// JetStream streams and KV buckets the services use; the permissions name
// each one, so a service reaches only its own data.
const (
	SessionsBucket      = "SFT_SESSIONS"       // session records (session service)
	UsersBucket         = "SFT_USERS"          // accounts (auth service; `sftd user` acts as auth)
	KeysBucket          = "SFT_KEYS"           // session keys, encrypted (key service)
	RevokedTokensBucket = "SFT_REVOKED_TOKENS" // token ids revoked by logout (auth writes, every service reads)
	TimerStream         = "SFT_TIMERS"         // session expiry work queue (session service)
	KeyReaperConsumer   = "key-reaper"         // the key service's consumer of terminal events
)

// Response permission, identical to what "allow_responses: true" means in
// a nats-server configuration file: one answer per request received, within
// the default window.
const (
	responseMaxMsgs = server.DEFAULT_ALLOW_RESPONSE_MAX_MSGS
	responseExpires = server.DEFAULT_ALLOW_RESPONSE_EXPIRATION
)

// apiRequests are the subjects a logged-in client may send requests to.
var apiRequests = []string{
	api.Prefix + ".auth.>",
	api.Prefix + ".session.>",
	api.Prefix + ".key.>",
}

// ClientPermissions returns what a connection authenticated with user's
// token may do: publish API requests, subscribe only under user's own
// inbox prefix, and answer a request delivered there (the watch
// heartbeat). Another user's inbox, the events, request subjects, $SYS and
// $JS stay out of reach.
func ClientPermissions(user string) jwt.Permissions {
	return jwt.Permissions{
		Pub:  jwt.Permission{Allow: jwt.StringList(append([]string(nil), apiRequests...))},
		Sub:  jwt.Permission{Allow: jwt.StringList{api.InboxPrefix(user) + ".>"}},
		Resp: &jwt.ResponsePermission{MaxMsgs: responseMaxMsgs, Expires: responseExpires},
	}
}

// LoginPermissions returns what a connection authenticated with user's
// password may do: ask for the auth service's keys and log in, nothing
// else, so a password is good for obtaining a token only.
func LoginPermissions(user string) jwt.Permissions {
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: jwt.StringList{api.SubjectAuthInfo, api.SubjectAuthLogin}},
		Sub: jwt.Permission{Allow: jwt.StringList{api.InboxPrefix(user) + ".>"}},
	}
}

// ServicePermissions returns what service's identity may do. Every service
// serves its own API subjects, hears its own inbox and micro discovery
// ($SRV), answers what it receives through response permissions rather
// than a publish grant, and reads the revoked-token bucket. Beyond that:
//
//   - auth answers the auth callout, reads the user accounts and writes
//     them (`sftd user` connects as auth), and writes revocations;
//   - session publishes events and expiry timers, keeps session records,
//     reads accounts, consumes the event stream for watches and delivers
//     the watch relay into clients' inboxes (the only identity that may);
//     it also asks every service for its statistics ($SRV.SFT.STATS) for an
//     admin's status request, the answers coming to its own inbox;
//   - key keeps session keys, consumes terminal events to delete them,
//     and asks the session service for a session on a caller's behalf.
//
// Every service may also look up and create the three state-store buckets
// (opening the JetStream store binds all three, whichever service starts
// first), but reads and writes only its own. Each call returns a fresh
// value; an unknown service is an error.
func ServicePermissions(service string) (*server.Permissions, error) {
	var pub, sub []string
	switch service {
	case ServiceAuth:
		pub = slices.Concat(
			bucketRead(UsersBucket), bucketWrite(UsersBucket),
			streamAdmin(kvStream(RevokedTokensBucket)), bucketRead(RevokedTokensBucket), bucketWrite(RevokedTokensBucket),
		)
		sub = []string{api.Prefix + ".auth.>", server.AuthCalloutSubject}
	case ServiceSession:
		pub = slices.Concat(
			[]string{api.EventsPrefix + ".>", timerSubjects, "_INBOX.*.*"}, // _INBOX.<user>.<id>: watch relay deliveries and heartbeats
			[]string{discoveryStats},
			bucketRead(SessionsBucket), bucketWrite(SessionsBucket), bucketWatch(SessionsBucket),
			bucketRead(UsersBucket),
			streamAdmin(api.EventStream), anyConsumer(api.EventStream),
			[]string{jsAPI + "STREAM.MSG.GET." + api.EventStream}, // is an event in the stream (an outbox flushed late)
			streamAdmin(TimerStream), anyConsumer(TimerStream),
			[]string{jsAPI + "STREAM.PURGE." + TimerStream}, // drop the timer of a session that ended
		)
		sub = []string{api.Prefix + ".session.>"}
	case ServiceKey:
		pub = slices.Concat(
			[]string{api.SubjectSessionGet},
			bucketRead(KeysBucket), bucketWrite(KeysBucket),
			streamAdmin(api.EventStream), consumer(api.EventStream, KeyReaperConsumer),
		)
		sub = []string{api.Prefix + ".key.>"}
	default:
		return nil, fmt.Errorf("unknown service %q (want one of %v)", service, Services())
	}
	pub = slices.Concat(
		pub,
		[]string{jsAPI + "INFO"}, // account limits: creating a KV bucket asks first
		storeBind(SessionsBucket), storeBind(UsersBucket), storeBind(KeysBucket),
		bucketBind(RevokedTokensBucket), bucketWatch(RevokedTokensBucket),
	)
	sub = append(sub, ServiceInbox(service)+".>", "$SRV.>") // $SRV: micro discovery (PING, INFO, STATS)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: dedupe(pub)},
		Subscribe: &server.SubjectPermission{Allow: sub},
		Response:  &server.ResponsePermission{MaxMsgs: responseMaxMsgs, Expires: responseExpires},
	}, nil
}

// allServicesPermissions is the union of every service's permissions, for
// the optional password user of EmbeddedOptions, whose inboxes live
// directly under ServiceInboxPrefix.
func allServicesPermissions() *server.Permissions {
	var pub, sub []string
	for _, s := range Services() {
		p, _ := ServicePermissions(s) // known names
		pub = append(pub, p.Publish.Allow...)
		for _, x := range p.Subscribe.Allow {
			if x != ServiceInbox(s)+".>" {
				sub = append(sub, x)
			}
		}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: dedupe(pub)},
		Subscribe: &server.SubjectPermission{Allow: dedupe(append(sub, ServiceInboxPrefix+".>"))},
		Response:  &server.ResponsePermission{MaxMsgs: responseMaxMsgs, Expires: responseExpires},
	}
}

// discoveryStats asks every service replica for its statistics
// (services/rpc.StatsSubject).
const discoveryStats = "$SRV.SFT.STATS"

// timerSubjects are the session service's expiry timers.
const timerSubjects = api.Prefix + ".timers.>"

const jsAPI = "$JS.API."

func kvStream(bucket string) string { return "KV_" + bucket }

// bucketBind looks a KV bucket up and creates it when it is missing: its
// configuration, none of its contents.
func bucketBind(bucket string) []string {
	s := kvStream(bucket)
	return []string{jsAPI + "STREAM.INFO." + s, jsAPI + "STREAM.CREATE." + s}
}

// storeBind is bucketBind for a state-store bucket, which opening the store
// also moves to the configured replica count (nats.replicas).
func storeBind(bucket string) []string {
	return append(bucketBind(bucket), jsAPI+"STREAM.UPDATE."+kvStream(bucket))
}

// bucketRead reads single keys (direct get, or a message get where direct
// gets are off).
func bucketRead(bucket string) []string {
	s := kvStream(bucket)
	return []string{jsAPI + "DIRECT.GET." + s, jsAPI + "DIRECT.GET." + s + ".>", jsAPI + "STREAM.MSG.GET." + s}
}

// bucketWrite puts, creates, updates and purges keys.
func bucketWrite(bucket string) []string { return []string{"$KV." + bucket + ".>"} }

// bucketWatch lists and watches keys: an ordered push consumer, which
// answers the server's flow control.
func bucketWatch(bucket string) []string {
	s := kvStream(bucket)
	return []string{
		jsAPI + "CONSUMER.CREATE." + s, jsAPI + "CONSUMER.CREATE." + s + ".>",
		jsAPI + "CONSUMER.DELETE." + s + ".>",
		"$JS.FC." + s + ".>",
	}
}

// streamAdmin creates, updates and inspects a stream the service declares.
func streamAdmin(stream string) []string {
	return []string{jsAPI + "STREAM.CREATE." + stream, jsAPI + "STREAM.UPDATE." + stream, jsAPI + "STREAM.INFO." + stream}
}

// consumer uses one named pull consumer of stream.
func consumer(stream, name string) []string {
	return []string{
		jsAPI + "CONSUMER.CREATE." + stream + "." + name, jsAPI + "CONSUMER.CREATE." + stream + "." + name + ".>",
		jsAPI + "CONSUMER.INFO." + stream + "." + name,
		jsAPI + "CONSUMER.MSG.NEXT." + stream + "." + name,
		"$JS.ACK." + stream + "." + name + ".>",
	}
}

// anyConsumer uses any consumer of stream: durable or ordered (whose
// names are generated).
func anyConsumer(stream string) []string {
	return []string{
		jsAPI + "CONSUMER.CREATE." + stream + ".>",
		jsAPI + "CONSUMER.INFO." + stream + ".>",
		jsAPI + "CONSUMER.DELETE." + stream + ".>",
		jsAPI + "CONSUMER.MSG.NEXT." + stream + ".>",
		"$JS.ACK." + stream + ".>",
	}
}

// dedupe drops repeated subjects, keeping the first of each.
func dedupe(in []string) []string {
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// loginGrantTTL bounds a password connection: long enough to log in.
const loginGrantTTL = time.Minute
