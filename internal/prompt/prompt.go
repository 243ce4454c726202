// Package prompt asks the user: a yes/no question, or a password the safe ways: from a terminal without
// echo, or from standard input when it is not a terminal. Never from a
// flag, where it would show in the process list and shell history.
package prompt

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// MaxLen bounds a password read from a pipe.
const MaxLen = 1024

// Password reads a password. On a terminal it prompts on w (twice when
// confirm is set); otherwise it reads the first line of in.
func Password(in io.Reader, w io.Writer, label string, confirm bool) (string, error) {
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		pw, err := readTerminal(f, w, label)
		if err != nil {
			return "", err
		}
		if confirm {
			again, err := readTerminal(f, w, "Repeat "+strings.ToLower(label[:1])+label[1:])
			if err != nil {
				return "", err
			}
			if again != pw {
				return "", errors.New("passwords do not match")
			}
		}
		return check(pw)
	}
	line, err := bufio.NewReaderSize(io.LimitReader(in, MaxLen+2), MaxLen+2).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	if len(line) > MaxLen+1 {
		return "", fmt.Errorf("password longer than %d bytes", MaxLen)
	}
	return check(strings.TrimRight(line, "\r\n"))
}

func readTerminal(f *os.File, w io.Writer, label string) (string, error) {
	fmt.Fprintf(w, "%s: ", label)
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(w)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	return string(b), nil
}

func check(pw string) (string, error) {
	if pw == "" {
		return "", errors.New("empty password")
	}
	if len(pw) > MaxLen {
		return "", fmt.Errorf("password longer than %d bytes", MaxLen)
	}
	return pw, nil
}

// Confirm asks a yes/no question on w and reads the answer from in; only
// "y" or "yes" (any case) agrees.
func Confirm(in io.Reader, w io.Writer, question string) (bool, error) {
	fmt.Fprintf(w, "%s [y/N] ", question)
	line, err := bufio.NewReaderSize(io.LimitReader(in, 64), 64).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read answer: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}
