package config

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestKeysCoverEveryField(t *testing.T) {
	var names []string
	for _, k := range Keys(nil) {
		names = append(names, k.Name)
	}
	fields := fieldKeys()
	slices.Sort(names)
	slices.Sort(fields)
	if !slices.Equal(names, fields) {
		t.Fatalf("Keys() = %v\nConfig fields = %v", names, fields)
	}
}

func TestPrecedence(t *testing.T) {
	home := t.TempDir()
	cfgDir := filepath.Join(home, ".config", "sft")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	file := "session:\n  ttl: 3m\nnats:\n  url: tls://file:1\npeer:\n  listen: 127.0.0.1:7000\n"
	if err := os.WriteFile(filepath.Join(cfgDir, "sft.yaml"), []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	server := fs.String("server", "", "")
	listen := fs.String("listen", "", "")
	_ = server
	_ = listen
	if err := fs.Parse([]string{"--server", "tls://flag:3"}); err != nil {
		t.Fatal(err)
	}
	flags := map[string]*pflag.Flag{"nats.url": fs.Lookup("server"), "peer.listen": fs.Lookup("listen")}
	env := []string{"HOME=" + home, "SFT_NATS_URL=tls://env:2", "SFT_PEER_LISTEN=127.0.0.1:8000", "SFT_SESSION_TTL=5m"}

	c, err := Load(env, "", flags)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"flag beats env and file", c.NATS.URL, "tls://flag:3"},
		{"env beats file", c.Peer.Listen, "127.0.0.1:8000"},
		{"env beats file (duration)", c.Session.TTL, 5 * time.Minute},
		{"default when unset", c.Auth.TokenTTL, 12 * time.Hour},
		{"data dir from HOME", c.DataDir, filepath.Join(home, ".local", "share", "sft")},
		{"CA defaults under data dir", c.CAFile(), filepath.Join(home, ".local", "share", "sft", "pki", "ca.pem")},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}

	c, err = Load([]string{"HOME=" + home}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Session.TTL != 3*time.Minute || c.NATS.URL != "tls://file:1" {
		t.Fatalf("file values not applied: %+v", c)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, file string
		env        []string
		want       string
	}{
		{"missing explicit file", filepath.Join(dir, "nope.yaml"), nil, "read config file"},
		{"unknown key in file", write("typo.yaml", "sesion:\n  ttl: 1m\n"), nil, `unknown setting "sesion.ttl"`},
		{"bad duration", "", []string{"SFT_SESSION_TTL=soon"}, "session.ttl"},
		{"negative duration", "", []string{"SFT_SESSION_TTL=-1m"}, "session.ttl must be positive"},
		{"bad log format", "", []string{"SFT_LOG_FORMAT=xml"}, "log.format"},
		{"no login failures per address", "", []string{"SFT_LIMITS_LOGIN_FAILURES_PER_ADDRESS=0"}, "limits.login_failures_per_address must be positive"},
		{"removed setting in file", write("old.yaml", "nats:\n  user: sft-service\n"), nil, `unknown setting "nats.user"`},
		{"verify_clients not a bool", "", []string{"SFT_NATS_VERIFY_CLIENTS=maybe"}, "verify_clients"},
		{"certificate without key", "", []string{"SFT_NATS_CERT_FILE=/c.pem"}, "nats.cert_file and nats.key_file go together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := append([]string{"HOME=" + dir}, tt.env...)
			_, err := Load(env, tt.file, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

// The per-address login allowance is a setting like the other limits:
// defaulted, and taken from the environment or a config file.
func TestLoginFailuresPerAddress(t *testing.T) {
	home := t.TempDir()
	for _, tc := range []struct {
		name string
		env  []string
		file string
		want int
	}{
		{"default", nil, "", 20},
		{"environment", []string{"SFT_LIMITS_LOGIN_FAILURES_PER_ADDRESS=5"}, "", 5},
		{"file", nil, "limits:\n  login_failures_per_address: 7\n", 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := loadWith(t, home, tc.env, tc.file)
			if c.Limits.LoginFailuresPerAddress != tc.want {
				t.Errorf("limits.login_failures_per_address = %d, want %d", c.Limits.LoginFailuresPerAddress, tc.want)
			}
		})
	}
}

// The mTLS settings: a client certificate for any client, and the switch
// that makes `sftd dev`'s server require one, off unless asked for.
func TestMutualTLSSettings(t *testing.T) {
	home := t.TempDir()
	for _, tc := range []struct {
		name      string
		env       []string
		file      string
		verify    bool
		cert, key string
	}{
		{name: "default", verify: false},
		{name: "environment", env: []string{"SFT_NATS_VERIFY_CLIENTS=true", "SFT_NATS_CERT_FILE=/c.crt", "SFT_NATS_KEY_FILE=/c.key"}, verify: true, cert: "/c.crt", key: "/c.key"},
		{name: "file", file: "nats:\n  verify_clients: true\n  cert_file: /f.crt\n  key_file: /f.key\n", verify: true, cert: "/f.crt", key: "/f.key"},
		{name: "environment turns the file's off", env: []string{"SFT_NATS_VERIFY_CLIENTS=false"}, file: "nats:\n  verify_clients: true\n", verify: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := loadWith(t, home, tc.env, tc.file)
			if c.NATS.VerifyClients != tc.verify || c.NATS.CertFile != tc.cert || c.NATS.KeyFile != tc.key {
				t.Errorf("nats = %+v, want verify_clients %v, cert_file %q, key_file %q", c.NATS, tc.verify, tc.cert, tc.key)
			}
		})
	}
}

// dev.hosts is a list: repeated or comma-separated flags, a
// comma-separated environment variable, a YAML list; flags win.
func TestDevHosts(t *testing.T) {
	home := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		file string
		want []string
	}{
		{name: "default", want: nil},
		{name: "environment", env: []string{"SFT_DEV_HOSTS=sft.example, 203.0.113.5,,"}, want: []string{"sft.example", "203.0.113.5"}},
		{name: "file", file: "dev:\n  hosts: [sft.example, 2001:db8::5]\n", want: []string{"sft.example", "2001:db8::5"}},
		{name: "flags beat the environment", args: []string{"--host", "a.example", "--host", "b.example,203.0.113.9"}, env: []string{"SFT_DEV_HOSTS=c.example"},
			want: []string{"a.example", "b.example", "203.0.113.9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			ListFlag(fs, "dev.hosts", "host", "")
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			var file string
			if tc.file != "" {
				file = filepath.Join(t.TempDir(), "sft.yaml")
				if err := os.WriteFile(file, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Load(append([]string{"HOME=" + home}, tc.env...), file, FlagsOf(fs))
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Dev.Hosts) != len(tc.want) || (len(tc.want) > 0 && !slices.Equal(c.Dev.Hosts, tc.want)) {
				t.Errorf("dev.hosts = %q, want %q", c.Dev.Hosts, tc.want)
			}
		})
	}
}

// A log level nobody chose is the command's own; one chosen anywhere wins.
func TestLogLevel(t *testing.T) {
	home := t.TempDir()
	for _, tc := range []struct {
		name string
		env  []string
		file string
		def  slog.Level
		want slog.Level
	}{
		{"unset, a service", nil, "", slog.LevelInfo, slog.LevelInfo},
		{"unset, a command", nil, "", slog.LevelWarn, slog.LevelWarn},
		{"environment", []string{"SFT_LOG_LEVEL=info"}, "", slog.LevelWarn, slog.LevelInfo},
		{"file", nil, "log:\n  level: debug\n", slog.LevelWarn, slog.LevelDebug},
		{"quieter than the default", []string{"SFT_LOG_LEVEL=error"}, "", slog.LevelInfo, slog.LevelError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := loadWith(t, home, tc.env, tc.file).Log.Logger(io.Discard, tc.def)
			for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
				if got := log.Enabled(context.Background(), l); got != (l >= tc.want) {
					t.Errorf("%s enabled: %v, want level %s", l, got, tc.want)
				}
			}
		})
	}
}

