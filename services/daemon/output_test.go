package daemon_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/daemon"
)

// terminal runs one sftd command with env as it is, and returns what a
// person at a terminal sees: standard output and standard error as they
// interleave.
func (in *install) terminal(env []string, stdin string, args ...string) (string, error) {
	var seen syncbuf.Buffer
	err := daemon.Run(testCtx(in.t), daemon.IO{In: strings.NewReader(stdin), Out: &seen, Err: &seen}, args, env)
	return seen.String(), err
}

// A command a person types prints what the person needs: the one-shot
// commands log at warn unless a level is chosen (flag, environment or
// config file), while the long-running ones keep logging at info.
func TestOneShotCommandsPrintOnlyTheirAnswer(t *testing.T) {
	in := newInstall(t)
	// The level every test here starts from is the built-in default.
	in.env = slices.DeleteFunc(in.env, func(kv string) bool { return strings.HasPrefix(kv, "SFT_LOG_LEVEL=") })
	d := in.startDev()
	if !strings.Contains(d.log.String(), "level=INFO") || !strings.Contains(d.log.String(), "sft dev stack ready") {
		t.Errorf("sftd dev logged no info lines by default:\n%s", d.log.String())
	}
	env := append(slices.Clone(in.env), in.serverEnv(d)...)
	where := " in the JetStream store on " + strings.TrimPrefix(d.url, "tls://") + "\n"

	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"pw-carol\n", []string{"user", "add", "carol"}, "user carol created (role user)" + where},
		{"pw-dan\n", []string{"user", "add", "--admin", "dan"}, "user dan created (role admin)" + where},
		{"", []string{"user", "set-role", "carol", "admin"}, "user carol now has role admin (from their next login)\n"},
		{"", []string{"user", "set-role", "carol", "admin"}, "user carol already has role admin\n"},
	} {
		got, err := in.terminal(env, tc.stdin, tc.args...)
		if err != nil {
			t.Fatalf("sftd %s: %v\n%s", strings.Join(tc.args, " "), err, got)
		}
		if got != tc.want {
			t.Errorf("sftd %s printed\n%s\nwant only\n%s", strings.Join(tc.args, " "), got, tc.want)
		}
	}

	// certs prints where things are, and nothing more.
	certs := newInstall(t)
	got, err := certs.terminal(slices.DeleteFunc(slices.Clone(certs.env), func(kv string) bool { return strings.HasPrefix(kv, "SFT_LOG_LEVEL=") }), "", "certs")
	if err != nil || strings.Contains(got, "level=") || !strings.HasPrefix(got, "CA:") {
		t.Errorf("sftd certs: %v\n%s", err, got)
	}

	// A level someone chose still wins, wherever it was chosen.
	file := filepath.Join(t.TempDir(), "sft.yaml")
	if err := os.WriteFile(file, []byte("log:\n  level: info\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"flag", nil, []string{"user", "add", "erin", "--log-level", "info"}},
		{"environment", []string{"SFT_LOG_LEVEL=info"}, []string{"user", "add", "fay"}},
		{"config file", []string{"SFT_CONFIG=" + file}, []string{"user", "add", "gil"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := in.terminal(append(slices.Clone(env), tc.env...), "pw\n", tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(got, `msg="state store: jetstream kv"`) {
				t.Errorf("with log.level info from the %s, sftd %s printed\n%s", tc.name, strings.Join(tc.args, " "), got)
			}
		})
	}
}
