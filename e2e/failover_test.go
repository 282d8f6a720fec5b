package e2e

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/e2e/cluster"
	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/internal/testutil"
)

// unreachableNode creates a second node whose kubelet cannot be reached
// (its kubelet port on 127.0.0.1 is closed): the API server answers a
// port-forward to its pods with 500 "error dialing backend", as for a node
// gone from the network. It is Ready when made; the node-lifecycle
// controller would notice the missing heartbeats only after its grace
// period (40s and more), longer than a test that uses it. Tainted, so that
// nothing is scheduled there; pods are bound to it by name. Removed, with
// its pods, when the test ends.
func unreachableNode(t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	ports, err := cluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "kforward.test/unreachable", Effect: corev1.TaintEffectNoSchedule}}},
	}
	if _, err := c.Client.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Client.CoreV1().Nodes().Delete(t.Context(), name, metav1.DeleteOptions{})
	})
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error { // the controllers touch a new node too
		node, err := c.Client.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: name}}
		node.Status.DaemonEndpoints = corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(ports[0])}}
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}}
		_, err = c.Client.CoreV1().Nodes().UpdateStatus(t.Context(), node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// createPodOn creates a pod labelled app=app bound to node, and makes it
// Running and Ready itself when the node has no kubelet to do it.
func createPodOn(t *testing.T, c *cluster.Cluster, ns, name, app, node string, markReady bool) {
	t.Helper()
	tmpl := podTemplate(map[string]string{"app": app})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: tmpl.Labels}, Spec: tmpl.Spec}
	pod.Spec.NodeName = node
	pod, err := c.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// No kubelet will confirm a graceful deletion on a node without one.
		c.Client.CoreV1().Pods(ns).Delete(t.Context(), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	if !markReady {
		return
	}
	now := metav1.Now()
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, HostIP: "127.0.0.1", PodIP: "127.0.0.1", StartTime: &now}
	for _, cond := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: cond, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	if _, err := c.Client.CoreV1().Pods(ns).UpdateStatus(t.Context(), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Two Ready pods, the newer one on a node whose kubelet cannot be reached:
// the forward dials the newer one first (the newest Ready pod), sets it
// aside when the API server answers 500, and serves every connection from
// the healthy one, without dialling the other again and again.
func TestFailoverUnreachablePod(t *testing.T) {
	c := needCluster(t)
	ns := namespace(t, c)
	createPodOn(t, c, ns, "healthy", "web", cluster.NodeName, false)
	waitReadyPods(t, c.Client, ns, "app=web", 1)
	node := "unreachable-" + ns
	unreachableNode(t, c, node)
	time.Sleep(1100 * time.Millisecond) // creation times count in seconds: the other pod is newer
	createPodOn(t, c, ns, "broken", "web", node, true)
	waitReadyPods(t, c.Client, ns, "app=web", 2)

	s := spec("failover", ns, config.Target{Kind: config.Selector, Selector: map[string]string{"app": "web"}}, ":http")
	s.Reconnect = config.Backoff{Initial: time.Second, Max: 4 * time.Second}
	var log testutil.Buffer
	f := startForwardLog(t, c, s, slog.New(slog.NewTextHandler(&log, nil)))
	st := waitActive(t, f)
	if st.Pod != "healthy" {
		t.Fatalf("active on %q, want healthy; log:\n%s", st.Pod, log.String())
	}
	for i := range 10 {
		if got := who(t, st.Addresses[0]); got != ns+"/healthy" {
			t.Fatalf("request %d answered by %q, want %s/healthy", i, got, ns)
		}
	}
	setAside := 0
	for line := range strings.Lines(log.String()) {
		if strings.Contains(line, "pod set aside") {
			if !strings.Contains(line, "pod=broken") {
				t.Fatalf("set aside: %s", line)
			}
			setAside++
		}
	}
	if setAside != 1 {
		t.Fatalf("broken set aside %d times, want once (the healthy pod was used since); log:\n%s", setAside, log.String())
	}
	if !strings.Contains(log.String(), "error dialing backend") {
		t.Fatalf("the log does not say why broken was set aside:\n%s", log.String())
	}
	if st := f.Status(); st.State != forward.Active || st.Reconnects != 0 {
		t.Fatalf("%s with %d reconnects, want active and 0", st.State, st.Reconnects)
	}
}
