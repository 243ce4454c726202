package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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

// ClientsDir is the directory under the data directory where `sftd certs
// --client NAME` writes NAME.crt and NAME.key.
const ClientsDir = "clients"

// clientNameRE is what a --client name may look like: it names files and
// goes into the certificate's subject.
var clientNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

func (d *daemon) certsCmd() *cobra.Command {
	var hosts, clients []string
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Create what a deployment needs: a CA, the NATS server certificate, the services' keys, NATS identities and client certificates",
		Long: "Creates (or keeps, when present and valid) under --data-dir:\n" +
			"  pki/      ca.pem, ca-key.pem, server.pem, server-key.pem (SANs: localhost, 127.0.0.1, ::1, --host ...)\n" +
			"  secrets/  token-signing.pem, token-signing.pub.pem, login-seal.key, key-encryption.key,\n" +
			"            relay-ticket.pem, relay-ticket.pub.pem (the session service signs relay tickets, the relay checks them),\n" +
			"            nats-service-auth.nk, nats-service-session.nk, nats-service-key.nk (each service's NATS identity),\n" +
			"            nats-service-auth.crt/.key, nats-service-session.crt/.key, nats-service-key.crt/.key\n" +
			"            (each service's client certificate, for a broker that verifies clients: mTLS),\n" +
			"            nats-callout.nk, nats-callout.xk,\n" +
			"            " + NATSAuthFile + " (their public keys, for nats-server's include)\n" +
			"  " + ClientsDir + "/  NAME.crt, NAME.key for each --client NAME: a client certificate for a user's sft-cli\n" +
			"            (set nats.cert_file and nats.key_file, or SFT_NATS_CERT_FILE and SFT_NATS_KEY_FILE, to them)",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			for _, name := range clients {
				if !clientNameRE.MatchString(name) {
					return fmt.Errorf("client name %q: use 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", name)
				}
			}
			pkiDir := filepath.Join(d.cfg.DataDir, "pki")
			pki, err := broker.EnsureDevPKI(pkiDir, hosts...)
			if err != nil {
				return err
			}
			dir := d.cfg.SecretsPath()
			sec, err := secrets.Ensure(dir)
			if err != nil {
				return err
			}
			if err := secrets.EnsureServiceCerts(dir, pkiDir); err != nil {
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
			for _, name := range clients {
				cert, key := ClientCertFiles(d.cfg.DataDir, name)
				if err := broker.EnsureClientCert(pkiDir, name, cert, key); err != nil {
					return err
				}
				fmt.Fprintf(d.io.Out, "client %s:   SFT_NATS_CERT_FILE=%s SFT_NATS_KEY_FILE=%s\n", name, cert, key)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&hosts, "host", nil, "more names or addresses for the NATS server certificate (repeatable)")
	cmd.Flags().StringArrayVar(&clients, "client", nil, "also issue a client certificate for a user's sft-cli, named NAME (repeatable)")
	return cmd
}

// ClientCertFiles are the certificate and key `sftd certs --client name`
// writes under dataDir.
func ClientCertFiles(dataDir, name string) (cert, key string) {
	dir := filepath.Join(dataDir, ClientsDir)
	return filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
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
