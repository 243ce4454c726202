// Package broker holds everything SFT needs to talk to NATS: a development
// PKI, an embedded nats-server with TLS, JetStream and authorization, and the
// Connect function every client and service uses.
//
// The broker knows two roles. Services authenticate with a user and password
// and may use every subject. Clients present no credentials and are mapped to
// ClientUser, which may only publish requests to the auth, session and key
// subjects and receive replies on their inbox.
package broker
