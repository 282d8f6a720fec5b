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
	s := spec(":echo") // health every hour: no tick within the test, only the status can ask
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
	// Each look while overdue asks again, so a look during the check may
	// ask for one more.
	if st.HealthChecks < 1 || st.Reconnects != 0 || time.Since(st.HealthyAt) > 5*time.Second {
		t.Fatalf("active again after %d health checks and %d reconnects, healthy at %s; want the check the status asked for, on the same tunnel",
			st.HealthChecks, st.Reconnects, st.HealthyAt)
	}
}
