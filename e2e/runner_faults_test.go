package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kforward/kforward/e2e/cluster"
	"github.com/kforward/kforward/forward"
)

// Issue 12, defect 8: a namespace's pod watch is released with the last
// forward that uses it. The API server's own count of open pod watches
// goes back down when the forward is removed from the file, and up again
// when it comes back (and the forward works again).
func TestRunnerReleasesPodWatch(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "web")
	other := namespaceWithPod(t, c, "web")
	baseline := podWatches(t, c)

	keep := header(c, "", ns) + "  - name: keep\n    pod: web\n    ports: [\":echo\"]\n"
	both := keep + fmt.Sprintf("  - name: other\n    pod: web\n    namespace: %s\n    ports: [\":echo\"]\n", other)
	rf := runFile(t, both)
	rf.waitState("keep", forward.Active)
	rf.waitState("other", forward.Active)
	waitFor(t, 30*time.Second, "two pod watches on the API server", func() bool { return podWatches(t, c)-baseline == 2 })

	begin := time.Now()
	rf.write(keep)
	waitFor(t, 30*time.Second, "other's pod watch closed on the API server", func() bool { return podWatches(t, c)-baseline == 1 })
	t.Logf("pod watch closed on the API server %s after the forward was removed from the file", time.Since(begin).Round(time.Millisecond))
	if s := rf.status("keep"); s.State != forward.Active {
		t.Fatalf("keep is %s after another namespace's forward was removed", s.State)
	}

	rf.write(both)
	s := rf.waitState("other", forward.Active)
	if got, err := echoOnce(s.Addresses[0], "again"); err != nil || got != "again" {
		t.Fatalf("other, added again, echoes %q, %v", got, err)
	}
	if n := podWatches(t, c) - baseline; n != 2 {
		t.Fatalf("%d pod watches after other was added again, want 2", n)
	}
}

// Issue 12, defect 9: forwards look their workload up in a shared cache,
// not with a GET each on every reconnect. 200 forwards to one StatefulSet
// start, then all reconnect after the kubelet was frozen, without one GET
// of the StatefulSet (the API server's own request count says so).
func TestRunnerTargetLookupsFromCache(t *testing.T) {
	c := needCluster(t)
	ns := namespace(t, c)
	const forwards = 200
	replicas := int32(1)
	labels := map[string]string{"app": "db"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec:       appsv1.StatefulSetSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: podTemplate(labels)},
	}
	if _, err := c.Client.AppsV1().StatefulSets(ns).Create(t.Context(), sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReadyPods(t, c.Client, ns, "app=db", 1)

	var b strings.Builder
	b.WriteString(header(c, "", ns))
	for i := range forwards {
		fmt.Fprintf(&b, "  - name: f%03d\n    statefulset: db\n    ports: [\":echo\"]\n", i)
	}
	gets := statefulSetGets(t, c)
	begin := time.Now()
	rf := runFile(t, b.String())
	waitAllActive(t, rf, forwards, 0)
	t.Logf("%d forwards to one StatefulSet active in %s", forwards, time.Since(begin).Round(time.Millisecond))

	// A frozen kubelet fails every forward's health check: each drops its
	// tunnel and, once the kubelet is back, dials again.
	if err := c.Pause(cluster.Kwok); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			c.Resume(cluster.Kwok)
		}
	}()
	waitFor(t, 30*time.Second, "every forward to notice the frozen kubelet", func() bool {
		for _, s := range rf.r.Statuses() {
			if s.State == forward.Active {
				return false
			}
		}
		return true
	})
	c.Resume(cluster.Kwok)
	resumed = true
	begin = time.Now()
	waitAllActive(t, rf, forwards, 1)
	t.Logf("all %d reconnected %s after the kubelet was resumed", forwards, time.Since(begin).Round(time.Millisecond))
	for _, s := range rf.r.Statuses()[:5] {
		if got, err := echoOnce(s.Addresses[0], "again"); err != nil || got != "again" {
			t.Fatalf("%s echoes %q, %v after reconnecting", s.Name, got, err)
		}
	}
	if n := statefulSetGets(t, c) - gets; n != 0 {
		t.Fatalf("%d GETs of the StatefulSet for %d forwards that started and reconnected, want 0 (a shared cache)", n, forwards)
	}
}

// waitAllActive waits until n forwards are active and have reconnected at
// least reconnects times each.
func waitAllActive(t *testing.T, rf *runningFile, n, reconnects int) {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("%d active forwards", n), func() bool {
		active := 0
		for _, s := range rf.r.Statuses() {
			if s.State == forward.Active && s.Reconnects >= reconnects {
				active++
			}
		}
		return active == n
	})
}

// statefulSetGets reads from the API server's metrics how many GETs of a
// single StatefulSet it has answered.
func statefulSetGets(t *testing.T, c *cluster.Cluster) int {
	return apiserverMetric(t, c, "apiserver_request_total", `resource="statefulsets"`, `verb="GET"`, `scope="resource"`)
}
