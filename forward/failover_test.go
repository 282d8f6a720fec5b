package forward

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kforward/kforward/config"
)

// A Ready pod whose port-forward fails (the API server answers 500
// "error dialing backend": its node's kubelet cannot be reached) is set
// aside, with a backoff of its own, and the next Ready pod is dialled at
// once; the log and the status name the pod set aside. Once the healthy
// pod is gone, the other is tried again after its backoff.
func TestUnreachablePodSetAside(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(
		k.addPod("old", t0, map[string]int32{"http": 80}),
		k.addPod("new", t0.Add(time.Second), map[string]int32{"http": 80}))
	k.set(func(k *fakeKubelet) { k.unreach["new"] = true })
	s := spec(":http")
	s.Transport = config.SPDY // one request per attempt
	s.Reconnect = config.Backoff{Initial: 2 * time.Second, Max: 4 * time.Second}
	log := &testLog{}
	f, _ := start(t, s, k.env(pods, log))
	st := waitState(t, f, Active)
	for range 5 {
		if pod := mustGet(t, st.Addresses[0]); pod != "old" {
			t.Fatalf("answered by %q, want old: new cannot be reached", pod)
		}
	}
	asked := map[string]int{}
	for _, r := range k.upgrades() {
		asked[r.pod]++
	}
	if asked["new"] != 1 || asked["old"] != 1 {
		t.Fatalf("upgrade requests by pod %v, want new once (then set aside) and old once", asked)
	}
	if !strings.Contains(log.String(), "set aside") || !strings.Contains(lineWith(log.String(), "set aside"), "pod=new") {
		t.Fatalf("the log does not say new was set aside:\n%s", log.String())
	}
	if st := f.Status(); !strings.Contains(st.LastError, "new") || !strings.Contains(st.LastError, "set aside") {
		t.Fatalf("last error %q, want it to name new, set aside", st.LastError)
	}

	// The healthy pod goes; the other answers again: it is tried once its
	// backoff is over.
	k.set(func(k *fakeKubelet) { k.unreach["new"] = false })
	pods.update(func(m map[string]*corev1.Pod) { delete(m, "old") })
	waitFor(t, 10*time.Second, "a tunnel to new", func() bool { return f.Status().Pod == "new" })
	if pod := mustGet(t, waitState(t, f, Active).Addresses[0]); pod != "new" {
		t.Fatalf("answered by %q, want new", pod)
	}
}
