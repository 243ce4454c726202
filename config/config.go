// Package config defines SFT's one configuration struct and loads it once,
// with the precedence flags > SFT_* environment > config file > defaults.
//
// The environment is passed in explicitly (not read from the process) so a
// command's behaviour depends only on its arguments, which keeps tests
// hermetic and lets them run in parallel.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Config is every setting of sftd and sft-cli. Each field's key is its
// mapstructure path (e.g. nats.url); its environment variable is SFT_ plus
// the key upper-cased with dots as underscores (SFT_NATS_URL).
type Config struct {
	// DataDir holds sftd's state: the dev PKI, signing keys, JetStream files.
	DataDir string `mapstructure:"data_dir"`
	// ConfigDir holds sft-cli's cached login token and the default config file.
	ConfigDir string `mapstructure:"config_dir"`
	// SecretsDir holds the services' keys, their NATS identities among them
	// (see package secrets); empty means <data_dir>/secrets.
	SecretsDir string `mapstructure:"secrets_dir"`
	// User is the SFT user sft-cli logs in as.
	User string `mapstructure:"user"`
	// Instances is how many instances of its service an sftd process runs
	// in the queue group: how many requests to one endpoint it serves at once.
	Instances int `mapstructure:"instances"`

	NATS    NATS    `mapstructure:"nats"`
	Store   Store   `mapstructure:"store"`
	Redis   Redis   `mapstructure:"redis"`
	Dev     Dev     `mapstructure:"dev"`
	Auth    Auth    `mapstructure:"auth"`
	Session Session `mapstructure:"session"`
	Peer    Peer    `mapstructure:"peer"`
	Relay   Relay   `mapstructure:"relay"`
	Log     Log     `mapstructure:"log"`
	Limits  Limits  `mapstructure:"limits"`
	Metrics Metrics `mapstructure:"metrics"`
}

// Metrics configures the HTTP server of sftd's serving commands: Prometheus
// metrics, health and readiness.
type Metrics struct {
	// Listen is its address (host:port); empty means no server.
	Listen string `mapstructure:"listen"`
}

// NATS is how to reach the broker.
type NATS struct {
	// URL is one server URL or several, comma-separated: the servers of a
	// cluster, among which connections pick at random and fail over.
	URL string `mapstructure:"url"`
	// Replicas is how many servers of a cluster keep a copy of each stream
	// and bucket the services create (1 on a single server).
	Replicas int `mapstructure:"replicas"`
	// CAFile is the CA that signs the NATS server certificate; empty means
	// the dev CA under DataDir.
	CAFile string `mapstructure:"ca_file"`
	// CertFile and KeyFile are an optional client certificate (mTLS) that
	// every NATS client (the services, sft-cli) presents when set.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// VerifyClients makes the embedded server of `sftd dev` require a
	// client certificate signed by the SFT CA on every TLS connection.
	VerifyClients bool `mapstructure:"verify_clients"`
}

// Store chooses where the services keep state.
type Store struct {
	// Backend is "jetstream" (NATS JetStream KV) or "redis".
	Backend string `mapstructure:"backend"`
}

// Redis is how to reach Redis when Store.Backend is "redis".
type Redis struct {
	// URL is redis://[user:password@]host:port/db, or rediss:// for TLS.
	URL      string `mapstructure:"url"`
	Username string `mapstructure:"username"`
	// PasswordFile holds the password, so it is in neither argv nor env.
	PasswordFile string `mapstructure:"password_file"`
	// CAFile verifies the server of a rediss:// URL.
	CAFile string `mapstructure:"ca_file"`
	// SentinelMaster, when set, makes the store ask Sentinel at
	// SentinelAddrs for the primary of that name instead of dialling
	// URL's host; URL still gives the scheme, database and user.
	SentinelMaster string   `mapstructure:"sentinel_master"`
	SentinelAddrs  []string `mapstructure:"sentinel_addrs"`
	// SentinelPasswordFile holds the sentinels' own password (their
	// requirepass), which may differ from the data password.
	SentinelPasswordFile string `mapstructure:"sentinel_password_file"`
}

