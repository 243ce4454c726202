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
// the services' user with a bcrypt hash of their password, so no secret
// sits in the checked-in server configuration.
const NATSAuthFile = "nats-auth.conf"

func (d *daemon) certsCmd() *cobra.Command {
	var hosts []string
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Create what a deployment needs: a CA, the NATS server certificate, the services' keys and NATS password",
		Long: "Creates (or keeps, when present and valid) under --data-dir:\n" +
			"  pki/      ca.pem, ca-key.pem, server.pem, server-key.pem (SANs: localhost, 127.0.0.1, ::1, --host ...)\n" +
			"  secrets/  token-signing.pem, token-signing.pub.pem, login-seal.key, key-encryption.key,\n" +
			"            nats-service.password, " + NATSAuthFile + " (for nats-server's include)",
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
			if err := writeNATSAuth(filepath.Join(dir, NATSAuthFile), d.cfg.NATS.User, sec.ServicePassword); err != nil {
				return err
			}
			fmt.Fprintf(d.io.Out, "CA:          %s\nNATS server: %s, %s\nsecrets:     %s\n", pki.CAFile, pki.CertFile, pki.KeyFile, dir)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&hosts, "host", nil, "more names or addresses for the NATS server certificate (repeatable)")
	return cmd
}

// writeNATSAuth writes the services' NATS credentials as a nats-server
// configuration fragment, replacing an older one only if it changed.
func writeNATSAuth(path, user, password string) error {
	if old, err := os.ReadFile(path); err == nil {
		if u, h, ok := parseNATSAuth(old); ok && u == user && bcrypt.CompareHashAndPassword([]byte(h), []byte(password)) == nil {
			return nil
		}
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), 11)
	if err != nil {
		return err
	}
	body := fmt.Sprintf("# Written by `sftd certs`: the services' NATS user. Do not edit.\nSFT_SERVICE_USER: %q\nSFT_SERVICE_PASSWORD: %q\n", user, hash)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

func parseNATSAuth(b []byte) (user, hash string, ok bool) {
	for _, line := range strings.Split(string(b), "\n") {
		var v string
		if n, _ := fmt.Sscanf(line, "SFT_SERVICE_USER: %q", &v); n == 1 {
			user = v
		}
		if n, _ := fmt.Sscanf(line, "SFT_SERVICE_PASSWORD: %q", &v); n == 1 {
			hash = v
		}
	}
	return user, hash, user != "" && hash != ""
}
