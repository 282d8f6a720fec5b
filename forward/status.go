package forward

import (
	"time"

	"github.com/kforward/kforward/config"
)

// State is where a forward is in its life.
type State string

const (
	Starting      State = "starting"
	WaitingForPod State = "waiting-for-pod"
	Active        State = "active"
	Reconnecting  State = "reconnecting"
	Failed        State = "failed"
)

// Status is a snapshot of a forward, safe to keep and read.
type Status struct {
	Name         string
	State        State
	Addresses    []string // bound local addresses, with the chosen ports
	Pod          string
	Transport    config.Transport
	Active       int64 // open local connections
	Total        int64 // local connections accepted
	BytesIn      int64 // from the pod to local clients
	BytesOut     int64 // from local clients to the pod
	Reconnects   int
	LastError    string
	LastErrorAt  time.Time
	HealthRTT    time.Duration // last health-check round trip
	HealthChecks int64         // health checks passed
}

// Status returns a snapshot of the forward.
func (f *Forward) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := Status{
		Name: f.spec.Name, State: f.state, Addresses: append([]string(nil), f.addrs...),
		Transport: f.transport, Reconnects: f.reconnects,
		LastError: f.lastErr, LastErrorAt: f.lastErrAt, HealthRTT: f.rtt, HealthChecks: f.checks,
		Active: f.c.active.Load(), Total: f.c.total.Load(), BytesIn: f.c.bytes.In.Load(), BytesOut: f.c.bytes.Out.Load(),
	}
	if f.tun != nil {
		s.Pod = f.tun.pod.Name
	}
	return s
}
