// Package hermetic keeps the developer's environment out of what a test
// runs: the sft-cli and sftd a test starts see only the home, directories
// and settings the test gave them, whatever the shell that ran `go test`
// exports (XDG_CONFIG_HOME, SFT_*, a config file under the real home).
package hermetic

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Home is the environment of a user whose home is dir, with every base
// directory SFT derives from the environment placed under it, so none of
// them can come from the developer's XDG_* variables.
func Home(dir string) []string {
	return []string{
		"HOME=" + dir,
		"XDG_CONFIG_HOME=" + filepath.Join(dir, ".config"),
		"XDG_DATA_HOME=" + filepath.Join(dir, ".local", "share"),
	}
}

// leaky are the prefixes of the variables that change what sftd, sft-cli
// or a NATS server does: where their files are, and their settings.
var leaky = []string{"HOME=", "XDG_", "SFT_", "NATS_"}

// Environ is the environment of a child process that must depend only on
// vars: this process's environment (PATH, TMPDIR and the like) without any
// variable that could change SFT's behaviour, followed by vars.
func Environ(vars ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return slices.ContainsFunc(leaky, func(p string) bool { return strings.HasPrefix(kv, p) })
	})
	return append(env, vars...)
}
