package main

import (
	"fmt"
	"time"

	"github.com/sftproject/sft/services/seal"
)

// yardstickSeals is how many seals one yardstick reading times: about
// 40 ms of one core, short enough to take before and after every run.
const yardstickSeals = 200

// yardstick times a fixed piece of one core's work, the seal of a session
// key to a member's one-time reply key that the key service makes twice a
// lifecycle, and returns the time of one seal. On a shared VM the same
// code's CPU figures rise and fall with the host's speed, even with no
// CPU stolen; read beside them, this says how fast the host was during
// the run.
func yardstick() (time.Duration, error) {
	k, err := seal.GenerateKey()
	if err != nil {
		return 0, fmt.Errorf("yardstick: %w", err)
	}
	pub, key := k.PublicKey(), make([]byte, 32)
	start := time.Now()
	for range yardstickSeals {
		if _, err := seal.Seal(pub, seal.SessionKeyInfo("yardstick"), key); err != nil {
			return 0, fmt.Errorf("yardstick: %w", err)
		}
	}
	return time.Since(start) / yardstickSeals, nil
}
