package broker

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/sftproject/sft/api"
)

// Every connection that is not the service user's goes through the
// callout, and only what it accepts gets in.
func TestCalloutRefuses(t *testing.T) {
	b := startBroker(t)
	for _, tc := range []struct {
		name string
		o    ConnOptions
	}{
		{"no credentials", ConnOptions{}},
		{"unknown token", ConnOptions{Token: "tok-mallory", InboxPrefix: api.InboxPrefix("mallory")}},
		{"wrong password", ConnOptions{User: "alice", Password: "guess", InboxPrefix: api.InboxPrefix("alice")}},
		{"user without password", ConnOptions{User: "alice", InboxPrefix: api.InboxPrefix("alice")}},
		// The services are auth_users: their keys are checked by the
		// server, a client's credentials do not make one a service.
		{"service name, client password", ConnOptions{User: ServiceAuth, Password: alicePassword}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.URL, o.CAFile = b.ClientURL(), b.pki.CAFile
			nc, err := Connect(t.Context(), o)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), "authorization violation") {
				t.Errorf("error %q, want an authorization violation", err)
			}
			for _, secret := range []string{o.Password, o.Token} {
				if secret != "" && strings.Contains(err.Error(), secret) {
					t.Error("error contains the credential")
				}
			}
		})
	}
}

// A password connection may ask for the auth keys and log in, nothing else.
func TestLoginPermissions(t *testing.T) {
	b := startBroker(t)
	for _, tc := range []struct {
		op, subject string
		allowed     bool
	}{
		{"pub", api.SubjectAuthInfo, true},
		{"pub", api.SubjectAuthLogin, true},
		{"sub", "_INBOX.alice.x", true},
		{"pub", api.SubjectAuthLogout, false},
		{"pub", api.SubjectSessionCreate, false},
		{"pub", api.SubjectKeyGet, false},
		{"sub", "_INBOX.bob.x", false},
		{"sub", api.AllEvents, false},
	} {
		t.Run(tc.op+" "+tc.subject, func(t *testing.T) {
			nc := b.clientWith(t, ConnOptions{User: "alice", Password: alicePassword, InboxPrefix: api.InboxPrefix("alice")})
			var err error
			if tc.op == "sub" {
				_, err = nc.SubscribeSync(tc.subject)
			} else {
				err = nc.Publish(tc.subject, []byte("{}"))
			}
			if err != nil {
				t.Fatal(err)
			}
			err = permissionError(t, nc)
			if tc.allowed != (err == nil) {
				t.Errorf("allowed %v, want %v (%v)", err == nil, tc.allowed, err)
			}
		})
	}
}

// Two users' inboxes are apart: bob cannot hear a reply sent to alice.
func TestInboxesApart(t *testing.T) {
	b := startBroker(t)
	alice := b.client(t)
	bob := b.clientWith(t, ConnOptions{Token: bobToken, InboxPrefix: api.InboxPrefix("bob")})
	if _, err := bob.SubscribeSync(alice.NewInbox()); err != nil {
		t.Fatal(err)
	}
	if err := permissionError(t, bob); err == nil {
		t.Fatal("bob subscribed to alice's inbox")
	}
	if !strings.HasPrefix(alice.NewInbox(), "_INBOX.alice.") {
		t.Errorf("alice's inbox %q is not under her prefix", alice.NewInbox())
	}
}

