package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ConnOptions configures Connect.
type ConnOptions struct {
	// URL is a server URL (tls://127.0.0.1:4222) or several, comma-separated:
	// the servers of a cluster, tried in random order at the initial connect
	// and failed over between on every reconnect.
	URL    string
	CAFile string // CA that signs the server certificate; required

	// A service connects as Service (ServiceAuth, ...) with its NKey; its
	// reply inboxes then live under ServiceInbox(Service). A client logs
	// in with its user name and Password, or connects with the Token that
	// login returned; the auth callout decides, and InboxPrefix must then
	// be api.InboxPrefix(user), the only inbox space the client may use.
	// (User and Password without InboxPrefix are the optional all-services
	// password user of EmbeddedOptions.)
	Service        string
	NKey           nkeys.KeyPair
	User, Password string
	Token          string
	InboxPrefix    string

	// CertFile and KeyFile are an optional client certificate (mTLS),
	// required by a server that verifies clients. It adds to the
	// credentials above and never replaces them. The key file must not be
	// readable by group or others.
	CertFile, KeyFile string

	Name   string       // connection name shown in server monitoring
	Logger *slog.Logger // nil discards
}

// connectTimeout bounds each step of the initial connect (dial, then TLS
// and protocol handshake), so a wrong address fails in seconds.
const connectTimeout = 3 * time.Second

// Reconnect backoff: doubles from reconnectMin up to reconnectMax.
const (
	reconnectMin = 250 * time.Millisecond
	reconnectMax = 10 * time.Second
)

// Connect opens a TLS 1.3 connection to NATS. Whatever the URL scheme, the
// connection is encrypted and the server must present a certificate signed
// by the CA in o.CAFile. The initial connect fails fast with an error a user
// can act on and honours ctx; once connected the connection reconnects
// forever, to any server of the list (or that the cluster announced), with
// backoff once every server was tried.
func Connect(ctx context.Context, o ConnOptions) (*nats.Conn, error) {
	if o.URL == "" {
		return nil, errors.New("cannot connect to NATS: no URL given")
	}
	tlsCfg, err := clientTLSConfig(o)
	if err != nil {
		return nil, &connectError{url: redactURL(o.URL), reason: err.Error(), err: err}
	}
	for attempt := 1; ; attempt++ {
		d := &initialDialer{ctx: ctx}
		d.Timeout = connectTimeout
		nc, err := connect(ctx, o, d, nats.Secure(tlsCfg), nats.SetCustomDialer(d))
		// A server whose auth callout takes over two seconds (a password
		// check on a loaded machine) sends its first PING before the reply
		// to CONNECT, and nats.go gives up on the connection. Nothing was
		// wrong with it: try again.
		if err == nil || attempt == 3 || ctx.Err() != nil || !strings.Contains(err.Error(), "got 'PING'") {
			return nc, err
		}
		if o.Logger != nil {
			o.Logger.Debug("NATS connect raced the server's first PING; retrying", "attempt", attempt)
		}
	}
}

func clientTLSConfig(o ConnOptions) (*tls.Config, error) {
	if o.CAFile == "" {
		// No fallback to the system roots: trusting every public CA would
		// let anyone with a certificate for the name impersonate the broker.
		return nil, errors.New("no CA file given (use --ca)")
	}
	pool, err := loadCAPool(o.CAFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		CurvePreferences: curvePreferences,
		RootCAs:          pool,
	}
	if o.CertFile != "" || o.KeyFile != "" {
		if o.CertFile == "" || o.KeyFile == "" {
			return nil, errors.New("client certificate needs both a certificate and a key file")
		}
		// The key is checked like every other secret: a copy others can
		// read is refused, not used.
		if err := CheckPrivate(o.KeyFile); err != nil {
			return nil, fmt.Errorf("client certificate key: %w", err)
		}
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate %s: %w", o.CertFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// connect is shared by Connect and Embedded.InProcessConn; d is nil for
// in-process connections, which do not dial.
func connect(ctx context.Context, o ConnOptions, d *initialDialer, extra ...nats.Option) (*nats.Conn, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	shown := redactURL(o.URL)
	log = log.With("nats", shown)
	if o.Name != "" {
		log = log.With("conn", o.Name)
	}
	timeout := connectTimeout
	if o.User != "" || o.Token != "" || o.NKey != nil {
		// Authentication may take a while (the auth callout's password
		// checks are slow on purpose); the dialer still gives up on the
		// address after connectTimeout.
		timeout = authTimeout
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
		// A broker that restarts refuses clients until the auth service
		// that answers its auth callout is back; nats.go would otherwise
		// give up for good after two refusals in a row.
		nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Info("NATS disconnected, reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted()) }),
		nats.ClosedHandler(func(*nats.Conn) { log.Debug("NATS connection closed") }),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			if nc.IsReconnecting() {
				// Failed attempts while the server is away: the disconnect
				// was logged, and what the caller makes of it is its own.
				log.Info("NATS error while reconnecting", "err", err)
				return
			}
			if sub != nil {
				log.Warn("NATS error", "subject", sub.Subject, "err", err)
				return
			}
			log.Warn("NATS error", "err", err)
		}),
	}
	switch {
	case o.NKey != nil:
		if !slices.Contains(Services(), o.Service) {
			err := fmt.Errorf("unknown service %q", o.Service)
			return nil, &connectError{url: shown, reason: err.Error(), err: err}
		}
		pub, err := o.NKey.PublicKey()
		if err != nil {
			return nil, &connectError{url: shown, reason: "the service key is unusable: " + err.Error(), err: err}
		}
		// The key stays with the connection: every reconnect signs the
		// server's nonce again.
		opts = append(opts, nats.Nkey(pub, o.NKey.Sign))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	switch {
	case o.NKey != nil:
		opts = append(opts, nats.CustomInboxPrefix(ServiceInbox(o.Service)))
	case o.InboxPrefix != "":
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	case o.User != "" && o.Token == "":
		opts = append(opts, nats.CustomInboxPrefix(ServiceInboxPrefix))
	}
	opts = append(opts, extra...)

	if err := ctx.Err(); err != nil {
		return nil, &connectError{url: shown, reason: err.Error(), err: err}
	}
	nc, err := nats.Connect(o.URL, opts...)
	var dialErr error
	if d != nil {
		dialErr = d.done()
	}
	if err == nil && ctx.Err() != nil {
		nc.Close()
		err = ctx.Err()
	}
	if err != nil {
		return nil, explain(ctx, shown, err, dialErr, o)
	}
	log.Debug("NATS connected", "server", nc.ConnectedServerId())
	return nc, nil
}

// reconnectDelay is the wait after a round of failed attempts at every
// known server (nats.go tries the next server at once). It backs off
// exponentially with jitter, so replicas that lost
// the broker together do not hammer it in lockstep when it returns.
func reconnectDelay(attempts int) time.Duration {
	d := reconnectMax
	if attempts < 16 {
		d = min(reconnectMin<<max(attempts-1, 0), reconnectMax)
	}
	return d/2 + rand.N(d/2+1)
}

// initialDialer dials with ctx during the initial connect only; later
// reconnects must not die with the caller's context.
type initialDialer struct {
	net.Dialer

	mu      sync.Mutex
	ctx     context.Context // nil once the initial connect is over
	stops   []func() bool
	lastErr error
}

func (d *initialDialer) Dial(network, addr string) (net.Conn, error) {
	d.mu.Lock()
	ctx := d.ctx
	d.mu.Unlock()
	if ctx == nil {
		return d.Dialer.Dial(network, addr)
	}
	c, err := d.DialContext(ctx, network, addr)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.lastErr = err
		return nil, err
	}
	if d.ctx != nil {
		// Abort a handshake that is still running when ctx ends.
		d.stops = append(d.stops, context.AfterFunc(ctx, func() { _ = c.Close() }))
	}
	return c, nil
}

// done ends the initial phase and returns the last dial error, which
// nats.go replaces by a generic "no servers available".
func (d *initialDialer) done() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, stop := range d.stops {
		stop()
	}
	d.ctx, d.stops = nil, nil
	return d.lastErr
}

