package forward

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestPick(t *testing.T) {
	pod := func(name, rev string, age int, ready bool) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(name), Labels: map[string]string{"pod-template-hash": rev},
				CreationTimestamp: metav1.NewTime(t0.Add(-time.Duration(age) * time.Minute))},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		}
		if !ready {
			p.Status.Conditions[0].Status = corev1.ConditionFalse
		}
		return p
	}
	terminating := pod("term", "v2", 0, true)
	terminating.DeletionTimestamp = &metav1.Time{Time: t0}
	pending := pod("pending", "v1", 0, false)
	pending.Status.Phase = corev1.PodPending
	for _, tc := range []struct {
		name    string
		pods    []*corev1.Pod
		only    string // a pod target's name
		current string // its UID
		want    string
	}{
		{"newest usable pod first", []*corev1.Pod{pod("old", "v1", 9, true), pod("new", "v1", 1, true)}, "", "", "new"},
		{"sticks to the current pod of the same revision", []*corev1.Pod{pod("old", "v1", 9, true), pod("new", "v1", 1, true)}, "", "old", "old"},
		{"a rollout's ready pod takes over", []*corev1.Pod{pod("old", "v1", 9, true), pod("new", "v2", 1, true)}, "", "old", "new"},
		{"not before it is ready", []*corev1.Pod{pod("old", "v1", 9, true), pod("new", "v2", 1, false)}, "", "old", "old"},
		{"an older revision does not take over", []*corev1.Pod{pod("cur", "v2", 1, true), pod("older", "v1", 9, true)}, "", "cur", "cur"},
		{"moves when the current pod is unready", []*corev1.Pod{pod("a", "v1", 9, false), pod("b", "v1", 5, true)}, "", "a", "b"},
		{"never a terminating pod", []*corev1.Pod{terminating, pod("b", "v1", 5, true)}, "", "", "b"},
		{"a pod target takes only its pod", []*corev1.Pod{pod("a", "v1", 9, true), pod("b", "v1", 1, true)}, "a", "", "a"},
		{"a pod target takes its pod running, not ready", []*corev1.Pod{pod("a", "v1", 9, false), pod("b", "v1", 1, true)}, "a", "", "a"},
		{"a pod target never takes its pod before it runs", []*corev1.Pod{pending}, "pending", "", ""},
		{"a pod target never takes its pod terminating", []*corev1.Pod{terminating}, "term", "", ""},
		{"a ready pod before a newer one not ready", []*corev1.Pod{pod("old", "v1", 9, true), pod("new", "v1", 1, false)}, "", "", "old"},
		{"no ready pod: the newest running one", []*corev1.Pod{pod("a", "v1", 9, false), pod("b", "v1", 5, false), pending}, "", "", "b"},
		{"no ready pod: sticks to the current running one", []*corev1.Pod{pod("a", "v1", 9, false), pod("b", "v1", 5, false)}, "", "a", "a"},
		{"a ready pod replaces the running one used for want of it", []*corev1.Pod{pod("a", "v1", 1, false), pod("b", "v1", 9, true)}, "", "a", "b"},
		{"never a pod that does not run", []*corev1.Pod{pending, terminating}, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if p := pick(tc.pods, tc.only, types.UID(tc.current)); p != nil {
				got = p.Name
			}
			if got != tc.want {
				t.Fatalf("picked %q, want %q", got, tc.want)
			}
		})
	}
}
