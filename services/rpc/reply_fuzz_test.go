package rpc

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/sftproject/sft/api"
)

func replyTypes() []func() any {
	return []func() any{
		func() any { return new(api.AuthInfoReply) },
		func() any { return new(api.LoginReply) },
		func() any { return new(api.Session) },
		func() any { return new(api.ListReply) },
		func() any { return new(api.WatchReply) },
		func() any { return new(api.KeyReply) },
	}
}

// FuzzDecodeReply feeds arbitrary replies to the client side: it must
// never panic, and a reply with an error code header is always that
// *api.Error, whatever its body.
func FuzzDecodeReply(f *testing.F) {
	f.Add("", "", []byte(`{"id":"abcdefghijklmnop","state":"waiting","manifest":{"files":[{"name":"a","size":1}]}}`))
	f.Add("", "", []byte(`{"sessions":[{"id":"x"}]}`))
	f.Add("", "", []byte(`{"sealed_key":"AAEC"}`))
	f.Add("throttled", "too many sessions", []byte(`garbage`))
	f.Add("", "", []byte(`null`))
	f.Add("", "", []byte(``))
	f.Fuzz(func(t *testing.T, code, msg string, data []byte) {
		h := nats.Header{}
		if code != "" {
			h.Set(micro.ErrorCodeHeader, code)
			h.Set(micro.ErrorHeader, msg)
		}
		for _, mk := range replyTypes() {
			err := DecodeReply("sft.v1.test", h, data, mk())
			var e *api.Error
			if h.Get(micro.ErrorCodeHeader) != "" && (!errors.As(err, &e) || string(e.Code) != h.Get(micro.ErrorCodeHeader)) {
				t.Fatalf("error reply %q decoded as %v", code, err)
			}
		}
	})
}
