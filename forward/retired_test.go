package forward

import (
	"strings"
	"testing"
	"time"

	"github.com/kforward/kforward/config"
)

// A rollout's old tunnel, still carrying a connection, is health-checked
// like the current one: when its pod's node goes silent, that tunnel is
// closed (its connection fails alone) instead of hanging until the old pod
// is deleted; the new pod's tunnel is untouched.
func TestRetiredTunnelPinged(t *testing.T) {
	k := newFakeKubelet(t)
	old := k.addPod("old", t0, map[string]int32{"http": 80, "echo": 7000})
	old.Labels["pod-template-hash"] = "v1"
	pods := newFakePods(old)
	s := spec(":http", ":echo")
	s.Health = config.Health{Interval: 200 * time.Millisecond, Timeout: 300 * time.Millisecond}
	log := &testLog{}
	f, _ := start(t, s, k.env(pods, log))
	waitState(t, f, Active)
	web := f.Status().Addresses[0]
	open := connect(t, f.Status().Addresses[1])
	if err := echo(open, "on old"); err != nil {
		t.Fatal(err)
	}
	fresh := k.addPod("new", t0.Add(time.Second), map[string]int32{"http": 80, "echo": 7000})
	fresh.Labels["pod-template-hash"] = "v2"
	pods.put(fresh)
	waitFor(t, 5*time.Second, "new connections on the new pod", func() bool { p, _ := get(web); return p == "new" })
	if err := echo(open, "still on old"); err != nil {
		t.Fatalf("the open connection broke at the handover: %v", err)
	}

	k.freezePod("old") // its node is gone from the network; the pod is not deleted
	if err := closedWithin(open, 5*time.Second); err != nil {
		t.Fatalf("connection on the retired tunnel to a silent pod: %v", err)
	}
	if pod := mustGet(t, web); pod != "new" {
		t.Fatalf("answered by %q, want new", pod)
	}
	if st := f.Status(); st.State != Active || st.Reconnects != 0 {
		t.Fatalf("forward %s with %d reconnects, want the current tunnel untouched", st.State, st.Reconnects)
	}
	if line := lineWith(log.String(), "retired"); !strings.Contains(line, "pod=old") {
		t.Fatalf("the log does not say the retired tunnel to old was closed:\n%s", log.String())
	}
}
