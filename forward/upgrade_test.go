package forward

import (
	"testing"
	"time"
)

// A refused upgrade whose body never ends (a 503 with a Content-Length
// far beyond what arrives) does not hold the dial past its context: Run
// returns at once when stopped, on either transport.
func TestRefusedUpgradeHonoursContext(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			k := newFakeKubelet(t)
			pods := newFakePods(k.addPod("a", t0, map[string]int32{"echo": 7000}))
			k.set(func(k *fakeKubelet) { k.stall = true })
			s := spec(":echo")
			s.Transport = tr
			s.Health.Timeout = 10 * time.Second // a dial may take 30s: far beyond the bound below
			f, stop := start(t, s, k.env(pods, &testLog{}))
			waitFor(t, 5*time.Second, "an upgrade request", func() bool { return len(k.upgrades()) > 0 })
			time.Sleep(200 * time.Millisecond) // the refusal's head has arrived; its body never will
			if took := stop(); took > 3*time.Second {
				t.Fatalf("Run returned %s after it was stopped, during a refused upgrade", took)
			}
			if st := f.Status(); st.State != Stopped {
				t.Fatalf("state %s after Run returned", st.State)
			}
		})
	}
}
