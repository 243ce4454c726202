package broker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/sftproject/sft/api"
)

// Each service identity reaches its own subjects only, on real
// connections: what the broker enforces, not what the code means to do.
func TestServiceIdentities(t *testing.T) {
	b := startBroker(t)
	tests := []struct {
		who, op, subject string
		allowed          bool
	}{
		{ServiceAuth, "sub", api.SubjectAuthLogin, true},
		{ServiceAuth, "sub", server.AuthCalloutSubject, true},
		{ServiceAuth, "sub", ServiceInbox(ServiceAuth) + ".x", true},
		{ServiceAuth, "sub", "$SRV.PING", true},
		{ServiceAuth, "pub", "$KV." + UsersBucket + ".alice", true},
		{ServiceAuth, "pub", "$KV." + RevokedTokensBucket + ".id", true},
		{ServiceAuth, "sub", api.Prefix + ".session.>", false},
		{ServiceAuth, "sub", api.Prefix + ".key.>", false},
		{ServiceAuth, "sub", ServiceInbox(ServiceSession) + ".>", false},
		{ServiceAuth, "sub", ServiceInboxPrefix + ".>", false},
		{ServiceAuth, "sub", "_INBOX.>", false},
		{ServiceAuth, "pub", "_INBOX.alice.x", false},
		{ServiceAuth, "pub", api.EventSubject("s1", "created"), false},
		{ServiceAuth, "pub", "$KV." + SessionsBucket + ".s.x", false},
		{ServiceAuth, "pub", "$JS.API.DIRECT.GET." + kvStream(KeysBucket) + ".$KV." + KeysBucket + ".s1", false},

		{ServiceSession, "sub", api.SubjectSessionCreate, true},
		{ServiceSession, "pub", "_INBOX.alice.x", true},
		{ServiceSession, "pub", api.EventSubject("s1", "created"), true},
		{ServiceSession, "pub", "$KV." + SessionsBucket + ".s.x", true},
		{ServiceSession, "sub", api.Prefix + ".key.>", false},
		{ServiceSession, "sub", api.SubjectKeyGet, false},
		{ServiceSession, "sub", api.Prefix + ".auth.>", false},
		{ServiceSession, "sub", server.AuthCalloutSubject, false},
		{ServiceSession, "sub", "$KV." + KeysBucket + ".>", false},
		{ServiceSession, "sub", ServiceInbox(ServiceKey) + ".>", false},
		{ServiceSession, "pub", "$KV." + KeysBucket + ".s1", false},
		{ServiceSession, "pub", "$KV." + UsersBucket + ".alice", false},
		{ServiceSession, "pub", "$JS.API.DIRECT.GET." + kvStream(KeysBucket) + ".$KV." + KeysBucket + ".s1", false},
		{ServiceSession, "pub", "$JS.API.STREAM.MSG.GET." + kvStream(KeysBucket), false},
		{ServiceSession, "pub", "$JS.API.CONSUMER.CREATE." + kvStream(KeysBucket), false},
		{ServiceSession, "pub", "$JS.API.STREAM.PURGE." + kvStream(KeysBucket), false},
		{ServiceSession, "pub", "$JS.API.STREAM.DELETE." + kvStream(KeysBucket), false},
		{ServiceSession, "pub", api.SubjectKeyGet, false},

		{ServiceKey, "sub", api.SubjectKeyGet, true},
		{ServiceKey, "pub", api.SubjectSessionGet, true},
		{ServiceKey, "pub", "$KV." + KeysBucket + ".s1", true},
		{ServiceKey, "sub", api.Prefix + ".auth.>", false},
		{ServiceKey, "sub", api.SubjectAuthLogin, false},
		{ServiceKey, "sub", server.AuthCalloutSubject, false},
		{ServiceKey, "sub", api.Prefix + ".session.>", false},
		{ServiceKey, "pub", api.SubjectSessionCreate, false},
		{ServiceKey, "pub", "_INBOX.alice.x", false},
		{ServiceKey, "pub", api.EventSubject("s1", "completed"), false},
		{ServiceKey, "pub", "$KV." + SessionsBucket + ".s.x", false},
		{ServiceKey, "pub", "$JS.API.CONSUMER.CREATE." + api.EventStream + ".watcher", false},
	}
	for _, tc := range tests {
		t.Run(tc.who+" "+tc.op+" "+tc.subject, func(t *testing.T) {
			nc := b.serviceAs(t, tc.who) // fresh: LastError is per connection
			var err error
			if tc.op == "sub" {
				_, err = nc.QueueSubscribeSync(tc.subject, api.QueueGroup)
			} else {
				err = nc.Publish(tc.subject, []byte("{}"))
			}
			if err != nil {
				t.Fatal(err)
			}
			err = permissionError(t, nc)
			switch {
			case tc.allowed && err != nil:
				t.Errorf("refused: %v", err)
			case !tc.allowed && err == nil:
				t.Error("allowed")
			}
		})
	}
}

