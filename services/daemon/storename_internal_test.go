package daemon

import (
	"strings"
	"testing"

	"github.com/sftproject/sft/config"
)

func TestStoreName(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(*config.Config)
		want string
	}{
		{"jetstream", func(c *config.Config) { c.NATS.URL = "tls://127.0.0.1:4222" },
			"the JetStream store on 127.0.0.1:4222"},
		{"cluster with credentials", func(c *config.Config) { c.NATS.URL = "tls://u:hunter2@n1:4222, tls://n2:4222,n3:4222" },
			"the JetStream store on n1:4222,n2:4222,n3:4222"},
		{"redis with a password", func(c *config.Config) {
			c.Store.Backend, c.Redis.URL = "redis", "redis://:hunter2@db.internal:6379/0"
		}, "the Redis store at db.internal:6379"},
		{"sentinel", func(c *config.Config) {
			c.Store.Backend, c.Redis.URL = "redis", "redis://:hunter2@ignored:6379/0"
			c.Redis.SentinelMaster, c.Redis.SentinelAddrs = "sft", []string{"s1:26379", "s2:26379"}
		}, "the Redis store of Sentinel master sft (s1:26379,s2:26379)"},
		{"unparsable with credentials", func(c *config.Config) { c.NATS.URL = "u:hunter2@%zz" },
			"the JetStream store on "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c config.Config
			tt.cfg(&c)
			got := storeName(c)
			if got != tt.want {
				t.Errorf("storeName = %q, want %q", got, tt.want)
			}
			if strings.Contains(got, "hunter2") {
				t.Errorf("storeName shows a password: %q", got)
			}
		})
	}
}
