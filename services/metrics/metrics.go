// Package metrics is what an sftd process tells operators about itself:
// one Prometheus registry per process (never the global default, so tests
// run several stacks in one process), the SFT metrics recorded into it,
// and the HTTP server that serves /metrics, /healthz and /readyz.
//
// Labels are bounded: subjects, result codes, event types, outcomes,
// service and operation names. Never a user name, session id or address.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are one process's SFT metrics. A nil *Metrics records nothing,
// so code that may run without metrics (tests that build a service
// directly) needs no checks.
type Metrics struct {
	// Registry holds every collector of the process; Server serves it.
	Registry *prometheus.Registry

	requests       *prometheus.CounterVec
	requestSeconds *prometheus.HistogramVec
	sessions       *prometheus.CounterVec
	transferBytes  prometheus.Counter
	logins         *prometheus.CounterVec
	callouts       *prometheus.CounterVec
	storeSeconds   *prometheus.HistogramVec
	storeErrors    *prometheus.CounterVec
	publishFailed  *prometheus.CounterVec
	relayRefused   *prometheus.CounterVec

	natsOnce sync.Once
	nats     *natsConns
}

// NewMetrics makes a registry with the Go runtime and process collectors and the
// SFT metrics.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sft_requests_total",
			Help: "API requests answered, by subject and result code (ok, or the error code of the reply).",
		}, []string{"subject", "code"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sft_request_duration_seconds",
			Help:    "Time to answer an API request, by subject.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 15},
		}, []string{"subject"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sft_sessions_total",
			Help: "Session state changes this process made, by event: created, joined, completed, failed, cancelled, expired.",
		}, []string{"event"}),
		transferBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sft_transfer_bytes_total",
			Help: "Bytes of completed sessions, as both members confirmed them.",
		}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sft_logins_total",
			Help: "Password logins, by outcome: ok, wrong_password, throttled.",
		}, []string{"outcome"}),
		callouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sft_auth_callout_decisions_total",
			Help: "NATS connections the auth callout decided, by outcome: token, password (login only), refused_token, refused_password, refused_throttled, refused.",
		}, []string{"outcome"}),
		storeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sft_store_operation_duration_seconds",
			Help:    "Time of a state store operation, by service and operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}, []string{"service", "op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sft_store_errors_total",
			Help: "State store operations that failed (not counting not-found, already-exists and revision conflicts, which are answers), by service and operation.",
		}, []string{"service", "op"}),
		publishFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sft_jetstream_publish_failures_total",
			Help: "JetStream publishes that failed, by stream (SFT_EVENTS: a lost event; SFT_TIMERS: a session that could not be created).",
		}, []string{"stream"}),
		relayRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sft_relay_refusals_total",
			Help: "Relay connections refused or sent away, by error code.",
		}, []string{"code"}),
	}
	reg.MustRegister(m.requests, m.requestSeconds, m.sessions, m.transferBytes, m.logins, m.callouts,
		m.storeSeconds, m.storeErrors, m.publishFailed, m.relayRefused)
	// The series alerts and rates are taken on exist from the start at 0,
	// so the first occurrence is an increase and not a new series.
	for _, e := range []string{"created", "joined", "completed", "failed", "cancelled", "expired"} {
		m.sessions.WithLabelValues(e)
	}
	for _, o := range []string{"ok", "wrong_password", "throttled"} {
		m.logins.WithLabelValues(o)
	}
	for _, s := range []string{"SFT_EVENTS", "SFT_TIMERS"} {
		m.publishFailed.WithLabelValues(s)
	}
	return m
}

// Request records one answered request: code is "ok" or the reply's error
// code.
func (m *Metrics) Request(subject, code string, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(subject, code).Inc()
	m.requestSeconds.WithLabelValues(subject).Observe(d.Seconds())
}

// Session records a session event the process wrote (created, joined, ...).
func (m *Metrics) Session(event string) {
	if m == nil {
		return
	}
	m.sessions.WithLabelValues(event).Inc()
}

// Transferred records the confirmed bytes of a completed session.
func (m *Metrics) Transferred(bytes int64) {
	if m == nil || bytes <= 0 {
		return
	}
	m.transferBytes.Add(float64(bytes))
}

// Login records a password login's outcome.
func (m *Metrics) Login(outcome string) {
	if m == nil {
		return
	}
	m.logins.WithLabelValues(outcome).Inc()
}

// Callout records an auth callout decision.
func (m *Metrics) Callout(outcome string) {
	if m == nil {
		return
	}
	m.callouts.WithLabelValues(outcome).Inc()
}

// StoreOp records one store operation of service; failed is true for an
// error that is not an answer.
func (m *Metrics) StoreOp(service, op string, d time.Duration, failed bool) {
	if m == nil {
		return
	}
	m.storeSeconds.WithLabelValues(service, op).Observe(d.Seconds())
	if failed {
		m.storeErrors.WithLabelValues(service, op).Inc()
	}
}

// PublishFailed records a failed JetStream publish to stream.
func (m *Metrics) PublishFailed(stream string) {
	if m == nil {
		return
	}
	m.publishFailed.WithLabelValues(stream).Inc()
}

// RelayRefused records a relay refusal with its error code.
func (m *Metrics) RelayRefused(code string) {
	if m == nil {
		return
	}
	m.relayRefused.WithLabelValues(code).Inc()
}

// Gauge registers a gauge read at each scrape from fn, with one value per
// value of the label named label (none when label is empty: fn's value at
// ""). fn must be safe to call from the scrape's goroutine.
func (m *Metrics) Gauge(name, help, label string, fn func() map[string]float64) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(newFuncCollector(name, help, label, prometheus.GaugeValue, fn))
}

// Counter registers a counter read at each scrape from fn, like Gauge.
func (m *Metrics) Counter(name, help, label string, fn func() map[string]float64) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(newFuncCollector(name, help, label, prometheus.CounterValue, fn))
}

// funcCollector reports the values fn returns, by label value.
type funcCollector struct {
	desc    *prometheus.Desc
	kind    prometheus.ValueType
	labeled bool
	fn      func() map[string]float64
}

func newFuncCollector(name, help, label string, kind prometheus.ValueType, fn func() map[string]float64) *funcCollector {
	var labels []string
	if label != "" {
		labels = []string{label}
	}
	return &funcCollector{desc: prometheus.NewDesc(name, help, labels, nil), kind: kind, labeled: label != "", fn: fn}
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *funcCollector) Collect(ch chan<- prometheus.Metric) {
	for lv, v := range c.fn() {
		if !c.labeled {
			ch <- prometheus.MustNewConstMetric(c.desc, c.kind, v)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, c.kind, v, lv)
	}
}