// connectError is a one-line connect failure naming the URL and, where the
// cause is a common mistake, what to check.
type connectError struct {
	url, reason string
	err         error
}

func (e *connectError) Error() string {
	return "cannot connect to NATS at " + e.url + ": " + e.reason
}

func (e *connectError) Unwrap() error { return e.err }

func explain(ctx context.Context, shown string, err, dialErr error, o ConnOptions) error {
	if errors.Is(err, nats.ErrNoServers) && dialErr != nil {
		err = dialErr
	}
	ce := &connectError{url: shown, reason: err.Error(), err: err}
	var (
		unknownCA x509.UnknownAuthorityError
		badHost   x509.HostnameError
		invalid   x509.CertificateInvalidError
		netErr    net.Error
	)
	switch {
	case ctx.Err() != nil:
		ce.reason, ce.err = ctx.Err().Error(), ctx.Err()
	case errors.Is(err, syscall.ECONNREFUSED):
		ce.reason = `connection refused (is "sftd dev" running?)`
	case errors.As(err, &unknownCA):
		ce.reason = "x509: certificate signed by unknown authority (check --ca)"
	case errors.As(err, &badHost):
		ce.reason = badHost.Error() + " (use a host name the server certificate covers)"
	case errors.As(err, &invalid):
		ce.reason = invalid.Error()
	case strings.Contains(err.Error(), "remote error: tls: "),
		strings.Contains(err.Error(), "connection closed by remote after TLS handshake"):
		// In TLS 1.3 the server judges the client certificate after the
		// client thinks the handshake is done, so a refusal arrives as an
		// alert (whose type crypto/tls does not export) or, depending on
		// timing, as a closed connection that nats.go reports in text only.
		if o.CertFile == "" {
			ce.reason = "the server requires a client certificate (set nats.cert_file and nats.key_file; `sftd certs --client NAME` issues one): " + err.Error()
		} else {
			ce.reason = "the server rejected the TLS handshake (check the client certificate): " + err.Error()
		}
	case errors.Is(err, nats.ErrAuthorization) && o.NKey != nil:
		ce.reason = "authorization violation (the server does not know the " + o.Service + " service's key: give nats-server the nats-auth.conf that `sftd certs` wrote with these secrets)"
	case errors.Is(err, nats.ErrAuthorization) && o.Token != "":
		ce.reason = "authorization violation (the login token is expired, revoked or not from this server: log in again)"
	case errors.Is(err, nats.ErrAuthorization) && o.InboxPrefix != "":
		ce.reason = "authorization violation (wrong user name or password, or too many failed attempts: wait and retry)"
	case errors.Is(err, nats.ErrAuthorization):
		ce.reason = "authorization violation (check the service user and password)"
	case errors.Is(err, nats.ErrSecureConnWanted):
		ce.reason = "the server does not offer TLS"
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		(errors.As(err, &netErr) && netErr.Timeout()):
		ce.reason = fmt.Sprintf("no answer within %s (is the address right and the broker reachable?)", connectTimeout)
	}
	return ce
}

// redactURL hides credentials embedded in a URL (or a comma-separated list
// of them, as nats.go accepts) before it is logged or put in an error.
func redactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "(unparsable URL)"
			continue
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}
