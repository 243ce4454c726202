package client

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeEvent feeds the watch's event decoder any message body: it
// never panics, and what it accepts survives a round trip unchanged.
// Seeds: testdata/fuzz/FuzzDecodeEvent.
func FuzzDecodeEvent(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := decodeEvent(b)
		if err != nil {
			return
		}
		enc, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("accepted event %+v does not encode: %v", ev, err)
		}
		again, err := decodeEvent(enc)
		if err != nil {
			t.Fatalf("re-encoded event %s refused: %v", enc, err)
		}
		// Compared encoded: times decode with fresh *Location values.
		if enc2, _ := json.Marshal(again); string(enc2) != string(enc) {
			t.Fatalf("round trip changed the event:\n%s\n%s", enc, enc2)
		}
	})
}
