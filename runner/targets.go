package runner

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kforward/kforward/config"
)

// targetKey is one kind of target (services, or one kind of workload) in
// one namespace of one cluster.
type targetKey struct {
	watchKey
	kind config.Kind
}

// needsLookup reports whether a forward's target names an object whose
// selector it must look up: a service or a workload.
func needsLookup(k config.Kind) bool {
	switch k {
	case config.Service, config.Deployment, config.StatefulSet, config.DaemonSet, config.ReplicaSet:
		return true
	}
	return false
}

// targetCache answers the forwards' look-ups of their services or
// workloads of one kind in one namespace from one informer, so a forward
// that reconnects asks the API server nothing: 200 forwards to one
// StatefulSet after an API-server restart would otherwise queue 200 GETs
// (and their retries while it was down) behind the client's rate limit.
// It follows edits as the GETs did, and keeps of each object only what
// forwards read: its selector, and a service's ports.
type targetCache struct {
	factory   informers.SharedInformerFactory
	indexer   cache.Indexer
	resource  schema.GroupResource // in not-found errors, as the API server names it
	namespace string
}

// watchTargets starts a cache of the objects of kind in namespace; it
// runs until ctx ends, then stop ends it. It returns once the first list
// has arrived; nil (and no error) when the user may not list them, so
// that each forward asks for its own object as before.
func watchTargets(ctx context.Context, client kubernetes.Interface, namespace string, kind config.Kind) (*targetCache, error) {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace))
	var inf cache.SharedIndexInformer
	var resource schema.GroupResource
	var list func(context.Context, metav1.ListOptions) error
	switch kind {
	case config.Service:
		inf, resource = factory.Core().V1().Services().Informer(), corev1.Resource("services")
		list = func(ctx context.Context, o metav1.ListOptions) error {
			_, err := client.CoreV1().Services(namespace).List(ctx, o)
			return err
		}
	case config.Deployment:
		inf, resource = factory.Apps().V1().Deployments().Informer(), appsv1.Resource("deployments")
		list = func(ctx context.Context, o metav1.ListOptions) error {
			_, err := client.AppsV1().Deployments(namespace).List(ctx, o)
			return err
		}
	case config.StatefulSet:
		inf, resource = factory.Apps().V1().StatefulSets().Informer(), appsv1.Resource("statefulsets")
		list = func(ctx context.Context, o metav1.ListOptions) error {
			_, err := client.AppsV1().StatefulSets(namespace).List(ctx, o)
			return err
		}
	case config.DaemonSet:
		inf, resource = factory.Apps().V1().DaemonSets().Informer(), appsv1.Resource("daemonsets")
		list = func(ctx context.Context, o metav1.ListOptions) error {
			_, err := client.AppsV1().DaemonSets(namespace).List(ctx, o)
			return err
		}
	case config.ReplicaSet:
		inf, resource = factory.Apps().V1().ReplicaSets().Informer(), appsv1.Resource("replicasets")
		list = func(ctx context.Context, o metav1.ListOptions) error {
			_, err := client.AppsV1().ReplicaSets(namespace).List(ctx, o)
			return err
		}
	default:
		return nil, fmt.Errorf("no look-up for target kind %q", kind)
	}
	// Ask once with a deadline, as for the pods: an informer that may not
	// list would retry silently forever. One who may only get its own
	// objects keeps getting them.
	check, cancel := context.WithTimeout(ctx, accessCheckTimeout)
	defer cancel()
	if err := list(check, metav1.ListOptions{Limit: 1}); apierrors.IsForbidden(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("list %s in namespace %s: %w", resource, namespace, err)
	}
	if err := inf.SetTransform(trimTarget); err != nil {
		return nil, err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		factory.Shutdown() // ctx has ended: this waits for the informer's goroutines
		return nil, fmt.Errorf("watch %s in %s: %w", resource, namespace, context.Cause(ctx))
	}
	return &targetCache{factory: factory, indexer: inf.GetIndexer(), resource: resource, namespace: namespace}, nil
}

// stop waits for the informer's goroutines once the context watchTargets
// was given has ended.
func (c *targetCache) stop() { c.factory.Shutdown() }

// Target implements forward.Targets. The object is the cache's own: read it
// only.
func (c *targetCache) Target(_ context.Context, t config.Target) (runtime.Object, error) {
	obj, ok, err := c.indexer.GetByKey(c.namespace + "/" + t.Name)
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, apierrors.NewNotFound(c.resource, t.Name)
	}
	return obj.(runtime.Object), nil
}

// trimTarget keeps of a service or workload what forwards read: its name,
// its selector, and a service's ports. A trimmed object trims to itself.
func trimTarget(obj any) (any, error) {
	meta := func(m metav1.ObjectMeta) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion}
	}
	switch o := obj.(type) {
	case *corev1.Service:
		return &corev1.Service{ObjectMeta: meta(o.ObjectMeta), Spec: corev1.ServiceSpec{Selector: o.Spec.Selector, Ports: o.Spec.Ports}}, nil
	case *appsv1.Deployment:
		return &appsv1.Deployment{ObjectMeta: meta(o.ObjectMeta), Spec: appsv1.DeploymentSpec{Selector: o.Spec.Selector}}, nil
	case *appsv1.StatefulSet:
		return &appsv1.StatefulSet{ObjectMeta: meta(o.ObjectMeta), Spec: appsv1.StatefulSetSpec{Selector: o.Spec.Selector}}, nil
	case *appsv1.DaemonSet:
		return &appsv1.DaemonSet{ObjectMeta: meta(o.ObjectMeta), Spec: appsv1.DaemonSetSpec{Selector: o.Spec.Selector}}, nil
	case *appsv1.ReplicaSet:
		return &appsv1.ReplicaSet{ObjectMeta: meta(o.ObjectMeta), Spec: appsv1.ReplicaSetSpec{Selector: o.Spec.Selector}}, nil
	}
	return obj, nil // a tombstone: passed on as is
}
