package forward

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kforward/kforward/config"
)

// Pods is what a forward needs to know about the pods of its namespace.
// One PodWatch can serve every forward on a namespace.
type Pods interface {
	// List returns the pods matching sel.
	List(sel labels.Selector) []*corev1.Pod
	// Changed returns a channel closed at the next change to any pod.
	Changed() <-chan struct{}
}

// PodWatch keeps the pods of one namespace current through a single watch.
type PodWatch struct {
	lister  func(labels.Selector) ([]*corev1.Pod, error)
	stopped chan struct{} // closed once the watch's goroutines have ended
	mu      sync.Mutex
	changed chan struct{}
}

// WatchPods starts a watch on the pods of namespace; it runs until ctx ends,
// and Done says when it has stopped. It returns once the first list has
// arrived; if ctx ends first, it returns an error with nothing left running.
func WatchPods(ctx context.Context, client kubernetes.Interface, namespace string) (*PodWatch, error) {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace))
	inf := factory.Core().V1().Pods()
	w := &PodWatch{changed: make(chan struct{}), stopped: make(chan struct{})}
	notify := func(any) { w.notify() }
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: notify, DeleteFunc: notify, UpdateFunc: func(_, o any) { notify(o) },
	}); err != nil {
		return nil, err
	}
	if err := inf.Informer().SetTransform(trimPod); err != nil {
		return nil, err
	}
	lister := inf.Lister().Pods(namespace)
	w.lister = lister.List
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		factory.Shutdown() // ctx has ended: this waits for the informer's goroutines
		return nil, fmt.Errorf("watch pods in %s: %w", namespace, context.Cause(ctx))
	}
	go func() {
		<-ctx.Done()
		factory.Shutdown()
		close(w.stopped)
	}()
	return w, nil
}

// Done returns a channel closed once the watch has stopped: its context has
// ended and every goroutine it started has returned.
func (w *PodWatch) Done() <-chan struct{} { return w.stopped }

// trimPod keeps of a pod what forwards use, for the watch's cache, which
// holds every pod of the namespace for as long as a forward runs there:
// names, UID, labels (selectors and revision), creation and deletion
// times, phase, the Ready condition and container ports (named remote
// ports). Managed fields, annotations, the rest of the spec and of the
// status are most of a pod's size and go. Other objects pass unchanged,
// and a trimmed pod trims to itself.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	t := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Labels: p.Labels, CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp,
		},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			t.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
			break
		}
	}
	for _, c := range p.Spec.Containers {
		if len(c.Ports) == 0 {
			continue
		}
		ports := make([]corev1.ContainerPort, len(c.Ports))
		for i, cp := range c.Ports {
			ports[i] = corev1.ContainerPort{Name: cp.Name, ContainerPort: cp.ContainerPort, Protocol: cp.Protocol}
		}
		t.Spec.Containers = append(t.Spec.Containers, corev1.Container{Name: c.Name, Ports: ports})
	}
	return t, nil
}

