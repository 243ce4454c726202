package daemon_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/services/daemon"
	"github.com/sftproject/sft/services/secrets"
)

// TestDevVerifyClients runs `sftd dev` with nats.verify_clients: `sftd
// user` (the auth service's identity) and sft-cli users need a
// certificate of the CA on top of their credentials, and get nowhere
// without one.
func TestDevVerifyClients(t *testing.T) {
	in := newInstall(t)
	in.env = append(in.env, "SFT_NATS_VERIFY_CLIENTS=true")
	if _, err := in.sftd("", nil, "certs", "--client", "dave"); err != nil {
		t.Fatal(err)
	}
	d := in.startDev()
	if !strings.Contains(d.out.String(), "clients must present a certificate of this CA") {
		t.Errorf("sftd dev does not say that clients need a certificate:\n%s", d.out.String())
	}
	srv := in.serverEnv(d)
	secretsDir := filepath.Join(in.dataDir, "secrets")
	authCert := []string{
		"SFT_NATS_CERT_FILE=" + filepath.Join(secretsDir, secrets.ServiceCertFile(broker.ServiceAuth)),
		"SFT_NATS_KEY_FILE=" + filepath.Join(secretsDir, secrets.ServiceCertKeyFile(broker.ServiceAuth)),
	}

	_, err := in.sftd("pw-dave\n", srv, "user", "add", "dave")
	if err == nil || !strings.Contains(err.Error(), "requires a client certificate") {
		t.Fatalf("user add without a certificate: %v, want a refusal that asks for one", err)
	}
	if _, err := in.sftd("pw-dave\n", append(srv, authCert...), "user", "add", "dave"); err != nil {
		t.Fatalf("user add with the auth service's certificate: %v", err)
	}

	cert, key := daemon.ClientCertFiles(in.dataDir, "dave")
	o := broker.ConnOptions{URL: d.url, CAFile: filepath.Join(in.dataDir, "pki", "ca.pem")}
	if _, _, err := client.LogIn(testCtx(t), o, "dave", "pw-dave"); err == nil || !strings.Contains(err.Error(), "requires a client certificate") {
		t.Errorf("login without a certificate: %v, want a refusal that asks for one", err)
	}
	o.CertFile, o.KeyFile = cert, key
	if _, _, err := client.LogIn(testCtx(t), o, "dave", "wrong"); err == nil {
		t.Error("login with a certificate and a wrong password succeeded")
	}
	c, _, err := client.LogIn(testCtx(t), o, "dave", "pw-dave")
	if err != nil {
		t.Fatalf("login with dave's certificate: %v", err)
	}
	defer c.Conn().Close()
	if _, err := c.List(testCtx(t), ""); err != nil {
		t.Errorf("a request with dave's certificate and token: %v", err)
	}
}
