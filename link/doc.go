// Package link is SFT's direct peer-to-peer file link: one TCP connection
// between the two clients of a session, encrypted and authenticated with
// Noise NNpsk0 (X25519, AES-256-GCM, SHA-256) keyed by the 32-byte session
// key.
//
// Wire format. Every Noise message, handshake or transport, travels as a
// 2-byte big-endian length followed by the message (at most 65535 bytes).
// The handshake prologue is "sft-link/1\x00" + session id, so a peer holding
// another session's key, or speaking another version, fails the handshake.
// The dialer is the Noise initiator. Each transport message decrypts to one
// record: a type byte, then the payload.
//
//	manifest  JSON api.Manifest (sender → receiver, first record)
//	data      raw file bytes
//	end       summary of what was sent: length int64, CRC-32C uint32,
//	          SHA-256 [32]byte, big-endian, 44 bytes
//	ack       receiver → sender once the file is verified, synced and in
//	          place; same 44-byte summary
//	abort     either way: 1-byte cause code, then a short UTF-8 reason
//
// A transfer is: manifest, data…, end, then ack (or abort at any point). v1
// carries exactly one file; the manifest already lists files so that a later
// version can repeat data…end per file.
package link
