package devstack_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/internal/hermetic"
	"github.com/sftproject/sft/services/daemon"
)

// A stack that cannot start (here: its Redis is not there) stops what it
// had started and says why in one line; it does not crash.
func TestStartFailsCleanly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	env := append(hermetic.Home(filepath.Join(dir, "home")), "SFT_DATA_DIR="+filepath.Join(dir, "data"),
		"SFT_STORE_BACKEND=redis", "SFT_REDIS_URL=redis://127.0.0.1:1/0")
	var out, errOut bytes.Buffer
	err := daemon.Run(ctx, daemon.IO{In: strings.NewReader(""), Out: &out, Err: &errOut}, []string{"dev", "--listen", "127.0.0.1:0"}, env)
	if err == nil {
		t.Fatal("sftd dev started without its Redis")
	}
	if msg := err.Error(); !strings.Contains(msg, "redis") || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line naming redis", msg)
	}
}
