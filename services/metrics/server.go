package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition: nil when it holds. It must return
// once ctx ends.
type Check func(ctx context.Context) error

// CheckTimeout bounds one readiness check: an orchestrator's probe must
// get its answer before it gives up itself.
const CheckTimeout = 2 * time.Second

// Options configure a Server.
type Options struct {
	// Listen is the HTTP address (host:port; port 0: any free port).
	Listen  string
	Metrics *Metrics
	Logger  *slog.Logger
}

// Server serves /metrics, /healthz (the process is alive: always 200) and
// /readyz (200 when every check holds, 503 naming those that do not).
type Server struct {
	o Options

	mu     sync.Mutex
	checks []namedCheck

	done chan struct{}
	err  error
}

type namedCheck struct {
	name string
	fn   Check
}

// New returns a server; AddCheck adds readiness checks, Start serves.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{o: o, done: make(chan struct{})}
}

// AddCheck adds a readiness condition; it may be called after Start.
func (s *Server) AddCheck(name string, fn Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, namedCheck{name, fn})
}

// Start listens on o.Listen and serves until ctx ends; it returns the
// address it listens on. Wait returns once it stopped.
func (s *Server) Start(ctx context.Context) (net.Addr, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.o.Listen)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.o.Metrics.Registry, promhttp.HandlerOpts{Registry: s.o.Metrics.Registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.ready)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		defer close(s.done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return ln.Addr(), nil
}

// Wait blocks until the server stopped, after its start context ended,
// and returns why it stopped if not for that.
func (s *Server) Wait() error {
	<-s.done
	return s.err
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	checks := slices.Clone(s.checks)
	s.mu.Unlock()
	failed := make([]string, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), CheckTimeout)
			defer cancel()
			if err := c.fn(ctx); err != nil {
				// The reason goes to the log; the answer, which may be
				// reachable by more than operators, names the check only.
				s.o.Logger.Warn("not ready", "check", c.name, "err", err)
				failed[i] = c.name
			}
		})
	}
	wg.Wait()
	failed = slices.DeleteFunc(failed, func(n string) bool { return n == "" })
	if len(checks) == 0 {
		failed = []string{"starting"}
	}
	if len(failed) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %s\n", strings.Join(failed, ", "))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}
