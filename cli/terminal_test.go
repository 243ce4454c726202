package cli_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/devstack/devstacktest"
)

// pty is a pseudo-terminal of 120 columns: a command reads and writes tty
// as its terminal; what it wrote collects in out, and type_ writes what a
// user types.
type pty struct {
	tty    *os.File
	master *os.File
	out    *syncbuf.Buffer
}

func openPTY(t *testing.T) *pty {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pseudo-terminal number: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open the pseudo-terminal's slave: %v", err)
	}
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 120}); err != nil {
		t.Fatalf("size the pseudo-terminal: %v", err)
	}
	p := &pty{tty: tty, master: master, out: &syncbuf.Buffer{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Ends with EIO once the slave is closed.
		_, _ = io.Copy(p.out, master)
	}()
	t.Cleanup(func() {
		tty.Close()
		<-done
		master.Close()
	})
	return p
}

// type_ types s at the terminal.
func (p *pty) type_(t *testing.T, s string) {
	t.Helper()
	if _, err := p.master.Write([]byte(s)); err != nil {
		t.Fatalf("type at the terminal: %v", err)
	}
}

// waitShown waits until the terminal shows text.
func (p *pty) waitShown(t *testing.T, text string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the terminal to show %q", text), func() bool { return strings.Contains(p.out.String(), text) })
}