// answerCallout answers only a request the server made: encrypted to the
// callout's xkey and signed by the server named in it.
func TestCalloutRequestChecks(t *testing.T) {
	keys := newCalloutKeys(t)
	xpub, err := keys.XKey.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	srvKP, err := nkeys.CreateServer()
	if err != nil {
		t.Fatal(err)
	}
	srvID, _ := srvKP.PublicKey()
	srvX, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	srvXPub, _ := srvX.PublicKey()
	userKP, _ := nkeys.CreateUser()
	userPub, _ := userKP.PublicKey()
	otherSrv, _ := nkeys.CreateServer()

	request := func(signer nkeys.KeyPair, change func(*jwt.AuthorizationRequestClaims)) *nats.Msg {
		c := jwt.NewAuthorizationRequestClaims("callout")
		c.Audience = server.AuthRequestSubject
		c.UserNkey = userPub
		c.Server = jwt.ServerID{ID: srvID, XKey: srvXPub}
		c.ConnectOptions.Token = aliceToken
		if change != nil {
			change(c)
		}
		signed, err := c.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := srvX.Seal([]byte(signed), xpub)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(server.AuthCalloutSubject)
		m.Header.Set(server.AuthRequestXKeyHeader, srvXPub)
		m.Data = sealed
		return m
	}
	answer := func(m *nats.Msg) (*jwt.AuthorizationResponseClaims, error) {
		b, err := answerCallout(t.Context(), keys, testAuthorize, m, slog.New(slog.DiscardHandler))
		if err != nil {
			return nil, err
		}
		plain, err := srvX.Open(b, xpub)
		if err != nil {
			t.Fatalf("answer not sealed to the server: %v", err)
		}
		return jwt.DecodeAuthorizationResponseClaims(string(plain))
	}

	rc, err := answer(request(srvKP, nil))
	if err != nil {
		t.Fatalf("the server's own request: %v", err)
	}
	iss, _ := keys.Issuer.PublicKey()
	if rc.Issuer != iss || rc.Audience != srvID || rc.Subject != userPub || rc.Error != "" {
		t.Fatalf("answer %+v", rc)
	}
	uc, err := jwt.DecodeUserClaims(rc.Jwt)
	if err != nil {
		t.Fatal(err)
	}
	if uc.Name != "alice" || uc.Subject != userPub || uc.Audience != server.DEFAULT_GLOBAL_ACCOUNT || uc.Expires == 0 {
		t.Errorf("user claims %+v", uc)
	}

	badToken := request(srvKP, func(c *jwt.AuthorizationRequestClaims) { c.ConnectOptions.Token = "forged" })
	if rc, err := answer(badToken); err != nil || rc.Error == "" || rc.Jwt != "" {
		t.Errorf("a refused connection: answer %+v, %v; want a signed refusal", rc, err)
	}

	for name, m := range map[string]*nats.Msg{
		"signed by another server": request(otherSrv, nil),
		"wrong audience":           request(srvKP, func(c *jwt.AuthorizationRequestClaims) { c.Audience = "elsewhere" }),
		"no user key":              request(srvKP, func(c *jwt.AuthorizationRequestClaims) { c.UserNkey = "" }),
		"other xkey signed":        request(srvKP, func(c *jwt.AuthorizationRequestClaims) { c.Server.XKey = xpub }),
		"not encrypted": func() *nats.Msg {
			m := request(srvKP, nil)
			m.Header.Del(server.AuthRequestXKeyHeader)
			return m
		}(),
		"garbage": {Subject: server.AuthCalloutSubject, Header: nats.Header{server.AuthRequestXKeyHeader: {srvXPub}}, Data: []byte("x")},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := answerCallout(t.Context(), keys, testAuthorize, m, slog.New(slog.DiscardHandler)); err == nil {
				t.Fatal("answered")
			}
		})
	}
}

func TestParseCalloutKeys(t *testing.T) {
	k := newCalloutKeys(t)
	is, _ := k.Issuer.Seed()
	xs, _ := k.XKey.Seed()
	if _, err := ParseCalloutKeys(is, xs); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseCalloutKeys(xs, xs); err == nil {
		t.Error("a curve seed accepted as the issuer")
	}
	if _, err := ParseCalloutKeys(is, is); err == nil {
		t.Error("an account seed accepted as the xkey")
	}
	user, _ := nkeys.CreateUser()
	us, _ := user.Seed()
	if _, err := ParseCalloutKeys(us, xs); err == nil {
		t.Error("a user seed accepted as the issuer")
	}
}
