package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
)

// EmbeddedOptions configures an in-process NATS server.
type EmbeddedOptions struct {
	Host string // listen address; empty means 127.0.0.1
	Port int    // 0 picks a free port

	StoreDir string // JetStream storage directory
	PKI      PKI    // server certificate, key and the CA that signs them

	// VerifyClients requires every TLS connection to present a client
	// certificate signed by PKI.CAFile (mutual TLS); one without, or with
	// one of another CA, is refused in the TLS handshake, before its NATS
	// credentials are looked at. It adds to those credentials and never
	// replaces them. Off, a certificate is verified only when offered.
	// In-process connections have no TLS and are not affected.
	VerifyClients bool

	// ServiceKeys are the public user nkeys of the services, by name
	// (ServiceAuth, ServiceSession, ServiceKey): each connects with its own
	// key and gets its own ServicePermissions.
	ServiceKeys map[string]string

	// ServiceUser and ServicePassword, when set, add a password user with
	// every service's permissions at once, for tests that run a service
	// against a bare broker. `sftd dev` does not set them and
	// deploy/nats-server.conf has no such user. Only a bcrypt hash of the
	// password is handed to the server.
	ServiceUser, ServicePassword string

	// Public keys of the auth callout (see CalloutKeys.Public): every
	// connection but the services' is decided by the service holding the
	// matching private keys.
	CalloutIssuer, CalloutXKey string

	Logger *slog.Logger // nil discards
}

// Embedded is a running in-process NATS server.
type Embedded struct {
	srv  *server.Server
	url  string
	port int
	log  *slog.Logger
	once sync.Once

	serviceKeys map[string]string // service name -> public nkey
}

// bcryptCost is the work factor of the all-services user's password hash.
// It is low on purpose: that user exists for tests, with a random
// password, and the hash is checked on every connect.
var bcryptCost = bcrypt.MinCost

// authTimeout bounds how long a connecting client may take to
// authenticate, the auth callout's answer included.
const authTimeout = 10 * time.Second

// startTimeout bounds how long StartEmbedded waits for the listener when ctx
// has no deadline of its own.
const startTimeout = 30 * time.Second

// StartEmbedded starts a NATS server that requires TLS 1.3 on every client
// connection, enables JetStream in o.StoreDir and authorizes each service
// key with its ServicePermissions; every other connection goes to the auth
// callout (ServeCallout). ctx bounds startup only; call Shutdown to stop
// the server.
func StartEmbedded(ctx context.Context, o EmbeddedOptions) (*Embedded, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start NATS server: %w", err)
	}
	opts, err := serverOptions(o)
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configure NATS server: %w", err)
	}
	nl := newNATSLogger(log)
	srv.SetLoggerV2(nl, nl.debugEnabled(), false, false)

	srv.Start()
	if err := waitReady(ctx, srv, nl); err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("start NATS server on %s: %w", net.JoinHostPort(opts.Host, strconv.Itoa(o.Port)), err)
	}
	addr, ok := srv.Addr().(*net.TCPAddr)
	if !ok {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, errors.New("start NATS server: no TCP listener")
	}
	e := &Embedded{
		srv:         srv,
		url:         "tls://" + net.JoinHostPort(dialHost(opts.Host), strconv.Itoa(addr.Port)),
		port:        addr.Port,
		log:         log,
		serviceKeys: maps.Clone(o.ServiceKeys),
	}
	log.Info("NATS server ready", "url", e.url, "jetstream", o.StoreDir)
	return e, nil
}

