package launch_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/launch"
	"github.com/sftproject/sft/services/store/redisstore/redistest"
)

// TestOpenStoreSentinel opens the Redis store through Sentinel from
// configuration, with both passwords read from their files, and keeps
// them out of the log.
func TestOpenStoreSentinel(t *testing.T) {
	o := redistest.SentinelOptions{Password: "data-secret", SentinelPassword: "sentinel-secret"}
	st := redistest.StartSentinel(t, o)
	dir := t.TempDir()
	secret := func(name, value string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(value+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var cfg config.Config
	cfg.Store.Backend = "redis"
	cfg.Redis = config.Redis{
		// The host is not used under Sentinel.
		URL:                  "redis://unused.invalid:6379/0",
		PasswordFile:         secret("redis", o.Password),
		SentinelMaster:       redistest.MasterName,
		SentinelAddrs:        st.Addrs(),
		SentinelPasswordFile: secret("sentinel", o.SentinelPassword),
	}
	var logs syncbuf.Buffer
	s, err := launch.OpenStore(t.Context(), cfg, nil, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	defer s.Close()
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	for _, sec := range []string{o.Password, o.SentinelPassword} {
		if strings.Contains(logs.String(), sec) {
			t.Errorf("the log holds a password:\n%s", logs.String())
		}
	}
}
