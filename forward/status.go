package forward

import (
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/kforward/kforward/config"
)

// State is where a forward is in its life.
type State string

const (
	Starting      State = "starting"
	WaitingForPod State = "waiting-for-pod"
	Active        State = "active"
	// Checking is an active forward whose tunnel has not been heard from
	// for longer than a health check takes: kforward itself was not
	// running (a laptop asleep, a stopped process), and its connections
	// may have died meanwhile without a word. A check is under way; the
	// state becomes active again when it answers, reconnecting when not.
	Checking     State = "checking"
	Reconnecting State = "reconnecting"
	Failed       State = "failed"
	Stopped      State = "stopped" // Run has returned
)

// Status is a snapshot of a forward, safe to keep and read. It is also the
// JSON a running kforward serves (GET /status), so its field names are an
// interface: add, never rename.
type Status struct {
	Name      string           `json:"name"`
	Target    string           `json:"target"` // as in the file: "service/api"
	Context   string           `json:"context,omitempty"`
	Namespace string           `json:"namespace,omitempty"`
	State     State            `json:"state"`
	Ports     []PortStatus     `json:"ports"`     // one per mapping in the file, in its order
	Addresses []string         `json:"addresses"` // bound local addresses, with the chosen ports
	Pod       string           `json:"pod,omitempty"`
	PodReady  bool             `json:"podReady"`            // false: a pod target's pod not Ready, or no Ready pod and a Running one used
	Transport config.Transport `json:"transport,omitempty"` // the one in use once connected
	RetryAt   time.Time        `json:"retryAt,omitzero"`    // reconnecting or waiting: the next attempt

	Active     int64            `json:"connectionsActive"` // open local connections
	Total      int64            `json:"connectionsTotal"`  // local connections accepted
	ConnErrors map[string]int64 `json:"connectionErrors,omitempty"`
	BytesIn    int64            `json:"bytesIn"`     // from the pod to local clients
	BytesOut   int64            `json:"bytesOut"`    // from local clients to the pod
	OnDisk     int64            `json:"bytesOnDisk"` // the pod's data waiting on disk for slow clients (diskBuffer)
	Reconnects int              `json:"reconnects"`

	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`

	HealthRTT    time.Duration `json:"healthRTTNanoseconds,omitempty"` // last health-check round trip
	HealthyAt    time.Time     `json:"healthyAt,omitzero"`             // when the tunnel last proved alive: dialled, or a health check answered
	HealthChecks int64         `json:"healthChecks"`                   // health checks passed

	DialSeconds   Histogram `json:"dialSeconds"`   // how long upgrading a connection to a pod took
	HealthSeconds Histogram `json:"healthSeconds"` // health-check round trips
}

// PortStatus is one port mapping: the local port (the chosen one for a
// free port, once bound; 0 before) and the remote port as the file names it.
type PortStatus struct {
	Local  int    `json:"local"`
	Remote string `json:"remote"`
}

// Why a local connection ended in error; the keys of Status.ConnErrors.
const (
	ErrNoPod         = "no_pod"         // no usable pod within connectTimeout
	ErrRemotePort    = "remote_port"    // the remote port could not be mapped on the pod
	ErrClientStalled = "client_stalled" // the local client stopped reading
	ErrStream        = "stream"         // the stream failed (refused by the pod, tunnel died)
)

// SpecStatus is the status of a forward that has not started: what the
// file says, nothing measured.
func SpecStatus(spec config.Forward) Status {
	s := Status{
		Name: spec.Name, Target: spec.Target.String(), Context: spec.Context, Namespace: spec.Namespace,
		State: Starting,
	}
	for _, p := range spec.Ports {
		remote := p.RemoteName
		if remote == "" {
			remote = strconv.Itoa(p.Remote)
		}
		s.Ports = append(s.Ports, PortStatus{Local: p.Local, Remote: remote})
	}
	return s
}

// Status returns a snapshot of the forward.
func (f *Forward) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := SpecStatus(f.spec)
	s.Namespace = f.env.Namespace
	s.State, s.Transport, s.Reconnects = f.state, f.transport, f.reconnects
	if f.state == Active && f.overdue(time.Now()) {
		// What was true before a sleep is not known after it: say so
		// until the tunnel has answered. The forward's own loop (hold)
		// finds it overdue too and asks at once; looking changes nothing.
		s.State = Checking
	}
	s.Addresses = slices.Clone(f.addrs)
	for i, port := range f.chosen {
		s.Ports[i].Local = port
	}
	if f.state == Reconnecting || f.state == WaitingForPod || f.state == Failed {
		s.RetryAt = f.retryAt
	}
	s.LastError, s.LastErrorAt = f.lastErr, f.lastErrAt
	s.HealthRTT, s.HealthChecks, s.HealthyAt = f.rtt, f.checks, f.aliveAt
	s.DialSeconds, s.HealthSeconds = f.dial.clone(), f.health.clone()
	s.Active, s.Total = f.c.active.Load(), f.c.total.Load()
	s.BytesIn, s.BytesOut = f.c.bytes.In.Load(), f.c.bytes.Out.Load()
	s.OnDisk = f.overflow.Used()
	if len(f.connErrs) > 0 {
		s.ConnErrors = maps.Clone(f.connErrs)
	}
	if f.tun != nil {
		s.Pod, s.PodReady = f.tun.pod.Name, f.podReady
	}
	return s
}

// overdue reports whether the tunnel has gone unheard for longer than a
// health check can take: the check starts at most one interval after the
// last answer and takes at most the timeout, and one more timeout is
// allowed for scheduling on a busy machine. Past that, kforward itself was
// not running. The wall clock is compared, not the monotonic one: during a
// real suspend (a laptop's lid closed) the monotonic clock stands still on
// Linux, so neither a timer nor a monotonic age would show the sleep.
// Call with f.mu held.
func (f *Forward) overdue(now time.Time) bool {
	if f.aliveAt.IsZero() {
		return false
	}
	return now.Round(0).Sub(f.aliveAt) > f.spec.Health.Interval+2*f.spec.Health.Timeout
}

// Histogram counts observations in cumulative buckets, as Prometheus does:
// Counts[i] is how many were ≤ Bounds[i]. It is kept in the snapshot so that
// metrics are a function of status alone.
type Histogram struct {
	Bounds []float64 `json:"bounds"` // upper bounds, ascending; +Inf implied
	Counts []uint64  `json:"counts"` // cumulative, one per bound
	Count  uint64    `json:"count"`
	Sum    float64   `json:"sum"`
}

// Bucket bounds in seconds: dials take tens of milliseconds to seconds,
// pings through the API server milliseconds.
var (
	dialBounds   = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	healthBounds = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
)

func newHistogram(bounds []float64) Histogram {
	return Histogram{Bounds: bounds, Counts: make([]uint64, len(bounds))}
}

func (h *Histogram) observe(d time.Duration) {
	v := d.Seconds()
	for i, b := range h.Bounds {
		if v <= b {
			h.Counts[i]++
		}
	}
	h.Count++
	h.Sum += v
}

func (h Histogram) clone() Histogram {
	h.Counts = slices.Clone(h.Counts)
	return h
}