func serverOptions(o EmbeddedOptions) (*server.Options, error) {
	switch {
	case len(o.ServiceKeys) == 0 && o.ServiceUser == "":
		return nil, errors.New("embedded NATS: no service keys")
	case (o.ServiceUser == "") != (o.ServicePassword == ""):
		return nil, errors.New("embedded NATS: service user and service password go together")
	case !nkeys.IsValidPublicAccountKey(o.CalloutIssuer):
		return nil, errors.New("embedded NATS: auth callout issuer is not a public account key")
	case !nkeys.IsValidPublicCurveKey(o.CalloutXKey):
		return nil, errors.New("embedded NATS: auth callout xkey is not a public curve key")
	case o.StoreDir == "":
		return nil, errors.New("embedded NATS: JetStream store directory is empty")
	case o.Port < 0 || o.Port > 65535:
		return nil, fmt.Errorf("embedded NATS: invalid port %d", o.Port)
	}
	var (
		nkeyUsers []*server.NkeyUser
		authUsers []string // exempt from the callout: the server checks them itself
	)
	for _, name := range slices.Sorted(maps.Keys(o.ServiceKeys)) {
		pub := o.ServiceKeys[name]
		perms, err := ServicePermissions(name)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: %w", err)
		}
		if !nkeys.IsValidPublicUserKey(pub) {
			return nil, fmt.Errorf("embedded NATS: key of the %s service is not a public user nkey", name)
		}
		if slices.Contains(authUsers, pub) {
			return nil, fmt.Errorf("embedded NATS: the %s service shares its key with another service", name)
		}
		nkeyUsers = append(nkeyUsers, &server.NkeyUser{Nkey: pub, Permissions: perms})
		authUsers = append(authUsers, pub)
	}
	var users []*server.User
	if o.ServiceUser != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.ServicePassword), bcryptCost)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: hash service password: %w", err)
		}
		users = append(users, &server.User{Username: o.ServiceUser, Password: string(hash), Permissions: allServicesPermissions()})
		authUsers = append(authUsers, o.ServiceUser)
	}
	tlsCfg, err := serverTLSConfig(o.PKI, o.VerifyClients)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	host := o.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := o.Port
	if port == 0 {
		port = server.RANDOM_PORT // nats-server reads 0 as its default, 4222
	}
	return &server.Options{
		Host: host,
		Port: port,
		// The embedding process owns signal handling.
		NoSigs: true,

		JetStream:              true,
		StoreDir:               o.StoreDir,
		DisableJetStreamBanner: true,

		// A TLS config without AllowNonTLS makes TLS mandatory.
		TLSConfig:  tlsCfg,
		TLSTimeout: 2,
		// Informational (monitoring); tlsCfg.ClientAuth is what enforces it.
		TLSVerify: o.VerifyClients,

		Nkeys: nkeyUsers,
		Users: users,
		// Time for the auth callout to answer: password checks are slow
		// on purpose and answered one at a time.
		AuthTimeout: authTimeout.Seconds(),
		// A client's first PING normally comes 2 s after it connects; a
		// connect still waiting for the callout's password check would read
		// that PING where it expects the reply to its CONNECT, and fail.
		DisableShortFirstPing: true,
		AuthCallout: &server.AuthCallout{
			Issuer:    o.CalloutIssuer,
			AuthUsers: authUsers,
			XKey:      o.CalloutXKey,
		},
	}, nil
}

func waitReady(ctx context.Context, srv *server.Server, nl *natsLogger) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		if err := nl.fatalErr(); err != nil {
			return err
		}
		if srv.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("not ready: %w", err)
		}
	}
}

// dialHost turns a listen address into one a client can dial and the dev
// certificate covers.
func dialHost(host string) string {
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return "127.0.0.1"
	}
	return host
}

// ClientURL is the URL clients connect to, e.g. tls://127.0.0.1:4222.
func (e *Embedded) ClientURL() string { return e.url }

// Port is the port the server listens on: the one it picked when asked
// for port 0.
func (e *Embedded) Port() int { return e.port }

// Server exposes the underlying server, e.g. for monitoring in tests.
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server, closing every connection, and waits until it
// has stopped and JetStream has flushed its state. It is safe to call more
// than once.
func (e *Embedded) Shutdown() {
	e.once.Do(func() {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
		e.log.Info("NATS server stopped")
	})
}

// InProcessConn connects service with its key through an in-memory pipe
// instead of TCP. The server skips TLS for such connections (nothing
// outside the process can reach them) but still authenticates and
// authorizes them like any other.
func (e *Embedded) InProcessConn(ctx context.Context, service string, key nkeys.KeyPair, name string) (*nats.Conn, error) {
	o := ConnOptions{URL: "inprocess://" + e.srv.ID(), Service: service, NKey: key, Name: name, Logger: e.log}
	// A key the server does not know is refused here first only to fail
	// fast: over the synchronous in-memory pipe the server's refusal
	// deadlocks with the client's handshake write until the server's 10 s
	// write deadline. The server still performs its own check. Only the
	// services connect in process: clients go through the auth callout,
	// over TLS.
	var pub string
	if key != nil {
		pub, _ = key.PublicKey()
	}
	if want, ok := e.serviceKeys[service]; !ok || pub == "" || pub != want {
		err := nats.ErrAuthorization
		return nil, &connectError{url: o.URL, reason: fmt.Sprintf("authorization violation (the server does not know this key for the %s service)", service), err: err}
	}
	return connect(ctx, o, nil, nats.InProcessServer(e.srv))
}
