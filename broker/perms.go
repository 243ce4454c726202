package broker

import (
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/sftproject/sft/services/api"
)

// ServiceInboxPrefix is the reply-inbox prefix of the services'
// connections. Clients may subscribe only under their own user's prefix
// (api.InboxPrefix), never here, so service replies (JetStream API answers,
// heartbeat answers, service-to-service replies) stay among services.
const ServiceInboxPrefix = "_SFT_SVC_INBOX"

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

// ServicePermissions returns the permissions of the service user: serve
// and send API requests, publish events and timers, use JetStream and its
// KV buckets, deliver watch relays into a client's inbox, answer the
// server's auth callout, and reply to what they receive. Each call returns
// a fresh value.
func ServicePermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			api.Prefix + ".>",
			"$JS.API.>",
			"$JS.ACK.>",
			"$KV.>",
			"_INBOX.*.*", // watch relay deliveries: api.InboxPrefix(user) + "." + id
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			api.Prefix + ".>",
			ServiceInboxPrefix + ".>",
			server.AuthCalloutSubject,
			"$SRV.>", // micro service discovery: PING, INFO, STATS
		}},
		Response: &server.ResponsePermission{MaxMsgs: responseMaxMsgs, Expires: responseExpires},
	}
}

// loginGrantTTL bounds a password connection: long enough to log in.
const loginGrantTTL = time.Minute
