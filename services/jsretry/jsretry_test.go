package jsretry

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestDo(t *testing.T) {
	timeout := fmt.Errorf("create stream: %w", context.DeadlineExceeded)
	other := errors.New("stream name already in use with a different configuration")
	notYet := fmt.Errorf("bucket status: %w", jetstream.ErrStreamNotFound)
	for _, tc := range []struct {
		name  string
		errs  []error // what each try returns; the last repeats
		tries int
		want  error
	}{
		{"answered", []error{nil}, 1, nil},
		{"answered on the second try", []error{timeout, nil}, 2, nil},
		{"refused: not asked again", []error{other}, 1, other},
		{"never answered", []error{timeout}, attempts, timeout},
		{"just created, found on the second try", []error{notYet, nil}, 2, nil},
		{"never found", []error{notYet}, attempts, notYet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tries := 0
			v, err := Do(t.Context(), func() (int, error) {
				err := tc.errs[min(tries, len(tc.errs)-1)]
				tries++
				return tries, err
			})
			if !errors.Is(err, tc.want) || tries != tc.tries || v != tries {
				t.Fatalf("Do: %d tries, value %d, err %v; want %d tries, err %v", tries, v, err, tc.tries, tc.want)
			}
		})
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	tries := 0
	if _, err := Do(ctx, func() (int, error) { tries++; return 0, timeout }); !errors.Is(err, timeout) || tries != 1 {
		t.Fatalf("with ctx ended: %d tries, err %v; want 1 try", tries, err)
	}
}
