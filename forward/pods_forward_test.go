package forward

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

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

// fallbackWarnings are the log lines that say a pod is used though not Ready.
func fallbackWarnings(log *testLog) []string {
	var out []string
	for line := range strings.Lines(log.String()) {
		if strings.Contains(line, "no ready pod; using running pod") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// A pod target needs its pod Running, not Ready, as kubectl does: the
// status says it is not Ready, and nothing is logged as a fallback.
func TestPodTargetNotReady(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(unready(k.addPod("a", t0, map[string]int32{"http": 80})))
	log := &testLog{}
	f, _ := start(t, podSpec("a", ":http"), k.env(pods, log))
	st := waitState(t, f, Active)
	if st.Pod != "a" || st.PodReady {
		t.Fatalf("pod %q ready %v, want a, not ready", st.Pod, st.PodReady)
	}
	if pod := mustGet(t, st.Addresses[0]); pod != "a" {
		t.Fatalf("answered by %q, want a", pod)
	}
	if w := fallbackWarnings(log); len(w) != 0 {
		t.Fatalf("a pod target logged a fallback: %q", w)
	}

	pending := unready(k.addPod("b", t0, map[string]int32{"http": 80}))
	pending.Status.Phase = corev1.PodPending
	pods2 := newFakePods(pending)
	f2, _ := start(t, podSpec("b", ":http"), k.env(pods2, &testLog{}))
	waitState(t, f2, WaitingForPod)
	time.Sleep(100 * time.Millisecond)
	if st := f2.Status(); st.State != WaitingForPod || len(k.upgrades()) != 1 {
		t.Fatalf("state %s after %d upgrade requests, want a pod that is not Running left alone", st.State, len(k.upgrades()))
	}
}

// A workload, service or selector with no Ready pod falls back to a
// Running one, says so once in the log and in the status, and moves to a
// Ready pod as soon as there is one.
func TestFallbackToRunningPod(t *testing.T) {
	k := newFakeKubelet(t)
	a := k.addPod("a", t0, map[string]int32{"http": 80})
	pods := newFakePods(unready(a))
	log := &testLog{}
	f, _ := start(t, spec(":http"), k.env(pods, log))
	st := waitState(t, f, Active)
	if st.Pod != "a" || st.PodReady {
		t.Fatalf("pod %q ready %v, want a, not ready", st.Pod, st.PodReady)
	}
	if pod := mustGet(t, st.Addresses[0]); pod != "a" {
		t.Fatalf("answered by %q, want a", pod)
	}
	pods.put(unready(a)) // another change to the same pod: nothing new to say
	pods.put(unready(a))
	waitFor(t, 5*time.Second, "the fallback warning", func() bool { return len(fallbackWarnings(log)) > 0 })
	time.Sleep(100 * time.Millisecond)
	w := fallbackWarnings(log)
	if len(w) != 1 || !strings.Contains(w[0], "no ready pod; using running pod a, not ready") || !strings.Contains(w[0], "forward=web") {
		t.Fatalf("fallback warnings %q, want one naming the forward and pod a", w)
	}

	pods.put(k.addPod("b", t0.Add(-time.Minute), map[string]int32{"http": 80})) // Ready, though older
	waitFor(t, 5*time.Second, "the ready pod b", func() bool { st := f.Status(); return st.Pod == "b" && st.PodReady })
	if pod := mustGet(t, st.Addresses[0]); pod != "b" {
		t.Fatalf("answered by %q, want b", pod)
	}
}

// A pod in use that stops being Ready, with no other Ready, keeps its
// tunnel (no redial) and is used on, with the warning and the status; Ready
// again, the status says so.
func TestCurrentPodUnreadyKept(t *testing.T) {
	k := newFakeKubelet(t)
	a := k.addPod("a", t0, map[string]int32{"http": 80})
	pods := newFakePods(a)
	log := &testLog{}
	f, _ := start(t, spec(":http"), k.env(pods, log))
	st := waitState(t, f, Active)
	if !st.PodReady {
		t.Fatal("a Ready pod shown not Ready")
	}
	pods.put(unready(a))
	waitFor(t, 5*time.Second, "the status to show a not ready", func() bool { return !f.Status().PodReady })
	if pod := mustGet(t, st.Addresses[0]); pod != "a" {
		t.Fatalf("answered by %q, want a", pod)
	}
	if n := len(k.upgrades()); n != 1 || f.Status().State != Active {
		t.Fatalf("%d upgrade requests, state %s; want the tunnel kept", n, f.Status().State)
	}
	if w := fallbackWarnings(log); len(w) != 1 {
		t.Fatalf("fallback warnings %q, want one", w)
	}
	pods.put(a)
	waitFor(t, 5*time.Second, "the status to show a ready", func() bool { return f.Status().PodReady })
}
