package rpc

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/sftproject/sft/api"
)

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		ok   bool
		want api.SessionRequest
	}{
		{"valid", `{"session_id":"abcdefghijklmnop"}`, true, api.SessionRequest{SessionID: "abcdefghijklmnop"}},
		{"valid with whitespace", " \n\t{ \"session_id\" : \"x\" }\r\n ", true, api.SessionRequest{SessionID: "x"}},
		{"empty object", `{}`, true, api.SessionRequest{}},
		{"empty", ``, false, api.SessionRequest{}},
		{"whitespace", " \n\t\r ", false, api.SessionRequest{}},
		{"null", `null`, false, api.SessionRequest{}},
		{"array", `[]`, false, api.SessionRequest{}},
		{"string", `"abcdefghijklmnop"`, false, api.SessionRequest{}},
		{"number", `42`, false, api.SessionRequest{}},
		{"unknown field", `{"session_id":"x","admin":true}`, false, api.SessionRequest{}},
		{"trailing object", `{"session_id":"x"}{}`, false, api.SessionRequest{}},
		{"trailing garbage", `{"session_id":"x"} x`, false, api.SessionRequest{}},
		{"trailing brace", `{"session_id":"x"}}`, false, api.SessionRequest{}},
		{"trailing bracket", `{"session_id":"x"}]`, false, api.SessionRequest{}},
		{"trailing comma", `{"session_id":"x"},`, false, api.SessionRequest{}},
		{"truncated", `{"session_id":"x"`, false, api.SessionRequest{}},
		{"wrong type number", `{"session_id":1}`, false, api.SessionRequest{}},
		{"wrong type object", `{"session_id":{}}`, false, api.SessionRequest{}},
		{"wrong type null is absent", `{"session_id":null}`, true, api.SessionRequest{}},
		{"not json", `session_id=x`, false, api.SessionRequest{}},
		{"nul byte", "{\"session_id\":\"x\"}\x00", false, api.SessionRequest{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got api.SessionRequest
			err := Decode([]byte(tc.body), &got)
			if tc.ok {
				if err != nil {
					t.Fatalf("Decode(%q) = %v, want nil", tc.body, err)
				}
				if got != tc.want {
					t.Fatalf("Decode(%q) = %+v, want %+v", tc.body, got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Decode(%q) accepted it as %+v", tc.body, got)
			}
			if api.CodeOf(err) != api.CodeInvalid {
				t.Fatalf("Decode(%q) = %v, want code %q", tc.body, err, api.CodeInvalid)
			}
		})
	}
}

func TestDecodeWrongTypes(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		body string
	}{
		{"bytes not base64", &api.KeyRequest{}, `{"session_id":"x","reply_key":"%%%"}`},
		{"size as string", &api.CreateRequest{}, `{"responder":"b","manifest":{"files":[{"name":"f","size":"1"}]}}`},
		{"size fractional", &api.CreateRequest{}, `{"responder":"b","manifest":{"files":[{"name":"f","size":1.5}]}}`},
		{"size overflow", &api.CreateRequest{}, `{"responder":"b","manifest":{"files":[{"name":"f","size":1e30}]}}`},
		{"nested unknown field", &api.CreateRequest{}, `{"responder":"b","manifest":{"files":[{"name":"f","size":1,"mode":"0777"}]}}`},
		{"crc negative", &api.ReportRequest{}, `{"session_id":"x","report":{"ok":true,"crc32c":-1}}`},
		{"bad time", &api.ReportRequest{}, `{"session_id":"x","report":{"at":"yesterday"}}`},
		{"bool as string", &api.ReportRequest{}, `{"session_id":"x","report":{"ok":"true"}}`},
		{"info takes no fields", &struct{}{}, `{"x":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Decode([]byte(tc.body), tc.v); api.CodeOf(err) != api.CodeInvalid {
				t.Fatalf("Decode(%s) = %v, want code %q", tc.body, err, api.CodeInvalid)
			}
		})
	}
}

// requestTypes are every body a service decodes with Decode.
func requestTypes() []func() any {
	return []func() any{
		func() any { return new(struct{}) }, // auth.info
		func() any { return new(api.LoginRequest) },
		func() any { return new(api.CreateRequest) },
		func() any { return new(api.SessionRequest) },
		func() any { return new(api.ListRequest) },
		func() any { return new(api.ReportRequest) },
		func() any { return new(api.CancelRequest) },
		func() any { return new(api.WatchRequest) },
		func() any { return new(api.KeyRequest) },
	}
}

// FuzzDecode feeds untrusted request bodies to Decode for every request
// type: it must never panic, refuse only with code invalid, and whatever it
// accepts must re-encode to a body it accepts again with the same meaning.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"user":"alice","sealed_password":"AAEC","reply_key":"AwQF"}`,
		`{"responder":"bob","manifest":{"files":[{"name":"a.txt","size":12}]},"peer_addrs":["127.0.0.1:4000"]}`,
		`{"session_id":"abcdefghijklmnop"}`,
		`{"state":"waiting"}`,
		`{"session_id":"abcdefghijklmnop","report":{"ok":true,"bytes":5,"crc32c":4294967295,"sha256":"00","at":"2030-01-02T03:04:05.123456789+01:00"}}`,
		`{"session_id":"abcdefghijklmnop","reason":"wrong file"}`,
		`{"session_id":"abcdefghijklmnop","deliver":"_INBOX.x.y"}`,
		`{"session_id":"abcdefghijklmnop","reply_key":""}`,
		`{"session_id":"x"}}`,
		`null`,
		"{\"user\":\"\\ud800\"}",
		`{"manifest":{"files":null}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, mk := range requestTypes() {
			v := mk()
			err := Decode(body, v)
			if err != nil {
				if api.CodeOf(err) != api.CodeInvalid {
					t.Fatalf("Decode(%q) into %T = %v, want code invalid", body, v, err)
				}
				continue
			}
			enc, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("Decode(%q) accepted %T %+v, which does not re-encode: %v", body, v, v, err)
			}
			v2 := mk()
			if err := Decode(enc, v2); err != nil {
				t.Fatalf("re-encoded %T %s is refused: %v", v, enc, err)
			}
			enc2, err := json.Marshal(v2)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc, enc2) {
				t.Fatalf("%T does not round-trip: %s became %s", v, enc, enc2)
			}
		}
	})
}
