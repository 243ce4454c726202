package store

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"Bob_2-x", true},
		{"01J9Z3K7Q8", true},
		{strings.Repeat("a", MaxNameLen), true},
		{strings.Repeat("a", MaxNameLen+1), false},
		{"", false},
		{"a b", false},
		{"a.b", false},
		{"a*", false},
		{"a>", false},
		{"a/b", false},
		{"a=b", false},
		{"ü", false},
		{"a\x00", false},
	} {
		err := ValidateName("user", tc.name)
		if tc.ok && err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalid", tc.name, err)
		}
	}
}
