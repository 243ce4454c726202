package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"

	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/services/secrets"
)

// NATSAuthFile is the file `sftd certs` writes for nats-server to include:
// the services' user with a bcrypt hash of their password and the public
// keys of the auth callout, so no secret sits in the checked-in server
// configuration.
const NATSAuthFile = "nats-auth.conf"

func (d *daemon) certsCmd() *cobra.Command {
	var hosts []string
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Create what a deployment needs: a CA, the NATS server certificate, the services' keys and NATS password",
		Long: "Creates (or keeps, when present and valid) under --data-dir:\n" +
			"  pki/      ca.pem, ca-key.pem, server.pem, server-key.pem (SANs: localhost, 127.0.0.1, ::1, --host ...)\n" +
			"  secrets/  token-signing.pem, token-signing.pub.pem, login-seal.key, key-encryption.key,\n" +
			"            nats-service.password, nats-callout.nk, nats-callout.xk,\n" +
			"            " + NATSAuthFile + " (for nats-server's include)",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			sans := append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
			pki, err := broker.EnsurePKI(filepath.Join(d.cfg.DataDir, "pki"), sans)
			if err != nil {
				return err
			}
			dir := d.cfg.SecretsPath()
			sec, err := secrets.Ensure(dir)
			if err != nil {
				return err
			}
			issuer, xkey, err := sec.Callout.Public()
			if err != nil {
				return err
			}
			if err := writeNATSAuth(filepath.Join(dir, NATSAuthFile), natsAuth{user: d.cfg.NATS.User, password: sec.ServicePassword, issuer: issuer, xkey: xkey}); err != nil {
				return err
			}
			fmt.Fprintf(d.io.Out, "CA:          %s\nNATS server: %s, %s\nsecrets:     %s\n", pki.CAFile, pki.CertFile, pki.KeyFile, dir)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&hosts, "host", nil, "more names or addresses for the NATS server certificate (repeatable)")
	return cmd
}

// natsAuth is what nats-auth.conf says.
type natsAuth struct {
	user, password string // the password in clear here, a bcrypt hash in the file
	issuer, xkey   string // auth callout public keys
}

// writeNATSAuth writes the services' NATS credentials and the auth callout
// keys as a nats-server configuration fragment, replacing an older one
// only if it changed.
func writeNATSAuth(path string, a natsAuth) error {
	if old, err := os.ReadFile(path); err == nil {
		if o, h, ok := parseNATSAuth(old); ok && o.user == a.user && o.issuer == a.issuer && o.xkey == a.xkey &&
			bcrypt.CompareHashAndPassword([]byte(h), []byte(a.password)) == nil {
			return nil
		}
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(a.password), serviceHashCost)
	if err != nil {
		return err
	}
	body := fmt.Sprintf("# Written by `sftd certs`: the services' NATS user and the auth callout's public keys. Do not edit.\n"+
		"SFT_SERVICE_USER: %q\nSFT_SERVICE_PASSWORD: %q\nSFT_CALLOUT_ISSUER: %q\nSFT_CALLOUT_XKEY: %q\n", a.user, hash, a.issuer, a.xkey)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

func parseNATSAuth(b []byte) (a natsAuth, hash string, ok bool) {
	for _, line := range strings.Split(string(b), "\n") {
		var v string
		for _, f := range []struct {
			format string
			dst    *string
		}{
			{"SFT_SERVICE_USER: %q", &a.user},
			{"SFT_SERVICE_PASSWORD: %q", &hash},
			{"SFT_CALLOUT_ISSUER: %q", &a.issuer},
			{"SFT_CALLOUT_XKEY: %q", &a.xkey},
		} {
			if n, _ := fmt.Sscanf(line, f.format, &v); n == 1 {
				*f.dst = v
			}
		}
	}
	return a, hash, a.user != "" && hash != "" && a.issuer != "" && a.xkey != ""
}

// serviceHashCost is low on purpose: the password is 256 random bits, which
// no work factor makes harder to guess, while a costly hash runs on every
// service connect and, on a loaded server, can outlast the client's wait
// for the connect's reply.
const serviceHashCost = bcrypt.MinCost
