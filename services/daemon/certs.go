package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/services/secrets"
)

// NATSAuthFile is the file `sftd certs` writes for nats-server to include:
// the public keys of the services' NATS identities and of the auth
// callout, so the checked-in server configuration holds no key of this
// installation (and nothing in it is secret).
const NATSAuthFile = "nats-auth.conf"

func (d *daemon) certsCmd() *cobra.Command {
	var hosts []string
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Create what a deployment needs: a CA, the NATS server certificate, the services' keys and NATS identities",
		Long: "Creates (or keeps, when present and valid) under --data-dir:\n" +
			"  pki/      ca.pem, ca-key.pem, server.pem, server-key.pem (SANs: localhost, 127.0.0.1, ::1, --host ...)\n" +
			"  secrets/  token-signing.pem, token-signing.pub.pem, login-seal.key, key-encryption.key,\n" +
			"            nats-service-auth.nk, nats-service-session.nk, nats-service-key.nk (each service's NATS identity),\n" +
			"            nats-callout.nk, nats-callout.xk,\n" +
			"            " + NATSAuthFile + " (their public keys, for nats-server's include)",
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
			services, err := sec.ServicePublicKeys()
			if err != nil {
				return err
			}
			if err := writeNATSAuth(filepath.Join(dir, NATSAuthFile), natsAuthConf(services, issuer, xkey)); err != nil {
				return err
			}
			fmt.Fprintf(d.io.Out, "CA:          %s\nNATS server: %s, %s\nsecrets:     %s\n", pki.CAFile, pki.CertFile, pki.KeyFile, dir)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&hosts, "host", nil, "more names or addresses for the NATS server certificate (repeatable)")
	return cmd
}

// NATSKeyVariable is the variable of nats-auth.conf that holds service's
// public nkey, e.g. SFT_AUTH_NKEY; deploy/nats-server.conf refers to it.
func NATSKeyVariable(service string) string { return "SFT_" + strings.ToUpper(service) + "_NKEY" }

// natsAuthConf is the content of nats-auth.conf.
func natsAuthConf(services map[string]string, issuer, xkey string) string {
	var b strings.Builder
	b.WriteString("# Written by `sftd certs`: public keys of the services' NATS identities and of the auth callout. Do not edit.\n")
	for _, name := range broker.Services() {
		fmt.Fprintf(&b, "%s: %q\n", NATSKeyVariable(name), services[name])
	}
	fmt.Fprintf(&b, "SFT_CALLOUT_ISSUER: %q\nSFT_CALLOUT_XKEY: %q\n", issuer, xkey)
	return b.String()
}

// writeNATSAuth writes body to path, replacing an older file only if it
// changed, so a second `sftd certs` leaves a running deployment's files
// alone.
func writeNATSAuth(path, body string) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == body {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}
