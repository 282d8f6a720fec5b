package forward

import (
	"sync"
	"testing"
	"time"

	"github.com/kforward/kforward/config"
)

// A tunnel that went silent tells, once the next one is up, when the
// silence was found (Env.AfterSilence), so that the API client's
// connections from before it can be closed; a tunnel the peer reset does
// not: the client's connections on that path were reset too.
func TestAfterSilence(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"http": 80}))
	s := spec(":http")
	s.Health = config.Health{Interval: 200 * time.Millisecond, Timeout: 300 * time.Millisecond}
	var mu sync.Mutex
	var calls []time.Time
	env := k.env(pods, &testLog{})
	env.AfterSilence = func(at time.Time) {
		mu.Lock()
		calls = append(calls, at)
		mu.Unlock()
	}
	called := func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), calls...)
	}
	f, _ := start(t, s, env)
	waitState(t, f, Active)

	resetConns(k)
	waitFor(t, 5*time.Second, "the reset tunnel redialled", func() bool {
		st := f.Status()
		return st.Reconnects == 1 && st.State == Active
	})
	if c := called(); len(c) != 0 {
		t.Fatalf("AfterSilence called %v after a reset", c)
	}

	frozen := time.Now()
	k.set(func(k *fakeKubelet) { k.fail = true }) // the peer is down for new dials too
	k.freeze()
	waitFor(t, 5*time.Second, "the silent tunnel dropped", func() bool { return f.Status().Reconnects == 2 })
	found := time.Now()
	time.Sleep(100 * time.Millisecond)
	if c := called(); len(c) != 0 {
		t.Fatalf("AfterSilence called %v before a tunnel was up again", c)
	}
	k.set(func(k *fakeKubelet) { k.fail = false })
	k.thaw()
	waitState(t, f, Active)
	c := called()
	if len(c) != 1 {
		t.Fatalf("AfterSilence called %d times after the silent tunnel was replaced, want once", len(c))
	}
	if c[0].Before(frozen) || c[0].After(found) {
		t.Fatalf("AfterSilence(%s), want the time the silence was found, between %s and %s",
			c[0].Format(time.StampMicro), frozen.Format(time.StampMicro), found.Format(time.StampMicro))
	}
}

// resetConns closes the fake kubelet's connections with a reset (SO_LINGER
// 0), as a NAT or firewall that forgot them would.
func resetConns(k *fakeKubelet) { k.reset() }