func (w *PodWatch) notify() {
	w.mu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

func (w *PodWatch) List(sel labels.Selector) []*corev1.Pod {
	pods, _ := w.lister(sel)
	return pods
}

func (w *PodWatch) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// running reports whether a pod can take connections at all: Running and
// not being deleted.
func running(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning
}

// ready reports whether a pod is running and Ready.
func ready(p *corev1.Pod) bool {
	if !running(p) {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// pick chooses the pod for new connections, nil if there is none.
//
// A pod target takes its pod once it is running, Ready or not, as kubectl
// does: forwarding to a pod that is not Ready is how people debug it. Other
// targets take a Ready pod, and only while none is Ready a running one (the
// caller says so).
//
// Among those it keeps the current one (by UID) unless a rollout replaced
// it, else takes the newest. A rollout shows as a pod of another revision
// created after the current pod: new connections move to it as soon as it
// is Ready, before the old pod is taken down.
func pick(pods []*corev1.Pod, name string, current types.UID) *corev1.Pod {
	ok := candidates(pods, name, ready)
	if name != "" || len(ok) == 0 {
		ok = candidates(pods, name, running)
	}
	if len(ok) == 0 {
		return nil
	}
	var cur *corev1.Pod
	for _, p := range ok {
		if p.UID == current {
			cur = p
		}
	}
	newest := slices.MinFunc(ok, func(a, b *corev1.Pod) int {
		if c := b.CreationTimestamp.Compare(a.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	if cur != nil && (revision(newest) == revision(cur) || !cur.CreationTimestamp.Before(&newest.CreationTimestamp)) {
		return cur
	}
	return newest
}

// candidates are the pods that pass ok, and for a pod target have its name.
func candidates(pods []*corev1.Pod, name string, ok func(*corev1.Pod) bool) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if ok(p) && (name == "" || p.Name == name) {
			out = append(out, p)
		}
	}
	return out
}

// revision is the pod's controller revision: a Deployment's pod template
// hash, or a StatefulSet's or DaemonSet's revision hash.
func revision(p *corev1.Pod) string {
	if h, ok := p.Labels["pod-template-hash"]; ok {
		return h
	}
	return p.Labels["controller-revision-hash"]
}

// target is a resolved forward target: how to find its pods, and for a
// service, how its ports map to the pods'.
type target struct {
	selector labels.Selector
	podName  string          // only for a pod target
	service  *corev1.Service // only for a service target
}

// Targets looks up the service or workload a forward targets, in its
// namespace. A shared cache (the runner's informers) answers without a
// request, so that many forwards reconnecting at once (after an API-server
// restart) do not queue behind the client's rate limit.
type Targets interface {
	// Target returns the object t names: a *corev1.Service,
	// *appsv1.Deployment, *appsv1.StatefulSet, *appsv1.DaemonSet or
	// *appsv1.ReplicaSet, or an error for which apierrors.IsNotFound holds
	// if there is none.
	Target(ctx context.Context, t config.Target) (runtime.Object, error)
}

// resolve looks the target up: a workload's or service's selector, looked
// up again on every reconnect (so edits are followed) in targets, or with
// a request if targets is nil.
func resolve(ctx context.Context, client kubernetes.Interface, targets Targets, namespace string, t config.Target) (target, error) {
	switch t.Kind {
	case config.Pod:
		return target{selector: labels.Everything(), podName: t.Name}, nil
	case config.Selector:
		return target{selector: labels.SelectorFromSet(t.Selector)}, nil
	}
	var obj runtime.Object
	var err error
	if targets != nil {
		obj, err = targets.Target(ctx, t)
	} else {
		obj, err = getTarget(ctx, client, namespace, t)
	}
	if err != nil {
		return target{}, err
	}
	var sel *metav1.LabelSelector
	switch o := obj.(type) {
	case *corev1.Service:
		if len(o.Spec.Selector) == 0 {
			return target{}, fmt.Errorf("service %s has no selector", t.Name)
		}
		return target{selector: labels.SelectorFromSet(o.Spec.Selector), service: o}, nil
	case *appsv1.Deployment:
		sel = o.Spec.Selector
	case *appsv1.StatefulSet:
		sel = o.Spec.Selector
	case *appsv1.DaemonSet:
		sel = o.Spec.Selector
	case *appsv1.ReplicaSet:
		sel = o.Spec.Selector
	default:
		return target{}, fmt.Errorf("%s: unexpected %T", t, obj)
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return target{}, err
	}
	return target{selector: s}, nil
}

// getTarget asks the API server for the service or workload t names.
func getTarget(ctx context.Context, client kubernetes.Interface, namespace string, t config.Target) (runtime.Object, error) {
	switch t.Kind {
	case config.Service:
		return client.CoreV1().Services(namespace).Get(ctx, t.Name, metav1.GetOptions{})
	case config.Deployment:
		return client.AppsV1().Deployments(namespace).Get(ctx, t.Name, metav1.GetOptions{})
	case config.StatefulSet:
		return client.AppsV1().StatefulSets(namespace).Get(ctx, t.Name, metav1.GetOptions{})
	case config.DaemonSet:
		return client.AppsV1().DaemonSets(namespace).Get(ctx, t.Name, metav1.GetOptions{})
	case config.ReplicaSet:
		return client.AppsV1().ReplicaSets(namespace).Get(ctx, t.Name, metav1.GetOptions{})
	}
	return nil, fmt.Errorf("unknown target kind %q", t.Kind)
}

// remotePort maps a configured remote port to the pod's container port, as
// kubectl does: for a service, service port (number or name) → targetPort
// (number, or a container port name); otherwise a number as is, or a
// container port name looked up on the pod.
func (t target) remotePort(p config.Port, pod *corev1.Pod) (int, error) {
	if t.service != nil {
		for _, sp := range t.service.Spec.Ports {
			if (p.RemoteName != "" && sp.Name == p.RemoteName) || (p.RemoteName == "" && int(sp.Port) == p.Remote) {
				switch {
				case sp.TargetPort.StrVal != "":
					return containerPort(pod, sp.TargetPort.StrVal)
				case sp.TargetPort.IntVal != 0:
					return int(sp.TargetPort.IntVal), nil
				default:
					return int(sp.Port), nil
				}
			}
		}
		return 0, fmt.Errorf("service %s has no port %s", t.service.Name, remoteString(p))
	}
	if p.RemoteName != "" {
		return containerPort(pod, p.RemoteName)
	}
	return p.Remote, nil
}

func containerPort(pod *corev1.Pod, name string) (int, error) {
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == name {
				return int(cp.ContainerPort), nil
			}
		}
	}
	return 0, fmt.Errorf("pod %s has no container port named %q", pod.Name, name)
}

func remoteString(p config.Port) string {
	if p.RemoteName != "" {
		return p.RemoteName
	}
	return fmt.Sprint(p.Remote)
}