// Dev configures the all-in-one `sftd dev`.
type Dev struct {
	// Listen is where the embedded NATS server accepts TLS clients.
	Listen string `mapstructure:"listen"`
	// Hosts are more names or addresses clients may reach the server by
	// (a DNS name, a NAT's public address): the server certificate covers
	// them, and when Listen goes beyond loopback they are printed as URLs.
	Hosts []string `mapstructure:"hosts"`
}

// Auth configures the auth service.
type Auth struct {
	TokenTTL time.Duration `mapstructure:"token_ttl"`
}

// Session configures the session service.
type Session struct {
	// TTL is how long a session may take from creation to its end.
	TTL time.Duration `mapstructure:"ttl"`
	// Retention is how long an ended session stays readable.
	Retention time.Duration `mapstructure:"retention"`
}

// Peer configures sft-cli's peer link.
type Peer struct {
	// Listen is where the sending side accepts its peer (port 0: any free
	// port; no host: every interface, each of whose addresses is announced).
	Listen string `mapstructure:"listen"`
	// Advertise lists addresses (comma-separated host:port) the peer tries
	// before this host's own (behind NAT or a port forward).
	Advertise string `mapstructure:"advertise"`
	// ConnectTimeout bounds the wait for the peer's connection once it joined,
	// and the dial to a listening peer.
	ConnectTimeout time.Duration `mapstructure:"connect_timeout"`
	// Relay is auto (the relay when no direct connection works within
	// RelayDelay), always, or never.
	Relay      string        `mapstructure:"relay"`
	RelayDelay time.Duration `mapstructure:"relay_delay"`
}

// Relay configures the relay that carries a peer link between two clients
// that cannot reach each other (`sftd relay`), and where the session
// service tells clients to find it.
type Relay struct {
	// Listen is where `sftd relay` accepts clients.
	Listen string `mapstructure:"listen"`
	// Addrs are the relays (host:port) the session service hands to
	// clients; empty means no relay is offered.
	Addrs []string `mapstructure:"addrs"`
	// MaxSessions caps the pairs one relay carries at once.
	MaxSessions int `mapstructure:"max_sessions"`
	// MaxWaiting caps the connections waiting for their peer.
	MaxWaiting int `mapstructure:"max_waiting"`
	// Rate caps one session's bytes per second (0: no cap).
	Rate int64 `mapstructure:"rate"`
	// IdleTimeout closes a pair after this long without a byte.
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// PairTimeout bounds how long a connection waits for its peer.
	PairTimeout time.Duration `mapstructure:"pair_timeout"`
	// AdmissionTimeout bounds the wait for a new connection's ticket.
	AdmissionTimeout time.Duration `mapstructure:"admission_timeout"`
}

// Limits bound what one user (or one client address) can make the
// services do. The per-minute rate is counted by each session replica on
// its own, failed logins by each auth replica.
type Limits struct {
	// OpenSessions caps the live sessions a user has started.
	OpenSessions int `mapstructure:"open_sessions"`
	// SessionsPerMinute caps the sessions a user may create per minute.
	SessionsPerMinute int `mapstructure:"sessions_per_minute"`
	// RequestBytes caps an API request body.
	RequestBytes int `mapstructure:"request_bytes"`
	// ManifestEntries and ManifestBytes cap the files a session offers and
	// their declared total size.
	ManifestEntries int   `mapstructure:"manifest_entries"`
	ManifestBytes   int64 `mapstructure:"manifest_bytes"`
	// LoginFailuresPerAddress is how many failed password connects one
	// client address may make before each further one waits longer and
	// longer.
	LoginFailuresPerAddress int `mapstructure:"login_failures_per_address"`
}

// Log configures log/slog output.
type Log struct {
	// Level is debug, info, warn or error; empty leaves it to the command
	// (see Logger).
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"` // text or json
}

