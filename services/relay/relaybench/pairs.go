package relaybench

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/relay"
)

// bufSize is what one read or write of Move moves at most, the relay's
// own chunk.
const bufSize = 256 << 10

// Pairs are sessions relayed by one relay, each the connection of its
// initiator and that of its responder, admitted with tickets of their own.
type Pairs struct {
	pairs []pair
	zeros []byte // what the initiators send (only read)
}

type pair struct {
	ini, resp net.Conn
	buf       []byte // the responder's
}

// Connect opens n sessions through the relay at addr, with tickets from
// iss (valid for an hour, bytes practically unlimited), both members of
// each dialling at once, and returns them once every pair is relayed. The
// caller owns the Pairs and closes them; on error none is left open.
func Connect(ctx context.Context, addr string, iss *relay.Issuer, n int) (*Pairs, error) {
	p := &Pairs{zeros: make([]byte, bufSize)}
	for i := range n {
		ini, resp, err := connectPair(ctx, addr, iss)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("pair %d of %d: %w", i+1, n, err)
		}
		p.pairs = append(p.pairs, pair{ini: ini, resp: resp, buf: make([]byte, bufSize)})
	}
	return p, nil
}

func connectPair(ctx context.Context, addr string, iss *relay.Issuer) (ini, resp net.Conn, err error) {
	session, err := newSessionID()
	if err != nil {
		return nil, nil, err
	}
	ticket := func(role api.Role) (string, error) {
		return iss.Issue(relay.Ticket{Session: session, Role: role, ExpiresAt: time.Now().Add(time.Hour), MaxBytes: 1 << 50})
	}
	ti, err := ticket(api.RoleInitiator)
	if err != nil {
		return nil, nil, err
	}
	tr, err := ticket(api.RoleResponder)
	if err != nil {
		return nil, nil, err
	}
	var (
		wg   sync.WaitGroup
		rerr error
	)
	wg.Go(func() { resp, rerr = relay.Dial(ctx, addr, tr) })
	ini, err = relay.Dial(ctx, addr, ti)
	wg.Wait()
	if err = errors.Join(err, rerr); err != nil {
		for _, c := range []net.Conn{ini, resp} {
			if c != nil {
				c.Close()
			}
		}
		return nil, nil, err
	}
	return ini, resp, nil
}

// newSessionID returns a random session id of the session service's shape.
func newSessionID() (string, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return strings.ToLower(base32.StdEncoding.EncodeToString(b[:])), nil
}

// Len is the number of pairs.
func (p *Pairs) Len() int { return len(p.pairs) }

// Move sends perPair bytes from each initiator to its responder, every
// pair at once, and returns when every responder has read them. On the
// first error, or when ctx ends, it closes every connection (the Pairs are
// then of no further use) and returns that error, or one wrapping
// ctx.Err().
func (p *Pairs) Move(ctx context.Context, perPair int64) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(ctx, p.Close)
	defer stop()
	var wg sync.WaitGroup
	for _, c := range p.pairs {
		wg.Go(func() {
			if err := transfer(c.ini.Write, p.zeros, perPair); err != nil {
				cancel(fmt.Errorf("send: %w", err))
			}
		})
		wg.Go(func() {
			if err := transfer(c.resp.Read, c.buf, perPair); err != nil {
				cancel(fmt.Errorf("receive: %w", err))
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("move through the relay: %w", context.Cause(ctx))
	}
	return nil
}

// transfer calls op (a connection's Write or Read) with buf, cut to what
// is left, until op has moved n bytes.
func transfer(op func([]byte) (int, error), buf []byte, n int64) error {
	for n > 0 {
		m, err := op(buf[:min(int64(len(buf)), n)])
		if err != nil {
			return err
		}
		n -= int64(m)
	}
	return nil
}

// Close closes every connection.
func (p *Pairs) Close() {
	for _, c := range p.pairs {
		c.ini.Close()
		c.resp.Close()
	}
}