// The session identity can learn that the key bucket exists (opening the
// store binds every bucket) but can neither read nor list nor change it.
func TestSessionCannotReadKeys(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	keyJS, err := jetstream.New(b.serviceAs(t, ServiceKey))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := keyJS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: KeysBucket})
	if err != nil {
		t.Fatalf("key service creates its bucket: %v", err)
	}
	if _, err := kv.Put(ctx, "s1", []byte("sealed-key")); err != nil {
		t.Fatalf("key service writes its bucket: %v", err)
	}
	if e, err := kv.Get(ctx, "s1"); err != nil || string(e.Value()) != "sealed-key" {
		t.Fatalf("key service reads its bucket: %v", err)
	}

	for name, try := range map[string]func(jetstream.KeyValue, context.Context) error{
		"get": func(kv jetstream.KeyValue, ctx context.Context) error { _, err := kv.Get(ctx, "s1"); return err },
		"list": func(kv jetstream.KeyValue, ctx context.Context) error {
			_, err := kv.ListKeys(ctx)
			return err
		},
		"put": func(kv jetstream.KeyValue, ctx context.Context) error {
			_, err := kv.Put(ctx, "s1", []byte("x"))
			return err
		},
		"delete": func(kv jetstream.KeyValue, ctx context.Context) error { return kv.Delete(ctx, "s1") },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // each waits out a deadline
			nc := b.serviceAs(t, ServiceSession)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			skv, err := js.KeyValue(ctx, KeysBucket)
			if err != nil {
				t.Fatalf("binding the bucket: %v", err)
			}
			// A refused request has no answer: only the deadline ends it.
			tctx, tcancel := context.WithTimeout(ctx, 2*time.Second)
			defer tcancel()
			if err := try(skv, tctx); err == nil {
				t.Fatal("the session identity reached the key bucket")
			}
			if err := permissionError(t, nc); err == nil {
				t.Error("no permissions violation reported")
			}
		})
	}
	t.Cleanup(func() {
		if e, err := kv.Get(context.Background(), "s1"); err != nil || string(e.Value()) != "sealed-key" {
			t.Errorf("the key is no longer intact: %v", err)
		}
	})
}

// Only the auth identity may answer the auth callout: on another
// service's connection the subscription is refused, so it never sees a
// connecting client's credentials.
func TestOnlyAuthAnswersCallout(t *testing.T) {
	b := startBroker(t)
	for _, svc := range []string{ServiceSession, ServiceKey} {
		t.Run(svc, func(t *testing.T) {
			nc := b.serviceAs(t, svc)
			if _, err := ServeCallout(t.Context(), nc, b.keys, testAuthorize, nil); err != nil {
				t.Fatal(err)
			}
			if err := permissionError(t, nc); err == nil || !strings.Contains(err.Error(), server.AuthCalloutSubject) {
				t.Errorf("want a subscription violation for %s, got %v", server.AuthCalloutSubject, err)
			}
		})
	}
}

// A service is its key. A client presenting another key, or a service's
// name with a password, is not one.
func TestServiceKeyRequired(t *testing.T) {
	b := startBroker(t)
	stranger, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]ConnOptions{
		"unknown user key":      {Service: ServiceAuth, NKey: stranger},
		"an account key":        {Service: ServiceAuth, NKey: account},
		"service name, no key":  {User: ServiceAuth, Password: "x"},
		"nkey name as the user": {User: mustPublic(t, b.svcKeys[ServiceAuth]), Password: "x"},
	} {
		t.Run(name, func(t *testing.T) {
			o.URL, o.CAFile = b.ClientURL(), b.pki.CAFile
			nc, err := Connect(t.Context(), o)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Errorf("error %v, want an authorization violation", err)
			}
		})
	}
}

func mustPublic(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// The all-services password user exists only when asked for, with the
// union of the services' permissions.
func TestAllServicesUser(t *testing.T) {
	p, err := EnsureDevPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, err := StartEmbedded(t.Context(), newCalloutKeys(t).options(t, EmbeddedOptions{
		StoreDir: t.TempDir(), PKI: p, ServiceUser: "svc", ServicePassword: "pw-svc",
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	nc, err := Connect(t.Context(), ConnOptions{URL: e.ClientURL(), CAFile: p.CAFile, User: "svc", Password: "pw-svc"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, s := range []string{api.SubjectAuthLogin, api.SubjectSessionCreate, api.SubjectKeyGet, server.AuthCalloutSubject, ServiceInboxPrefix + ".x"} {
		if _, err := nc.SubscribeSync(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := permissionError(t, nc); err != nil {
		t.Errorf("the all-services user was refused: %v", err)
	}
	if _, err := nc.SubscribeSync("$SYS.>"); err != nil {
		t.Fatal(err)
	}
	if err := permissionError(t, nc); err == nil {
		t.Error("the all-services user may subscribe to $SYS.>")
	}
}
