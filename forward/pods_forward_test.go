package forward

import (
	"testing"
	"time"

	"github.com/kforward/kforward/config"
)

// podSpec is a pod target: the named pod, whatever its labels.
func podSpec(name string, ports ...string) config.Forward {
	s := spec(ports...)
	s.Target = config.Target{Kind: config.Pod, Name: name}
	return s
}

// currentPodUID is the UID of the pod of the forward's tunnel, "" without one.
func currentPodUID(f *Forward) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tun == nil {
		return ""
	}
	return string(f.tun.pod.UID)
}

// A pod recreated under the same name (a StatefulSet's pod, a pod target)
// is a new pod: the forward dials it, and the tunnel to the old one,
// which kwok and some kubelets keep serving, is closed.
func TestRecreatedPodGetsNewTunnel(t *testing.T) {
	k := newFakeKubelet(t)
	old := k.addPod("a", t0, map[string]int32{"http": 80})
	pods := newFakePods(old)
	f, _ := start(t, podSpec("a", ":http"), k.env(pods, &testLog{}))
	st := waitState(t, f, Active)
	f.mu.Lock()
	oldUp := f.tun.up
	f.mu.Unlock()

	fresh := k.addPod("a", t0.Add(time.Minute), map[string]int32{"http": 80})
	if fresh.UID == old.UID {
		t.Fatal("the recreated pod has the old UID")
	}
	pods.put(fresh) // the same name: it replaces the old pod
	waitFor(t, 5*time.Second, "a tunnel to the new pod", func() bool { return currentPodUID(f) == string(fresh.UID) })
	if n := len(k.upgrades()); n != 2 {
		t.Fatalf("%d upgrade requests, want 2: one per pod", n)
	}
	waitFor(t, 5*time.Second, "the old pod's tunnel closed", func() bool { return oldUp.Err() != nil })
	if pod := mustGet(t, st.Addresses[0]); pod != "a" {
		t.Fatalf("answered by %q, want a", pod)
	}
}