// loadWith loads the configuration with env (and HOME=home) and, unless
// empty, a configuration file holding yaml.
func loadWith(t *testing.T, home string, env []string, yaml string) Config {
	t.Helper()
	var file string
	if yaml != "" {
		file = filepath.Join(t.TempDir(), "sft.yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Load(append([]string{"HOME=" + home}, env...), file, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The relay's settings, its list of addresses above all: from a flag or
// the environment as a comma-separated list, from a file as a list.
func TestRelaySettings(t *testing.T) {
	home := t.TempDir()
	def := loadWith(t, home, nil, "")
	want := Relay{Listen: "0.0.0.0:4223", Addrs: []string{}, MaxSessions: 256, MaxWaiting: 1024, Rate: 0,
		IdleTimeout: 30 * time.Second, PairTimeout: 2 * time.Minute, AdmissionTimeout: 5 * time.Second}
	if !reflect.DeepEqual(def.Relay, want) {
		t.Errorf("defaults %+v, want %+v", def.Relay, want)
	}
	for _, tc := range []struct {
		name  string
		env   []string
		file  string
		flag  string
		addrs []string
	}{
		{name: "environment", env: []string{"SFT_RELAY_ADDRS=relay.example.com:4223, 203.0.113.5:4223 ,[2001:db8::1]:443"},
			addrs: []string{"relay.example.com:4223", "203.0.113.5:4223", "[2001:db8::1]:443"}},
		{name: "environment empties the file's", env: []string{"SFT_RELAY_ADDRS="}, file: "relay:\n  addrs: [a.example:1]\n", addrs: []string{}},
		{name: "file", file: "relay:\n  addrs:\n    - a.example:1\n    - b.example:2\n", addrs: []string{"a.example:1", "b.example:2"}},
		{name: "flag beats environment", env: []string{"SFT_RELAY_ADDRS=env.example:1"}, flag: "flag.example:1,flag.example:2",
			addrs: []string{"flag.example:1", "flag.example:2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var flags map[string]*pflag.Flag
			if tc.flag != "" {
				fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
				Flag(fs, "relay.addrs", "relay", "", "")
				if err := fs.Parse([]string{"--relay", tc.flag}); err != nil {
					t.Fatal(err)
				}
				flags = FlagsOf(fs)
			}
			var file string
			if tc.file != "" {
				file = filepath.Join(t.TempDir(), "sft.yaml")
				if err := os.WriteFile(file, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Load(append([]string{"HOME=" + home}, tc.env...), file, flags)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.Relay.Addrs, tc.addrs) {
				t.Errorf("relay.addrs = %q, want %q", c.Relay.Addrs, tc.addrs)
			}
		})
	}
	c := loadWith(t, home, []string{"SFT_RELAY_RATE=1048576", "SFT_RELAY_IDLE_TIMEOUT=1m", "SFT_RELAY_LISTEN=127.0.0.1:0"},
		"relay:\n  max_sessions: 8\n  pair_timeout: 30s\n")
	if c.Relay.Rate != 1<<20 || c.Relay.IdleTimeout != time.Minute || c.Relay.Listen != "127.0.0.1:0" || c.Relay.MaxSessions != 8 || c.Relay.PairTimeout != 30*time.Second {
		t.Errorf("relay = %+v", c.Relay)
	}

	for _, tc := range []struct{ env, want string }{
		{"SFT_RELAY_ADDRS=relay.example.com", "relay.addrs"},
		{"SFT_RELAY_ADDRS=:4223", "has no host"},
		{"SFT_RELAY_ADDRS=relay.example.com:0", "port must be a number"},
		{"SFT_RELAY_ADDRS=relay.example.com:https", "port must be a number"},
		{"SFT_RELAY_LISTEN=4223", "relay.listen"},
		{"SFT_RELAY_RATE=-1", "relay.rate must not be negative"},
		{"SFT_RELAY_MAX_SESSIONS=0", "relay.max_sessions must be positive"},
		{"SFT_RELAY_MAX_WAITING=-3", "relay.max_waiting must be positive"},
		{"SFT_RELAY_PAIR_TIMEOUT=0s", "relay.pair_timeout must be positive"},
		{"SFT_RELAY_ADMISSION_TIMEOUT=-1s", "relay.admission_timeout must be positive"},
	} {
		if _, err := Load([]string{"HOME=" + home, tc.env}, "", nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %s", tc.env, err, tc.want)
		}
	}
}

// metrics.listen is off by default, takes any host:port of its own, and
// never the port of NATS (dev.listen) or the relay.
func TestMetricsListen(t *testing.T) {
	home := t.TempDir()
	if c, err := Load([]string{"HOME=" + home}, "", nil); err != nil || c.Metrics.Listen != "" {
		t.Fatalf("default metrics.listen = %q, %v; want none", c.Metrics.Listen, err)
	}
	for _, tc := range []struct {
		env  []string
		want string // an error about this; empty: no error
	}{
		{[]string{"SFT_METRICS_LISTEN=127.0.0.1:9464"}, ""},
		{[]string{"SFT_METRICS_LISTEN=127.0.0.1:0", "SFT_DEV_LISTEN=127.0.0.1:0"}, ""},
		{[]string{"SFT_METRICS_LISTEN=9464"}, "metrics.listen"},
		{[]string{"SFT_METRICS_LISTEN=0.0.0.0:4222"}, "the port of dev.listen"},
		{[]string{"SFT_METRICS_LISTEN=127.0.0.1:4223"}, "the port of relay.listen"},
	} {
		_, err := Load(append([]string{"HOME=" + home}, tc.env...), "", nil)
		if tc.want == "" && err != nil {
			t.Errorf("%v: %v", tc.env, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: %v, want an error about %s", tc.env, err, tc.want)
		}
	}
}

// Sentinel is configured by a master name and a list of sentinels, which
// go together; the data password stays redis.password_file.
func TestRedisSentinel(t *testing.T) {
	home := t.TempDir()
	c := loadWith(t, home, []string{"SFT_REDIS_SENTINEL_MASTER=sft", "SFT_REDIS_SENTINEL_ADDRS=10.0.0.1:26379, s2.example:26379"},
		"redis:\n  sentinel_password_file: /run/secrets/sentinel\n")
	if c.Redis.SentinelMaster != "sft" || !slices.Equal(c.Redis.SentinelAddrs, []string{"10.0.0.1:26379", "s2.example:26379"}) ||
		c.Redis.SentinelPasswordFile != "/run/secrets/sentinel" {
		t.Errorf("redis = %+v", c.Redis)
	}
	for _, env := range [][]string{
		{"SFT_REDIS_SENTINEL_MASTER=sft"},
		{"SFT_REDIS_SENTINEL_ADDRS=10.0.0.1:26379"},
		{"SFT_REDIS_SENTINEL_MASTER=sft", "SFT_REDIS_SENTINEL_ADDRS=10.0.0.1"},
	} {
		if _, err := Load(append([]string{"HOME=" + home}, env...), "", nil); err == nil || !strings.Contains(err.Error(), "redis.sentinel_") {
			t.Errorf("%q: %v, want an error about redis.sentinel_*", env, err)
		}
	}
}
