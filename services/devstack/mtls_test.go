package devstack_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/devstack/devstacktest"
	"github.com/sftproject/sft/services/launch"
	"github.com/sftproject/sft/services/secrets"
)

// sftCLI runs sft-cli with env to its end.
func sftCLI(ctx context.Context, env []string, args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	err := cli.Run(ctx, cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb}, args, env)
	return out.String(), errb.String(), err
}

// TestVerifyClients runs the stack with nats.verify_clients: a service
// replica over TLS with its own certificate serves requests, sft-cli with
// a certificate of the CA transfers a file, and connections without a
// certificate, with another CA's, or with a valid certificate and bad
// credentials are refused.
func TestVerifyClients(t *testing.T) {
	h := devstacktest.Start(t, func(c *config.Config) { c.NATS.VerifyClients = true })
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	// An extra session replica over TLS, as `sftd session` would run,
	// with the session service's key and certificate.
	nc := h.ServiceConnAs(broker.ServiceSession)
	log := slog.New(slog.DiscardHandler)
	st, err := launch.OpenStore(ctx, h.Cfg, nc, log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svcCtx, stopSvc := context.WithCancel(context.Background())
	replica, err := launch.Session(svcCtx, h.Cfg, nc, st, log, nil)
	if err != nil {
		t.Fatalf("session replica over mTLS: %v", err)
	}
	defer func() { replica.Stop(); stopSvc(); replica.Wait() }()
	alice := h.Login("alice")
	served := func() (n int) {
		for _, ep := range replica.Service.Stats().Endpoints {
			n += ep.NumRequests
		}
		return n
	}
	// The queue group spreads requests over the replicas at random.
	for i := 0; served() == 0; i++ {
		if i == 200 {
			t.Fatal("the replica over mTLS served none of 200 requests")
		}
		if _, err := alice.List(ctx, ""); err != nil {
			t.Fatal(err)
		}
	}

	// sft-cli, with the certificate in its environment, end to end.
	src := filepath.Join(t.TempDir(), "report.bin")
	data := make([]byte, 1<<20)
	if _, err := io.ReadFull(rand.Reader, data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	aliceEnv, bobEnv := h.Env("alice"), h.Env("bob")
	if !slices.Contains(aliceEnv, "SFT_NATS_CERT_FILE="+h.Cfg.NATS.CertFile) || h.Cfg.NATS.CertFile == "" {
		t.Fatalf("the harness gives sft-cli no certificate: %v", aliceEnv)
	}
	for _, env := range [][]string{aliceEnv, bobEnv} {
		if _, errOut, err := sftCLI(ctx, env, "login"); err != nil {
			t.Fatalf("sft-cli login: %v\n%s", err, errOut)
		}
	}
	type result struct {
		errOut string
		err    error
	}
	sent := make(chan result, 1)
	go func() {
		_, errOut, err := sftCLI(ctx, aliceEnv, "send", src, "--to", "bob")
		sent <- result{errOut, err}
	}()
	bob := h.Login("bob")
	for {
		waiting, err := bob.List(ctx, api.StateWaiting)
		if err != nil {
			t.Fatal(err)
		}
		if len(waiting) > 0 {
			break
		}
		select {
		case r := <-sent:
			t.Fatalf("send ended before bob could receive: %v\n%s", r.err, r.errOut)
		case <-time.After(20 * time.Millisecond):
		}
	}
	outDir := t.TempDir()
	if out, errOut, err := sftCLI(ctx, bobEnv, "recv", "-o", outDir); err != nil || !strings.Contains(out, "verified") {
		t.Fatalf("sft-cli recv: %v\n%s%s", err, out, errOut)
	}
	if r := <-sent; r.err != nil {
		t.Fatalf("sft-cli send: %v\n%s", r.err, r.errOut)
	}
	got, err := os.ReadFile(filepath.Join(outDir, "report.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("received file differs (%v)", err)
	}

	// Refused: without a certificate already in the TLS handshake; with
	// one, by the NATS credentials, which mTLS never replaces.
	otherCA := t.TempDir()
	if _, err := broker.EnsureDevPKI(otherCA); err != nil {
		t.Fatal(err)
	}
	foreignCert, foreignKey := filepath.Join(otherCA, "c.crt"), filepath.Join(otherCA, "c.key")
	if err := broker.EnsureClientCert(otherCA, "test-client", foreignCert, foreignKey); err != nil {
		t.Fatal(err)
	}
	noCert := h.ConnOptions()
	noCert.CertFile, noCert.KeyFile = "", ""
	foreign := h.ConnOptions()
	foreign.CertFile, foreign.KeyFile = foreignCert, foreignKey
	for _, tc := range []struct {
		name string
		dial func() error
		want string
	}{
		{"token without a certificate", func() error {
			nc, err := client.DialToken(ctx, noCert, "alice", alice.Token())
			if err == nil {
				nc.Close()
			}
			return err
		}, "requires a client certificate"},
		{"login without a certificate", func() error {
			_, _, err := client.LogIn(ctx, noCert, "alice", devstacktest.Password("alice"))
			return err
		}, "requires a client certificate"},
		{"token with another CA's certificate", func() error {
			nc, err := client.DialToken(ctx, foreign, "alice", alice.Token())
			if err == nil {
				nc.Close()
			}
			return err
		}, "rejected the tls handshake"},
		{"certificate and forged token", func() error {
			nc, err := client.DialToken(ctx, h.ConnOptions(), "alice", alice.Token()[:len(alice.Token())-4]+"AAAA")
			if err == nil {
				nc.Close()
			}
			return err
		}, "the login token is expired, revoked or not for this server"},
		{"certificate and wrong password", func() error {
			_, _, err := client.LogIn(ctx, h.ConnOptions(), "alice", "guess")
			return err
		}, "unauthorized"},
		{"certificate and an unknown service key", func() error {
			o := h.ConnOptions()
			o.Service, o.NKey = broker.ServiceAuth, mustUserKey(t)
			nc, err := broker.Connect(ctx, o)
			if err == nil {
				nc.Close()
			}
			return err
		}, "authorization violation"},
		{"sft-cli without a certificate", func() error {
			env := slices.DeleteFunc(slices.Clone(aliceEnv), func(kv string) bool {
				return strings.HasPrefix(kv, "SFT_NATS_CERT_FILE=") || strings.HasPrefix(kv, "SFT_NATS_KEY_FILE=")
			})
			_, _, err := sftCLI(ctx, env, "login")
			return err
		}, "requires a client certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.dial()
			if err == nil {
				t.Fatal("connected")
			}
			if !strings.Contains(strings.ToLower(err.Error()), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
		})
	}
}

// TestVerifyClientsOff: by default nothing asks for a certificate: the
// harness makes none, the stack makes no service certificates, and
// sft-cli logs in and works without one.
func TestVerifyClientsOff(t *testing.T) {
	h := devstacktest.Start(t, nil)
	if h.Cfg.NATS.VerifyClients || h.Cfg.NATS.CertFile != "" {
		t.Fatalf("nats = %+v, want no mTLS by default", h.Cfg.NATS)
	}
	for _, svc := range broker.Services() {
		if _, err := os.Stat(filepath.Join(h.Cfg.SecretsPath(), secrets.ServiceCertFile(svc))); err == nil {
			t.Errorf("the stack made a certificate for %s without verify_clients", svc)
		}
	}
	env := h.Env("alice")
	for _, kv := range env {
		if strings.HasPrefix(kv, "SFT_NATS_CERT_FILE=") {
			t.Fatalf("sft-cli gets a certificate: %s", kv)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, errOut, err := sftCLI(ctx, env, "login"); err != nil {
		t.Fatalf("sft-cli login without a certificate: %v\n%s", err, errOut)
	}
	if _, errOut, err := sftCLI(ctx, env, "ls"); err != nil {
		t.Fatalf("sft-cli ls without a certificate: %v\n%s", err, errOut)
	}
	// A service replica without a certificate connects as before.
	if nc := h.ServiceConnAs(broker.ServiceKey); !nc.IsConnected() {
		t.Error("service connection without a certificate is not connected")
	}
}

func mustUserKey(t *testing.T) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}
