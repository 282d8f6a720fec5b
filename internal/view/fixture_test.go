package view

import (
	"time"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/runner"
)

// now is the clock of every test: fixed, so ages and countdowns are too.
var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const (
	kiB = 1 << 10
	miB = 1 << 20
)

// fixture has a forward in every state, a long error, a free port that was
// picked, one bound on two addresses, and one not bound yet.
func fixture() runner.Snapshot {
	return runner.Snapshot{
		File:       "forwards.yaml",
		Started:    now.Add(-time.Hour),
		LastReload: runner.Reload{At: now.Add(-90 * time.Second), Trigger: runner.TriggerFile, Successful: true, Changes: runner.Changes{Added: 1, Restarted: 1, Unchanged: 3}},
		LastApply:  now.Add(-90 * time.Second),
		Forwards: []forward.Status{
			{
				Name: "api", Target: "service/api", Context: "kind-dev", Namespace: "shop", State: forward.Active,
				Ports:     []forward.PortStatus{{Local: 5000, Remote: "http"}},
				Addresses: []string{"127.0.0.1:5000"}, Pod: "api-7d9f8b6c5-x2kqz", Transport: config.WebSocket,
				Active: 2, Total: 57, BytesIn: 12*miB + 300*kiB, BytesOut: 1100 * kiB, Reconnects: 1,
				LastError: "dial tcp 10.0.0.5:8080: connect: connection refused", LastErrorAt: now.Add(-2 * time.Minute),
				HealthRTT: 3200 * time.Microsecond, HealthChecks: 12,
			},
			{
				Name: "db", Target: "statefulset/postgres", Namespace: "shop", State: forward.WaitingForPod,
				Ports:     []forward.PortStatus{{Local: 5432, Remote: "5432"}},
				Addresses: []string{"127.0.0.1:5432", "[::1]:5432"}, RetryAt: now.Add(4 * time.Second),
				LastError: "no ready pod for statefulset/postgres", LastErrorAt: now.Add(-12 * time.Second),
			},
			{
				Name: "grafana", Target: "deployment/grafana", Namespace: "monitoring", State: forward.Reconnecting,
				Ports:     []forward.PortStatus{{Local: 49152, Remote: "3000"}},
				Addresses: []string{"127.0.0.1:49152"}, Pod: "grafana-5c8d7f9b4-qwert", Transport: config.SPDY,
				RetryAt: now.Add(2100 * time.Millisecond), Active: 0, Total: 3, BytesIn: 2 * kiB, BytesOut: 512, Reconnects: 4,
				LastError:   "error upgrading connection: unable to upgrade connection: container not found (\"grafana\"); the pod may be restarting or the container may have exited\nsecond line is never shown",
				LastErrorAt: now.Add(-3 * time.Second),
			},
			{
				Name: "metrics", Target: "pod/prometheus-0", Namespace: "monitoring", State: forward.Failed,
				Ports:     []forward.PortStatus{{Local: 9090, Remote: "9090"}},
				LastError: "listen tcp 127.0.0.1:9090: bind: address already in use", LastErrorAt: now.Add(-3 * time.Hour),
			},
			{
				Name: "web", Target: "selector/app=web,tier=frontend", Context: "kind-dev", State: forward.Starting,
				Ports: []forward.PortStatus{{Local: 0, Remote: "8080"}, {Local: 9100, Remote: "metrics"}},
			},
		},
	}
}

// fixtureRates is the fixture's traffic over the last eight seconds, one
// sample a second: api downloading faster and faster and uploading
// steadily, the others idle.
func fixtureRates() *Rates {
	in := []int64{0, 10, 20, 40, 60, 90, 120, 150} // KiB/s in each interval, oldest first
	var r Rates
	for i := range len(in) + 1 {
		s := fixture()
		for j := range s.Forwards {
			f := &s.Forwards[j]
			if f.Name != "api" {
				continue
			}
			for _, later := range in[i:] {
				f.BytesIn -= later * kiB
				f.BytesOut -= 10 * kiB
			}
		}
		r.Add(s, now.Add(time.Duration(i-len(in))*time.Second))
	}
	return &r
}
