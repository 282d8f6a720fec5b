package forward

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kforward/kforward/config"
)

// heavyPod is a pod as the API server sends it: managed fields,
// annotations, a full spec and status.
func heavyPod(name string, uid types.UID) *corev1.Pod {
	deleting := metav1.NewTime(t0.Add(time.Hour))
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "ns", UID: uid, ResourceVersion: "42",
			Labels:            map[string]string{"app": "web", "pod-template-hash": "v1"},
			CreationTimestamp: metav1.NewTime(t0), DeletionTimestamp: &deleting,
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("{}", 4096)},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply,
				FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{` + strings.Repeat(`"f:x":{},`, 500) + `"f:y":{}}}`)}}},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-v1", UID: "rs"}},
		},
		Spec: corev1.PodSpec{
			NodeName: "node", ServiceAccountName: "default",
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			Containers: []corev1.Container{
				{Name: "app", Image: "example.invalid/app:1", Command: []string{"/app", "--serve"},
					Env:            []corev1.EnvVar{{Name: "BIG", Value: strings.Repeat("x", 8192)}},
					Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP, HostPort: 80}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromString("http")}}}},
				{Name: "sidecar", Image: "example.invalid/sidecar:1"},
			},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "10.0.0.1", HostIP: "192.168.0.1",
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, Message: "scheduled"},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, Reason: "ok", LastTransitionTime: metav1.NewTime(t0)},
			},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true, Image: "example.invalid/app:1", ImageID: strings.Repeat("f", 64)}},
		},
	}
}

// The pod watch's cache keeps only what forwards use: a pod comes out
// with everything else gone, and every decision about it is the same.
func TestTrimPod(t *testing.T) {
	in := heavyPod("a", "uid-a")
	out, err := trimPod(in.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	p := out.(*corev1.Pod)
	want := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns", UID: "uid-a", ResourceVersion: "42",
			Labels: in.Labels, CreationTimestamp: in.CreationTimestamp, DeletionTimestamp: in.DeletionTimestamp},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("trimmed pod\n %+v\nwant\n %+v", p, want)
	}
	before, _ := json.Marshal(in)
	after, _ := json.Marshal(p)
	t.Logf("a pod of %d bytes (JSON) is cached in %d", len(before), len(after))

	// The same decisions on the trimmed pod as on the whole one.
	alive := in.DeepCopy()
	alive.DeletionTimestamp = nil
	trimmedAlive, _ := trimPod(alive.DeepCopy())
	for _, pair := range [][2]*corev1.Pod{{in, p}, {alive, trimmedAlive.(*corev1.Pod)}} {
		whole, trimmed := pair[0], pair[1]
		if running(whole) != running(trimmed) || ready(whole) != ready(trimmed) || revision(whole) != revision(trimmed) {
			t.Errorf("running/ready/revision %v/%v/%q on the pod, %v/%v/%q trimmed", running(whole), ready(whole), revision(whole), running(trimmed), ready(trimmed), revision(trimmed))
		}
		if !labels.SelectorFromSet(labels.Set{"app": "web"}).Matches(labels.Set(trimmed.Labels)) {
			t.Error("the trimmed pod no longer matches its selector")
		}
	}
	port, err := target{}.remotePort(config.Port{RemoteName: "http"}, p)
	if err != nil || port != 8080 {
		t.Errorf("named port http on the trimmed pod: %d, %v; want 8080", port, err)
	}
	if again, _ := trimPod(p); !reflect.DeepEqual(again, p) {
		t.Errorf("trimming a trimmed pod changed it: %+v", again)
	}
	if obj, _ := trimPod("not a pod"); obj != "not a pod" {
		t.Errorf("trimPod changed an object that is not a pod: %v", obj)
	}
}

// WatchPods caches pods trimmed.
func TestWatchPodsCachesTrimmedPods(t *testing.T) {
	in := heavyPod("a", "uid-a")
	in.DeletionTimestamp = nil
	client := fake.NewClientset(in)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := WatchPods(ctx, client, "ns")
	if err != nil {
		t.Fatal(err)
	}
	list := w.List(labels.Everything())
	if len(list) != 1 {
		t.Fatalf("%d pods listed, want 1", len(list))
	}
	p := list[0]
	trimmed, _ := trimPod(in)
	if !reflect.DeepEqual(p, trimmed) {
		size, _ := json.Marshal(p)
		t.Fatalf("the watch cached %d bytes of the pod (managed fields %d, annotations %d), want it trimmed",
			len(size), len(p.ManagedFields), len(p.Annotations))
	}
	if !ready(p) || p.UID != "uid-a" {
		t.Fatalf("cached pod %s (uid %s) not ready", p.Name, p.UID)
	}
}

// The pods the API server answered 404 for are remembered only while the
// watch still lists them: after any number of pods came and went, the
// forward remembers at most the pods there are.
func TestGoneStaysBounded(t *testing.T) {
	f := New(spec(":http"), Env{Log: (&testLog{}).logger()})
	ctx := context.Background()
	tgt := target{selector: labels.Everything()}
	gone := map[types.UID]bool{}
	for i := range 1000 {
		vanished := heavyPod(fmt.Sprint("vanished-", i), types.UID(fmt.Sprint("vanished-uid-", i)))
		vanished.DeletionTimestamp = nil
		next := vanished.DeepCopy()
		next.Name, next.UID = fmt.Sprint("next-", i), types.UID(fmt.Sprint("next-uid-", i))
		pods := newFakePods(vanished, next)
		gone[vanished.UID] = true // it answered 404; the watch still lists it
		got := f.waitPod(ctx, pods, tgt, "", gone, aside{}, func([]*corev1.Pod) {})
		if got == nil || got.UID != next.UID {
			t.Fatalf("round %d: picked %v, want the pod that did not vanish", i, got)
		}
		if !gone[vanished.UID] {
			t.Fatalf("round %d: forgot a vanished pod the watch still lists", i)
		}
	}
	if len(gone) > 2 {
		t.Fatalf("after 1000 vanished pods the forward remembers %d, want at most the 2 listed", len(gone))
	}
}
