package forward

import (
	"testing"
	"time"
)

// After kforward itself was not running (a laptop asleep, a stopped
// process), an active forward's tunnel is not known to be alive: the
// status says checking, not active, and the check is made at once, not at
// the next tick; once it answers the forward is active again, on the same
// tunnel. e2e's TestFaultLaptopSleep does the same to the real binary.
func TestStatusChecksAfterSleep(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"echo": 7000}))
	s := spec(":echo") // health every hour: no tick within the test, only the wall-clock check asks
	f, _ := start(t, s, k.env(pods, &testLog{}))
	waitState(t, f, Active)

	f.mu.Lock()
	slept := time.Now().Add(-s.Health.Interval - time.Minute).Round(0)
	f.aliveAt = slept // last heard from a minute more than a health interval ago: asleep that long
	f.mu.Unlock()
	if st := f.Status(); st.State != Checking || !st.HealthyAt.Equal(slept) {
		t.Fatalf("status after an interval and a minute unheard: %s, healthy at %s; want checking, %s", st.State, st.HealthyAt, slept)
	}
	st := waitState(t, f, Active)
	if st.HealthChecks != 1 || st.Reconnects != 0 || time.Since(st.HealthyAt) > 5*time.Second {
		t.Fatalf("active again after %d health checks and %d reconnects, healthy at %s; want the one check of the overdue tunnel, on the same tunnel",
			st.HealthChecks, st.Reconnects, st.HealthyAt)
	}
}

// The forward finds an overdue tunnel itself: nobody reads its status
// (`--no-tui --status-addr off`), and still, after kforward was not
// running for longer than a health interval, the tunnel is checked at
// once, not at the next tick (an hour away here).
func TestOverdueTunnelCheckedUnobserved(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"echo": 7000}))
	s := spec(":echo") // health every hour
	f, _ := start(t, s, k.env(pods, &testLog{}))
	waitState(t, f, Active)

	checks := func() int64 {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.checks
	}
	f.mu.Lock()
	f.aliveAt = time.Now().Add(-s.Health.Interval - time.Minute).Round(0) // asleep an interval and a minute
	f.mu.Unlock()
	// Not through Status, which must not be what starts a check.
	waitFor(t, 10*time.Second, "a health check nobody asked for", func() bool { return checks() >= 1 })
	if st := f.Status(); st.State != Active || st.Reconnects != 0 || st.HealthChecks != 1 {
		t.Fatalf("%s after %d health checks and %d reconnects, want active after 1 check on the same tunnel",
			st.State, st.HealthChecks, st.Reconnects)
	}
}
