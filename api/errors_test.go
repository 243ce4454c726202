package api

import (
	"errors"
	"fmt"
	"testing"
)

func TestIsBodyTooLarge(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"as made", BodyTooLarge(70000, 65536), true},
		{"wrapped", fmt.Errorf("create session: %w", BodyTooLarge(70000, 65536)), true},
		{"as decoded from a reply", &Error{Code: CodeInvalid, Message: BodyTooLarge(1, 0).Message}, true},
		{"other invalid", Errorf(CodeInvalid, "bad manifest"), false},
		{"other code, same words", &Error{Code: CodeThrottled, Message: BodyTooLarge(1, 0).Message}, false},
		{"not an API error", errors.New(BodyTooLarge(1, 0).Message), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		if got := IsBodyTooLarge(tt.err); got != tt.want {
			t.Errorf("%s: IsBodyTooLarge = %v, want %v", tt.name, got, tt.want)
		}
	}
}
