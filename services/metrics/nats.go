package metrics

import (
	"maps"
	"sync"

	"github.com/nats-io/nats.go"
)

// natsConns are the NATS connections a process reports, by service.
type natsConns struct {
	mu    sync.Mutex
	conns map[string]*nats.Conn
}

// NATS reports nc, the connection of service, in sft_nats_connected and
// sft_nats_reconnects_total. The first call registers the two metrics.
func (m *Metrics) NATS(service string, nc *nats.Conn) {
	if m == nil {
		return
	}
	m.natsOnce.Do(func() {
		m.nats = &natsConns{conns: map[string]*nats.Conn{}}
		m.Gauge("sft_nats_connected", "1 while the service's NATS connection is connected, 0 while it is reconnecting or closed.", "service",
			func() map[string]float64 {
				return m.nats.each(func(nc *nats.Conn) float64 {
					if nc.IsConnected() {
						return 1
					}
					return 0
				})
			})
		m.Counter("sft_nats_reconnects_total", "Times the service's NATS connection reconnected.", "service",
			func() map[string]float64 {
				return m.nats.each(func(nc *nats.Conn) float64 { return float64(nc.Stats().Reconnects) })
			})
	})
	m.nats.mu.Lock()
	m.nats.conns[service] = nc
	m.nats.mu.Unlock()
}

func (n *natsConns) each(f func(*nats.Conn) float64) map[string]float64 {
	n.mu.Lock()
	conns := maps.Clone(n.conns)
	n.mu.Unlock()
	out := make(map[string]float64, len(conns))
	for svc, nc := range conns {
		out[svc] = f(nc)
	}
	return out
}