// SecretsPath returns the directory of the services' secrets.
func (c Config) SecretsPath() string {
	if c.SecretsDir != "" {
		return c.SecretsDir
	}
	return filepath.Join(c.DataDir, "secrets")
}

// CAFile returns the CA file to trust for NATS.
func (c Config) CAFile() string {
	if c.NATS.CAFile != "" {
		return c.NATS.CAFile
	}
	return filepath.Join(c.DataDir, "pki", "ca.pem")
}

// Key documents one setting.
type Key struct {
	Name    string // mapstructure path, e.g. "nats.url"
	Default any
	Help    string
}

// Env is the environment variable that sets k.
func (k Key) Env() string {
	return "SFT_" + strings.ToUpper(strings.ReplaceAll(k.Name, ".", "_"))
}

// Keys lists every setting with its default, computed from env (for the
// directories). A test checks it covers every field of Config.
func Keys(env []string) []Key {
	return []Key{
		{"data_dir", defaultDataDir(env), "sftd state: dev PKI, signing keys, JetStream files"},
		{"config_dir", defaultConfigDir(env), "sft-cli token cache and default config file (sft.yaml)"},
		{"secrets_dir", "", "services' keys and NATS identities (empty: <data_dir>/secrets)"},
		{"user", "", "SFT user name sft-cli logs in as"},
		{"instances", 16, "instances of its service each sftd process runs (requests one endpoint serves at once)"},
		{"nats.url", "tls://127.0.0.1:4222", "NATS server URL, or the URLs of a cluster's servers, comma-separated (clients pick one at random and fail over to the others)"},
		{"nats.replicas", 1, "copies a NATS cluster keeps of each stream and KV bucket the services create: 1 on one server (`sftd dev` always uses 1), 3 on a 3-node cluster; existing ones are updated at start"},
		{"nats.ca_file", "", "CA certificate for the NATS server (empty: <data_dir>/pki/ca.pem)"},
		{"nats.cert_file", "", "client certificate for NATS mTLS (optional)"},
		{"nats.key_file", "", "private key of nats.cert_file (mode 0600)"},
		{"nats.verify_clients", false, "`sftd dev`: refuse every connection without a client certificate of the SFT CA (mTLS; each sft-cli then needs nats.cert_file)"},
		{"store.backend", "jetstream", "state store: jetstream (NATS KV) or redis"},
		{"redis.url", "redis://127.0.0.1:6379/0", "Redis URL (rediss:// for TLS) when store.backend is redis"},
		{"redis.username", "", "Redis ACL user name"},
		{"redis.password_file", "", "file with the Redis password"},
		{"redis.ca_file", "", "CA certificate of a rediss:// server"},
		{"redis.sentinel_master", "", "Redis Sentinel master name; empty: no Sentinel, redis.url's host is the server"},
		{"redis.sentinel_addrs", []string{}, "Redis Sentinels (host:port, comma-separated in the environment) asked for the primary of redis.sentinel_master"},
		{"redis.sentinel_password_file", "", "file with the Redis Sentinels' password, when they require one"},
		{"dev.listen", "127.0.0.1:4222", "address the embedded NATS server of `sftd dev` listens on"},
		{"dev.hosts", []string{}, "more names or addresses of the `sftd dev` server for its certificate and printed URLs (comma-separated in the environment)"},
		{"auth.token_ttl", 12 * time.Hour, "lifetime of a login token"},
		{"session.ttl", 15 * time.Minute, "time a session has from creation to its end"},
		{"session.retention", time.Hour, "how long an ended session stays readable"},
		{"peer.listen", ":0", "address the sending side's peer link listens on, HOST:PORT or HOST:LOW-HIGH (a port range; no host: every interface, each address announced to the peer)"},
		{"peer.advertise", "", "addresses (comma-separated host:port) the peer tries before this host's own (NAT, port forwarding)"},
		{"peer.connect_timeout", time.Minute, "wait for the peer's connection once it joined, or for it to come back after the link dropped"},
		{"peer.relay", "auto", "relay use: auto (when no direct connection works within peer.relay_delay), always, never"},
		{"peer.relay_delay", 2500 * time.Millisecond, "how long direct connection attempts get before the relay is tried too"},
		{"relay.listen", "0.0.0.0:4223", "address `sftd relay` listens on"},
		{"relay.addrs", []string{}, "relays (host:port, comma-separated in the environment) the session service offers clients that cannot reach each other; empty: none"},
		{"relay.max_sessions", 256, "sessions one relay carries at once"},
		{"relay.max_waiting", 1024, "connections one relay holds while they wait for their peer"},
		{"relay.rate", int64(0), "bytes per second one relayed session may move, both directions together (0: no limit)"},
		{"relay.idle_timeout", 30 * time.Second, "a relayed session without a byte either way for this long is closed"},
		{"relay.pair_timeout", 2 * time.Minute, "how long a relay holds a connection waiting for its peer"},
		{"relay.admission_timeout", 5 * time.Second, "how long a relay waits for a new connection's ticket"},
		{"log.level", "", "log level: debug, info, warn, error (empty: info for the services and `sftd dev`, warn for sft-cli and sftd's one-shot commands)"},
		{"log.format", "text", "log format: text or json"},
		{"limits.open_sessions", 16, "live sessions one user may have started at once"},
		{"limits.sessions_per_minute", 60, "sessions one user may create per minute (counted per session replica)"},
		{"limits.request_bytes", 64 << 10, "largest API request body the session and key services accept"},
		{"limits.manifest_entries", 10000, "most files one session may offer"},
		{"limits.manifest_bytes", int64(1 << 40), "largest total size one session may declare, in bytes"},
		{"limits.login_failures_per_address", 20, "failed password logins from one client address before each further one is delayed, doubling (counted per auth replica)"},
		{"metrics.listen", "", "address (host:port) of the HTTP server of sftd dev, auth, session, key and relay with /metrics, /healthz and /readyz (empty: none; never the NATS port)"},
	}
}

