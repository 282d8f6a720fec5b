package runner

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/internal/kube"
)

// clusters shares one API client per (kubeconfig, context) and one pod
// watch per (kubeconfig, context, namespace) among all forwards. Each is
// made once, by the first forward that needs it, while forwards on other
// clusters go on starting; a failure is not kept, so the next start tries
// again.
type clusters struct {
	mu      sync.Mutex
	clients map[clientKey]*once[*client]
	watches map[watchKey]*once[*forward.PodWatch]
}

type clientKey struct{ kubeconfig, context string }

type watchKey struct {
	clientKey
	namespace string
}

type client struct {
	config    *rest.Config
	client    kubernetes.Interface
	namespace string // the context's namespace
}

// once is a value made by one caller while others wait for it.
type once[T any] struct {
	done chan struct{}
	v    T
	err  error
}

func newClusters() *clusters {
	return &clusters{clients: map[clientKey]*once[*client]{}, watches: map[watchKey]*once[*forward.PodWatch]{}}
}

// get returns m[k], making it with build if no one has (or the last try failed).
func get[K comparable, T any](ctx context.Context, mu *sync.Mutex, m map[K]*once[T], k K, build func() (T, error)) (T, error) {
	mu.Lock()
	o, ok := m[k]
	if !ok {
		o = &once[T]{done: make(chan struct{})}
		m[k] = o
	}
	mu.Unlock()
	if !ok {
		o.v, o.err = build()
		if o.err != nil {
			mu.Lock()
			delete(m, k)
			mu.Unlock()
		}
		close(o.done)
	}
	select {
	case <-o.done:
		return o.v, o.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// accessCheckTimeout bounds the first request to a cluster, so an
// unreachable one fails its forwards with a reason instead of hanging.
const accessCheckTimeout = 10 * time.Second

// env returns what a forward needs: its cluster's client and its
// namespace's pod watch. watchCtx bounds the watch's life.
func (c *clusters) env(ctx, watchCtx context.Context, spec config.Forward) (forward.Env, error) {
	ck := clientKey{spec.Kubeconfig, spec.Context}
	cl, err := get(ctx, &c.mu, c.clients, ck, func() (*client, error) { return newClient(ck) })
	if err != nil {
		return forward.Env{}, err
	}
	ns := spec.Namespace
	if ns == "" {
		ns = cl.namespace
	}
	w, err := get(ctx, &c.mu, c.watches, watchKey{ck, ns}, func() (*forward.PodWatch, error) {
		// Ask once with a deadline: a denied or unreachable namespace is
		// an error now, not a watch that retries silently forever.
		check, cancel := context.WithTimeout(ctx, accessCheckTimeout)
		defer cancel()
		if _, err := cl.client.CoreV1().Pods(ns).List(check, metav1.ListOptions{Limit: 1}); err != nil {
			return nil, fmt.Errorf("list pods in namespace %s: %w", ns, err)
		}
		// Listing pods in a namespace that does not exist succeeds, empty.
		// Say so (when allowed to look; many users may not get namespaces).
		if _, err := cl.client.CoreV1().Namespaces().Get(check, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("namespace %s does not exist", ns)
		}
		return forward.WatchPods(watchCtx, cl.client, ns)
	})
	if err != nil {
		return forward.Env{}, err
	}
	return forward.Env{Config: cl.config, Client: cl.client, Namespace: ns, Pods: w}, nil
}

func newClient(k clientKey) (*client, error) {
	c, err := kube.Connect(k.kubeconfig, k.context)
	if err != nil {
		return nil, err
	}
	return &client{config: c.Config, client: c.Client, namespace: c.Namespace}, nil
}
