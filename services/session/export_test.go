package session

import "time"

// SetHeartbeat shortens the watch relay's heartbeat. Call it from TestMain,
// before any service starts: the relays read the values unlocked.
func SetHeartbeat(every, timeout time.Duration) {
	heartbeatEvery, heartbeatTimeout = every, timeout
}

// MaxWatchesUser is the per-user cap on open watches.
const MaxWatchesUser = maxWatchesUser

// MaxReason bounds client-supplied text.
const MaxReason = maxReason

// CleanText is the sanitiser of client-supplied text.
var CleanText = cleanText
