package broker

import (
	"github.com/nats-io/nats-server/v2/server"

	"github.com/sftproject/sft/services/api"
)

// ClientUser is the NATS user that connections presenting no credentials are
// mapped to (the server's no_auth_user).
const ClientUser = "sft-client"

// ServiceInboxPrefix is the reply-inbox prefix of every authenticated
// connection. Clients may subscribe to "_INBOX.>", and NATS cannot limit
// that to a client's own inbox, so anything addressed to "_INBOX." is
// readable by every client; services keep their replies (JetStream API
// answers, heartbeat answers, service-to-service replies) off it.
const ServiceInboxPrefix = "_SFT_SVC_INBOX"

// Response permission of the client, identical to what
// "allow_responses: true" means in a nats-server configuration file.
const (
	clientResponseMaxMsgs = server.DEFAULT_ALLOW_RESPONSE_MAX_MSGS
	clientResponseExpires = server.DEFAULT_ALLOW_RESPONSE_EXPIRATION
)

// ClientPermissions returns the permissions of ClientUser: publish only
// requests to the auth, session and key subjects, subscribe only to reply
// inboxes, and answer a request delivered to it (the watch heartbeat).
// Each call returns a fresh value.
func ClientPermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			api.Prefix + ".auth.>",
			api.Prefix + ".session.>",
			api.Prefix + ".key.>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		Response: &server.ResponsePermission{
			MaxMsgs: clientResponseMaxMsgs,
			Expires: clientResponseExpires,
		},
	}
}

// ServicePermissions returns the permissions of the service user: every
// subject, since services serve requests, use JetStream ($JS.API) and own
// the event stream. Each call returns a fresh value.
func ServicePermissions() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{">"}},
		Subscribe: &server.SubjectPermission{Allow: []string{">"}},
	}
}
