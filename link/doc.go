// Package link is SFT's peer-to-peer file link: one byte stream between
// the two clients of a session, straight over TCP or through a relay,
// encrypted and authenticated with Noise NNpsk0 (X25519, AES-256-GCM,
// SHA-256) keyed by the 32-byte session key.
//
// Reaching the peer. The dialing side (Connect, or Dial for one address)
// tries every candidate way to the peer, direct addresses staggered and
// relays after a delay, and may complete the handshake on more than one;
// the accepting side (Accept) takes connections from its listener and the
// relay and may likewise hold several. The dialer alone chooses: the first
// record it sends on the connection it keeps is select, and the accepting
// side keeps the connection whose select arrives and closes the others, so
// both ends always use the same one. A relay only pairs byte streams and
// sees nothing but ciphertext.
//
// Wire format. Every Noise message, handshake or transport, travels as a
// 2-byte big-endian length followed by the message (at most 65535 bytes).
// The handshake prologue is "sft-link/3\x00" + session id, so a peer holding
// another session's key, or speaking another version, fails the handshake.
// The dialer is the Noise initiator. Each transport message decrypts to one
// record: a type byte, then the payload.
//
//	select    dialer → accepting side, first record, empty: this
//	          connection is the link (any other is closed)
//	manifest  JSON api.Manifest (sender → receiver, first record after select)
//	resume    receiver → sender: (entry uint32, offset int64) pairs it holds
//	start     receiver → sender: send the data now
//	file      sender → receiver: entry uint32, offset int64 its data starts at
//	data      raw file bytes
//	end       summary of what was sent: length int64, CRC-32C uint32,
//	          SHA-256 [32]byte, big-endian, 44 bytes
//	ack       receiver → sender once every file is verified, synced and in
//	          place; same 44-byte summary
//	abort     either way: 1-byte cause code, then a short UTF-8 reason
//
// A transfer is: select, manifest, the receiver's resume… and start, then
// per file file, data…, end, and finally ack (or abort at any point). Either
// side may be the sender: select comes from whichever dialed.
package link
