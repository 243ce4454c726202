package hermetic

import (
	"slices"
	"strings"
	"testing"
)

func TestEnviron(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", "/decoy/config")
	t.Setenv("SFT_NATS_URL", "tls://decoy:1")
	t.Setenv("NATS_URL", "nats://decoy:1")
	t.Setenv("HOME", "/decoy/home")
	t.Setenv("HERMETIC_KEPT", "yes")
	env := Environ("SFT_USER=alice")
	for _, kv := range env {
		// Only what this test set: the shell running it may hold other
		// decoys (CI's do), which are not Environ's to judge.
		for _, set := range []string{"XDG_CONFIG_HOME=", "SFT_NATS_URL=", "NATS_URL=", "HOME="} {
			if strings.HasPrefix(kv, set) {
				t.Errorf("%s leaked", kv)
			}
		}
	}
	if !slices.Contains(env, "HERMETIC_KEPT=yes") {
		t.Error("a variable SFT does not read was dropped")
	}
	if env[len(env)-1] != "SFT_USER=alice" {
		t.Errorf("the test's own variables do not come last: %v", env)
	}
}