// Load builds the Config. flags maps config keys to the command-line flags
// that set them; only flags the user changed take part. configFile is an
// explicit --config value ("" to use SFT_CONFIG or <config_dir>/sft.yaml if
// it exists).
func Load(env []string, configFile string, flags map[string]*pflag.Flag) (Config, error) {
	envMap := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			envMap[k] = v
		}
	}
	keys := Keys(env)
	v := viper.New()
	for _, k := range keys {
		v.SetDefault(k.Name, k.Default)
	}

	// The config dir may itself come from a flag or the environment, and it
	// locates the default config file.
	if f := flags["config_dir"]; f != nil && f.Changed {
		v.Set("config_dir", f.Value.String())
	} else if s, ok := envMap["SFT_CONFIG_DIR"]; ok {
		v.Set("config_dir", s)
	}
	explicit := configFile != ""
	if !explicit {
		configFile = envMap["SFT_CONFIG"]
		explicit = configFile != ""
	}
	if !explicit {
		configFile = filepath.Join(v.GetString("config_dir"), "sft.yaml")
	}
	if _, err := os.Stat(configFile); err == nil || explicit {
		file := viper.New()
		file.SetConfigFile(configFile)
		if err := file.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("read config file %s: %w", configFile, err)
		}
		if err := checkKnown(file.AllKeys(), keys); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", configFile, err)
		}
		for _, k := range file.AllKeys() {
			v.Set(k, file.Get(k))
		}
	}
	for _, k := range keys {
		if s, ok := envMap[k.Env()]; ok {
			v.Set(k.Name, s)
		}
	}
	for name, f := range flags {
		if f == nil || !f.Changed {
			continue
		}
		if list, ok := f.Value.(pflag.SliceValue); ok {
			v.Set(name, list.GetSlice())
		} else {
			v.Set(name, f.Value.String())
		}
	}

	var c Config
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           &c,
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		DecodeHook:       mapstructure.ComposeDecodeHookFunc(mapstructure.StringToTimeDurationHookFunc(), stringToList),
	})
	if err != nil {
		return Config{}, err
	}
	if err := dec.Decode(v.AllSettings()); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, c.validate()
}

