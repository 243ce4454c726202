package auth

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// cheap keeps the tests fast: they check the format and the logic, not the cost.
var cheap = HashParams{Memory: 8 << 10, Time: 1, Threads: 1}

func TestHashVerifyRoundTrip(t *testing.T) {
	for _, pw := range []string{"correct horse battery staple", "", "ünïcödé 🔑", strings.Repeat("x", 1000)} {
		hash, err := HashPassword(pw, cheap)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(hash, "$argon2id$v=19$m=8192,t=1,p=1$") {
			t.Errorf("hash %q is not PHC argon2id with the given parameters", hash)
		}
		if strings.Contains(hash, pw) && pw != "" {
			t.Errorf("hash contains the password")
		}
		ok, err := VerifyPassword(hash, pw)
		if err != nil || !ok {
			t.Errorf("VerifyPassword(right password) = %v, %v; want true, nil", ok, err)
		}
		ok, err = VerifyPassword(hash, pw+"x")
		if err != nil || ok {
			t.Errorf("VerifyPassword(wrong password) = %v, %v; want false, nil", ok, err)
		}
	}
}

func TestHashIsSalted(t *testing.T) {
	a, err := HashPassword("same", cheap)
	if err != nil {
		t.Fatal(err)
	}
	b, err := HashPassword("same", cheap)
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("two hashes of one password are equal: no random salt")
	}
}

// Parameters are read from the stored hash, not from the current defaults,
// so raising the defaults keeps old hashes verifiable.
func TestVerifyHonoursStoredParams(t *testing.T) {
	for _, p := range []HashParams{
		{Memory: 8 << 10, Time: 1, Threads: 1},
		{Memory: 16 << 10, Time: 3, Threads: 2},
		{Memory: 9 << 10, Time: 2, Threads: 4},
	} {
		t.Run(fmt.Sprintf("m=%d,t=%d,p=%d", p.Memory, p.Time, p.Threads), func(t *testing.T) {
			hash, err := HashPassword("pw", p)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("$m=%d,t=%d,p=%d$", p.Memory, p.Time, p.Threads)
			if !strings.Contains(hash, want) {
				t.Fatalf("hash %q does not record %s", hash, want)
			}
			if ok, err := VerifyPassword(hash, "pw"); err != nil || !ok {
				t.Fatalf("VerifyPassword = %v, %v; want true, nil", ok, err)
			}
			// Editing the recorded parameters changes the derived key.
			other := strings.Replace(hash, want, fmt.Sprintf("$m=%d,t=%d,p=%d$", p.Memory, p.Time+1, p.Threads), 1)
			if ok, err := VerifyPassword(other, "pw"); err != nil || ok {
				t.Fatalf("VerifyPassword with edited t = %v, %v; want false, nil", ok, err)
			}
		})
	}
}

func TestVerifyRejectsMalformedHashes(t *testing.T) {
	good, err := HashPassword("pw", cheap)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, "$") // "", alg, v, params, salt, key
	with := func(i int, v string) string {
		p := append([]string(nil), parts...)
		p[i] = v
		return strings.Join(p, "$")
	}
	for _, tc := range []struct{ name, hash string }{
		{"empty", ""},
		{"not phc", "hunter2"},
		{"bcrypt", "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"},
		{"argon2i", with(1, "argon2i")},
		{"argon2d", with(1, "argon2d")},
		{"missing part", strings.Join(parts[:5], "$")},
		{"extra part", good + "$x"},
		{"version 16", with(2, "v=16")},
		{"version missing", with(2, "19")},
		{"version garbage", with(2, "v=x")},
		{"m=0", with(3, "m=0,t=1,p=1")},
		{"t=0", with(3, "m=8192,t=0,p=1")},
		{"p=0", with(3, "m=8192,t=1,p=0")},
		{"huge m", with(3, "m=4294967295,t=1,p=1")},
		{"m over limit", with(3, fmt.Sprintf("m=%d,t=1,p=1", 1<<21+1))},
		{"m overflows", with(3, "m=99999999999,t=1,p=1")},
		{"negative m", with(3, "m=-1,t=1,p=1")},
		{"huge t", with(3, "m=8192,t=1000000,p=1")},
		{"p overflows", with(3, "m=8192,t=1,p=256")},
		{"params garbage", with(3, "m=a,t=b,p=c")},
		{"params missing", with(3, "")},
		{"bad base64 salt", with(4, "!!!!")},
		{"padded base64 key", with(5, parts[5]+"=")},
		{"bad base64 key", with(5, "****")},
		{"empty hash", with(5, "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := VerifyPassword(tc.hash, "pw")
			if ok {
				t.Fatalf("VerifyPassword(%q) = true", tc.hash)
			}
			if !errors.Is(err, errBadHash) {
				t.Fatalf("VerifyPassword(%q) error = %v, want errBadHash", tc.hash, err)
			}
		})
	}
}
