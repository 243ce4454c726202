package relaybench

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
)

// envChildKey makes a test binary the relay process (see TestChild); its
// value is the ticket public key in hex.
const envChildKey = "SFT_RELAYBENCH_KEY"

// TestChild returns the command that runs the current test binary again
// as a relay process admitting the tickets key verifies, for Start; no
// test or benchmark runs in it. The binary's TestMain must call
// ServeTestChild first.
func TestChild(key ed25519.PublicKey) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), envChildKey+"="+hex.EncodeToString(key))
	return cmd
}

// ServeTestChild, first in a TestMain, makes a test binary started by
// TestChild the relay process: it serves on standard input and output and
// exits the process. In any other test binary it returns at once.
func ServeTestChild() {
	keyHex, ok := os.LookupEnv(envChildKey)
	if !ok {
		return
	}
	key, err := hex.DecodeString(keyHex)
	if err == nil {
		err = Serve(context.Background(), ed25519.PublicKey(key), os.Stdin, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay process:", err)
		os.Exit(1)
	}
	os.Exit(0)
}
