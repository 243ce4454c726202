// Package broker holds everything SFT needs to talk to NATS: a development
// PKI, an embedded nats-server with TLS, JetStream and authorization, and the
// Connect function every client and service uses.
//
// The broker knows two kinds of connection. Each service (auth, session,
// key) authenticates with its own user nkey and gets its own
// ServicePermissions. Every other connection is decided by the auth callout
// (ServeCallout): a password buys LoginPermissions, a login token
// ClientPermissions, both bound to the user's own inbox prefix.
//
// Optionally (EmbeddedOptions.VerifyClients) the server also requires
// mutual TLS: a client certificate signed by its CA (EnsureClientCert
// issues them) on every connection, in addition to those credentials.
package broker