// stringToList reads a list from a flag or an environment variable:
// comma-separated, blanks around each item ignored, "" the empty list.
func stringToList(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeFor[[]string]() {
		return data, nil
	}
	out := []string{}
	for _, item := range strings.Split(data.(string), ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out, nil
}

func checkKnown(got []string, keys []Key) error {
	known := make(map[string]bool, len(keys))
	for _, k := range keys {
		known[k.Name] = true
	}
	for _, g := range got {
		if !known[g] {
			return fmt.Errorf("unknown setting %q", g)
		}
	}
	return nil
}

func (c Config) validate() error {
	var errs []error
	positive := map[string]time.Duration{
		"auth.token_ttl":       c.Auth.TokenTTL,
		"session.ttl":          c.Session.TTL,
		"session.retention":    c.Session.Retention,
		"peer.connect_timeout": c.Peer.ConnectTimeout,

		"relay.idle_timeout":      c.Relay.IdleTimeout,
		"relay.pair_timeout":      c.Relay.PairTimeout,
		"relay.admission_timeout": c.Relay.AdmissionTimeout,
	}
	for name, d := range positive {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	for name, n := range map[string]int64{
		"instances":                  int64(c.Instances),
		"limits.open_sessions":       int64(c.Limits.OpenSessions),
		"limits.sessions_per_minute": int64(c.Limits.SessionsPerMinute),
		"limits.request_bytes":       int64(c.Limits.RequestBytes),
		"limits.manifest_entries":    int64(c.Limits.ManifestEntries),
		"limits.manifest_bytes":      c.Limits.ManifestBytes,

		"limits.login_failures_per_address": int64(c.Limits.LoginFailuresPerAddress),

		"relay.max_sessions": int64(c.Relay.MaxSessions),
		"relay.max_waiting":  int64(c.Relay.MaxWaiting),
	} {
		if n <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", name, n))
		}
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		// JetStream's own bounds.
		errs = append(errs, fmt.Errorf("nats.replicas must be from 1 to 5, got %d", c.NATS.Replicas))
	}
	if c.Peer.RelayDelay < 0 {
		errs = append(errs, fmt.Errorf("peer.relay_delay must not be negative, got %s", c.Peer.RelayDelay))
	}
	switch c.Peer.Relay {
	case "auto", "always", "never":
	default:
		errs = append(errs, fmt.Errorf("peer.relay must be auto, always or never, got %q", c.Peer.Relay))
	}
	if c.Relay.Rate < 0 {
		errs = append(errs, fmt.Errorf("relay.rate must not be negative, got %d", c.Relay.Rate))
	}
	if err := checkHostPort(c.Relay.Listen, true); err != nil {
		errs = append(errs, fmt.Errorf("relay.listen: %w", err))
	}
	if c.Metrics.Listen != "" {
		if err := checkHostPort(c.Metrics.Listen, true); err != nil {
			errs = append(errs, fmt.Errorf("metrics.listen: %w", err))
		}
		// HTTP on the port of NATS or the relay would fail to listen, or
		// worse, shadow it on another interface.
		for key, other := range map[string]string{"dev.listen": c.Dev.Listen, "relay.listen": c.Relay.Listen} {
			if samePort(c.Metrics.Listen, other) {
				errs = append(errs, fmt.Errorf("metrics.listen %s uses the port of %s (%s): give it a port of its own", c.Metrics.Listen, key, other))
			}
		}
	}
	for _, l := range []struct {
		key   string
		addrs []string
	}{{"relay.addrs", c.Relay.Addrs}, {"redis.sentinel_addrs", c.Redis.SentinelAddrs}} {
		for _, a := range l.addrs {
			if err := checkHostPort(a, false); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", l.key, err))
			}
		}
	}
	if (c.Redis.SentinelMaster == "") != (len(c.Redis.SentinelAddrs) == 0) {
		errs = append(errs, errors.New("redis.sentinel_master and redis.sentinel_addrs go together"))
	}
	switch c.Store.Backend {
	case "jetstream", "redis":
	default:
		errs = append(errs, fmt.Errorf("store.backend must be jetstream or redis, got %q", c.Store.Backend))
	}
	if (c.NATS.CertFile == "") != (c.NATS.KeyFile == "") {
		errs = append(errs, errors.New("nats.cert_file and nats.key_file go together"))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format must be text or json, got %q", c.Log.Format))
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level must be debug, info, warn or error, got %q", c.Log.Level))
	}
	return errors.Join(errs...)
}