// escapes are the terminal control sequences the bars are drawn with.
var escapes = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]`)

// screenLines is what a terminal output shows line by line, redraws
// included, without control sequences.
func screenLines(out string) []string {
	return regexp.MustCompile(`[\r\n]+`).Split(escapes.ReplaceAllString(out, ""), -1)
}

func anyLineMatches(lines []string, re *regexp.Regexp) bool {
	for _, l := range lines {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

// TestProgressOutput runs a transfer through sft-cli on both sides in each
// human output mode. The link is held half-way until both sides have shown
// the transfer in progress, with a rate and an ETA.
func TestProgressOutput(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	const size = 32 << 20
	src := randomFile(t, t.TempDir(), "data.bin", size)

	// Patterns by side, %s being the verb of that side ("sent", "received").
	tests := []struct {
		name     string
		terminal bool
		flags    []string
		mid      string // a line shown while the link is held
		end      string // a line shown once the file is verified
	}{
		{
			name:     "terminal bars",
			terminal: true,
			mid:      `^data\.bin .*\d+% .*[0-9.]+ MiB / 32\.0 MiB .*[0-9.]+ [KMG]iB/s .*ETA \d`,
			end:      `^data\.bin .* 100% .* 32\.0 MiB / 32\.0 MiB .* done`,
		},
		{
			name: "plain lines",
			mid:  `^%s data\.bin: [0-9.]+ MiB of 32\.0 MiB \(\d+%%\), [0-9.]+ [KMG]iB/s, ETA \d+s$`,
			end:  `^%s data\.bin: 32\.0 MiB, done$`,
		},
		{name: "quiet", flags: []string{"--quiet"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := within(t, time.Minute)
			release := holdLink(t, 8<<20)
			port := freePort(t)

			type side struct {
				verb   string
				errOut *syncbuf.Buffer // what the side's standard error showed
				res    chan result
			}
			run := func(e *env, verb string, args ...string) *side {
				s := &side{verb: verb, errOut: &syncbuf.Buffer{}, res: make(chan result, 1)}
				var errW io.Writer = s.errOut
				if tt.terminal {
					p := openPTY(t)
					errW, s.errOut = p.tty, p.out
				}
				go func() {
					var out syncbuf.Buffer
					err := cli.Run(ctx, cli.IO{In: strings.NewReader(""), Out: &out, Err: errW}, append(args, tt.flags...), e.vars)
					s.res <- result{out: out.String(), err: err}
				}()
				return s
			}
			sender := run(alice, "sent", "send", src, "--to", "bob", "--listen", "127.0.0.1:"+port,
				"--advertise", release.proxy("127.0.0.1:"+port))
			sess := waitingSession(t, bob.client(), "data.bin")
			out := t.TempDir()
			receiver := run(bob, "received", "recv", sess.ID, "-o", out, "--yes")
			sides := []*side{sender, receiver}

			pattern := func(p, verb string) *regexp.Regexp {
				if strings.Contains(p, "%s") {
					p = fmt.Sprintf(p, verb)
				}
				return regexp.MustCompile(p)
			}
			if tt.mid != "" {
				for _, s := range sides {
					re := pattern(tt.mid, s.verb)
					waitFor(t, "the "+s.verb+" side to show the transfer in progress", func() bool {
						return anyLineMatches(screenLines(s.errOut.String()), re)
					})
				}
			}
			release.open()
			for _, s := range sides {
				r := <-s.res
				if r.err != nil {
					t.Fatalf("%s side: %v\n%s", s.verb, r.err, s.errOut.String())
				}
				if !strings.Contains(r.out, sess.ID) {
					t.Errorf("%s side's result does not name the session: %q", s.verb, r.out)
				}
			}
			sameFile(t, src, filepath.Join(out, "data.bin"))
			for _, s := range sides {
				shown := s.errOut.String()
				switch {
				case tt.end == "":
					if shown != "" {
						t.Errorf("%s side printed with --quiet:\n%s", s.verb, shown)
					}
				case !anyLineMatches(screenLines(shown), pattern(tt.end, s.verb)):
					t.Errorf("%s side never showed the file done (%s):\n%q", s.verb, tt.end, shown)
				}
			}
		})
	}
}

// linkHold forwards a peer link and holds it after a number of bytes until
// open is called.
type linkHold struct {
	t     *testing.T
	after int64
	gate  chan struct{}
	open  func()
}

func holdLink(t *testing.T, after int64) *linkHold {
	gate := make(chan struct{})
	h := &linkHold{t: t, after: after, gate: gate, open: sync.OnceFunc(func() { close(gate) })}
	t.Cleanup(h.open) // a failed test must not leave the proxy blocked
	return h
}

// proxy forwards to target, the sender's listener, and returns the address
// the receiver is to dial.
func (h *linkHold) proxy(target string) string {
	return proxy(h.t, target, func(off int64, b []byte) int {
		if off >= h.after {
			<-h.gate
		}
		return len(b)
	})
}

// echoOff waits until the terminal stops echoing what is typed, as a
// password prompt makes it do just after printing its question.
func (p *pty) echoOff(t *testing.T) {
	t.Helper()
	waitFor(t, "the terminal's echo to be turned off", func() bool {
		tio, err := unix.IoctlGetTermios(int(p.tty.Fd()), unix.TCGETS)
		return err == nil && tio.Lflag&unix.ECHO == 0
	})
}

// TestTerminalQuestions: on a terminal, login asks for the password and
// does not show it, and recv asks before it accepts a transfer; anything
// but yes declines, which ends the session and tells the sender.
func TestTerminalQuestions(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")

	t.Run("login", func(t *testing.T) {
		ctx := within(t, 30*time.Second)
		p := openPTY(t)
		vars := slices.DeleteFunc(slices.Clone(bob.vars), func(v string) bool { return strings.HasPrefix(v, "SFT_PASSWORD=") })
		res := make(chan error, 1)
		go func() { res <- cli.Run(ctx, cli.IO{In: p.tty, Out: io.Discard, Err: p.tty}, []string{"login"}, vars) }()
		p.waitShown(t, "Password for bob: ")
		p.echoOff(t)
		p.type_(t, devstacktest.Password("bob")+"\n")
		if err := <-res; err != nil {
			t.Fatalf("login: %v", err)
		}
		p.waitShown(t, "Logged in as bob")
		if strings.Contains(p.out.String(), devstacktest.Password("bob")) {
			t.Errorf("the terminal showed the password: %q", p.out.String())
		}
	})

	t.Run("recv", func(t *testing.T) {
		ctx := within(t, time.Minute)
		src := randomFile(t, t.TempDir(), "q.bin", 1<<20)
		out := t.TempDir()
		for _, answer := range []string{"\n", "n\n", "yes please\n", "Y\n"} {
			accept := answer == "Y\n"
			sendRes := alice.runAsync(ctx, "send", src, "--to", "bob")
			sess := waitingSession(t, bob.client(), "q.bin")
			p := openPTY(t)
			res := make(chan error, 1)
			go func() {
				res <- cli.Run(ctx, cli.IO{In: p.tty, Out: io.Discard, Err: p.tty}, []string{"recv", sess.ID, "-o", out}, bob.vars)
			}()
			p.waitShown(t, fmt.Sprintf("Receive q.bin (1.0 MiB) from alice into %s?", out))
			p.waitShown(t, "free. [y/N] ")
			p.type_(t, answer)
			err := <-res
			sr := <-sendRes
			if accept {
				if err != nil || sr.err != nil {
					t.Fatalf("answer %q: recv %v, send %v", answer, err, sr.err)
				}
				break
			}
			if err == nil || !strings.Contains(err.Error(), "declined") || !strings.Contains(err.Error(), "cancelled") {
				t.Fatalf("answer %q: %v, want declined and the session cancelled", answer, err)
			}
			if sr.err == nil || !strings.Contains(sr.err.Error(), "bob declined") || strings.Contains(sr.err.Error(), "\n") {
				t.Fatalf("answer %q: send ended with %v, want one line saying bob declined", answer, sr.err)
			}
			s, err := alice.client().Get(ctx, sess.ID)
			if err != nil {
				t.Fatal(err)
			}
			if s.State != api.StateCancelled || s.Reason != "bob declined" {
				t.Fatalf("answer %q left the session %s (%q), want cancelled as bob declined", answer, s.State, s.Reason)
			}
			if names := dirEntries(t, out); len(names) != 0 {
				t.Fatalf("answer %q left %v in the destination", answer, names)
			}
		}
		sameFile(t, src, filepath.Join(out, "q.bin"))
	})
}
