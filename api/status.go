package api

import "time"

// StatusRequest asks for the status of the whole system (admin only).
type StatusRequest struct{}

// StatusReply is every service replica that answered discovery, and the
// open sessions, as one session replica saw them at At.
type StatusReply struct {
	At       time.Time       `json:"at"`
	Services []ServiceStatus `json:"services"`
	// OpenSessions counts the sessions not ended yet, by state.
	OpenSessions map[State]int `json:"open_sessions"`
}

// ServiceStatus is one replica of a service: one process, which may run
// several instances of the service (the instances setting) that act as
// one; its counts are their sums.
type ServiceStatus struct {
	Name      string           `json:"name"` // sft-auth, sft-session, sft-key
	Version   string           `json:"version"`
	Replica   string           `json:"replica"` // the replica's id, new at each start
	Host      string           `json:"host,omitempty"`
	Instances int              `json:"instances"`
	Started   time.Time        `json:"started"`
	Endpoints []EndpointStatus `json:"endpoints"`
}

// Uptime is how long the replica had run at.
func (s ServiceStatus) Uptime(at time.Time) time.Duration { return at.Sub(s.Started) }

// EndpointStatus is one endpoint's figures since the replica started.
type EndpointStatus struct {
	Name     string `json:"name"`
	Subject  string `json:"subject"`
	Requests int    `json:"requests"`
	Errors   int    `json:"errors"`
	// AverageLatency is the mean time to answer, in nanoseconds.
	AverageLatency time.Duration `json:"average_latency_ns"`
}