// samePort reports whether two listen addresses name the same fixed port.
func samePort(a, b string) bool {
	_, pa, errA := net.SplitHostPort(a)
	_, pb, errB := net.SplitHostPort(b)
	return errA == nil && errB == nil && pa == pb && pa != "0"
}

// checkHostPort checks addr is host:port with a port number (0, any free
// port, only where listening) and, unless listening, a host.
func checkHostPort(addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (n == 0 && !listen) {
		return fmt.Errorf("%q: the port must be a number from 1 to 65535", addr)
	}
	if host == "" && !listen {
		return fmt.Errorf("%q has no host", addr)
	}
	return nil
}

// fieldKeys lists the mapstructure paths of every leaf field of Config.
func fieldKeys() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			name := prefix + f.Tag.Get("mapstructure")
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, name+".")
				continue
			}
			out = append(out, name)
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return out
}

func lookup(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == name {
			return v
		}
	}
	return ""
}

// defaultDataDir follows the XDG base directory convention.
func defaultDataDir(env []string) string {
	if d := lookup(env, "XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "sft")
	}
	if h := lookup(env, "HOME"); h != "" {
		return filepath.Join(h, ".local", "share", "sft")
	}
	return filepath.Join(os.TempDir(), "sft-data")
}

// defaultConfigDir mirrors os.UserConfigDir, but from the given environment.
func defaultConfigDir(env []string) string {
	if d := lookup(env, "XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "sft")
	}
	if h := lookup(env, "HOME"); h != "" {
		return filepath.Join(h, ".config", "sft")
	}
	return filepath.Join(os.TempDir(), "sft-config")
}

// keyAnnotation marks a command-line flag with the config key it sets.
const keyAnnotation = "sft-config-key"

// Flag declares a string flag on fs that sets config key. Its default stays
// in Keys, the one source of defaults; Load sees it only if the user set it.
func Flag(fs *pflag.FlagSet, key, name, short, usage string) {
	fs.StringP(name, short, "", usage)
	_ = fs.SetAnnotation(name, keyAnnotation, []string{key})
}

// ListFlag declares a repeatable flag on fs that sets list key; each use
// may also hold comma-separated items.
func ListFlag(fs *pflag.FlagSet, key, name, usage string) {
	fs.StringSlice(name, nil, usage)
	_ = fs.SetAnnotation(name, keyAnnotation, []string{key})
}

// FlagsOf collects the flags of fs declared with Flag or ListFlag, by
// config key. Pass the running command's flag set, so each command's own
// flags count.
func FlagsOf(fs *pflag.FlagSet) map[string]*pflag.Flag {
	out := map[string]*pflag.Flag{}
	fs.VisitAll(func(f *pflag.Flag) {
		if k := f.Annotations[keyAnnotation]; len(k) == 1 {
			out[k[0]] = f
		}
	})
	return out
}

// Logger builds the log/slog logger this configuration asks for. def is
// the level when none was chosen: info for a service, whose logs are for
// operators; warn for a command a person types, which talks to that person
// through its own messages. A level chosen anywhere (flag, environment,
// config file) wins.
func (l Log) Logger(w io.Writer, def slog.Level) *slog.Logger {
	level := def
	if l.Level != "" {
		_ = level.UnmarshalText([]byte(l.Level)) // validated by Load
	}
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
