// Package api is the wire contract between SFT clients and services: the
// versioned NATS subjects, the JSON request and reply bodies, the session
// state machine's vocabulary and the stable error codes.
//
// Every service and every client imports this package and nothing else to
// agree on what travels over the bus, so a change here is a protocol change.
package api
