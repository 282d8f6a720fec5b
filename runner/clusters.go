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

// clusters shares one API client per (kubeconfig, context), one pod
// watch per (kubeconfig, context, namespace), and one cache of services or
// of each kind of workload per namespace, among the forwards that use
// them, for as long as one does: the last forward to let go of a watch or
// cache stops it, and of a client drops it. Each is built once, in the
// background, while forwards on other clusters go on starting; a failure
// is not kept, so the next start tries again.
type clusters struct {
	mu      sync.Mutex
	clients map[clientKey]*shared[*client]
	watches map[watchKey]*shared[*forward.PodWatch]
	targets map[targetKey]*shared[*targetCache]
	wg      sync.WaitGroup // the goroutine of every shared value
	trust   *trust         // which kubeconfig content may be used
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
	conns     *conns // every connection of client, to close those a silence left dead
}

// shared is a value that its own goroutine builds and then keeps until no
// one holds it. The build runs on the runner's life, not on a caller's
// context: a forward that stops while it waits fails no other forward
// waiting for the same value, and a build that hangs (an API server that
// stopped answering) holds up no one's shutdown. When the last holder
// lets go, the value's context ends: a build still under way is abandoned,
// a watch stops.
//
// Not singleflight: its result is handed to the callers of the moment and
// forgotten, while a shared value outlives the call and is stopped only at
// its last release.
type shared[T any] struct {
	refs   int                // holders, guarded by clusters.mu
	cancel context.CancelFunc // ends the build and the value
	built  chan struct{}      // closed once v and err are set
	v      T
	err    error
}

func newClusters(t *trust) *clusters {
	return &clusters{
		trust:   t,
		clients: map[clientKey]*shared[*client]{},
		watches: map[watchKey]*shared[*forward.PodWatch]{},
		targets: map[targetKey]*shared[*targetCache]{},
	}
}

// acquire holds m[k] and returns it once built, starting its build on life
// if no one holds it yet; it waits on ctx. Unless it fails, the caller lets
// go with release. wait, if not nil, waits for a built value to stop once
// its context has ended.
func acquire[K comparable, T any](ctx, life context.Context, c *clusters, m map[K]*shared[T], k K, build func(context.Context) (T, error), wait func(T)) (*shared[T], error) {
	c.mu.Lock()
	s, ok := m[k]
	if !ok {
		sctx, cancel := context.WithCancel(life)
		s = &shared[T]{cancel: cancel, built: make(chan struct{})}
		m[k] = s
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			v, err := build(sctx)
			if err != nil {
				c.mu.Lock()
				if m[k] == s {
					delete(m, k) // the next caller tries again
				}
				c.mu.Unlock()
				cancel()
			}
			s.v, s.err = v, err
			close(s.built)
			if err == nil && wait != nil {
				<-sctx.Done()
				wait(v)
			}
		}()
	}
	s.refs++
	c.mu.Unlock()
	select {
	case <-s.built:
		if s.err != nil {
			release(c, m, k, s)
			return nil, s.err
		}
		return s, nil
	case <-ctx.Done():
		release(c, m, k, s)
		return nil, ctx.Err()
	}
}

// release lets go of s, which acquire returned for m[k]; the last one to
// let go ends it.
func release[K comparable, T any](c *clusters, m map[K]*shared[T], k K, s *shared[T]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.refs--; s.refs > 0 {
		return
	}
	s.cancel()
	if m[k] == s {
		delete(m, k)
	}
}

// wait returns once every shared value's goroutine has ended: call it
// after every forward has let go, or after life has ended.
func (c *clusters) wait() { c.wg.Wait() }

// accessCheckTimeout bounds the first request to a cluster, so an
// unreachable one fails its forwards with a reason instead of hanging.
const accessCheckTimeout = 10 * time.Second

// env returns what a forward needs, its cluster's client, its namespace's
// pod watch and the cache its target is looked up in, waiting for them on
// ctx; life bounds how long
// they may live. Unless env fails, the caller calls the returned func once
// the forward has stopped, to let go of them.
func (c *clusters) env(ctx, life context.Context, spec config.Forward) (forward.Env, func(), error) {
	var held []func() // releases of what is acquired, in order
	letGo := func() {
		for i := len(held) - 1; i >= 0; i-- {
			held[i]()
		}
	}
	ck := clientKey{spec.Kubeconfig, spec.Context}
	cs, err := acquire(ctx, life, c, c.clients, ck, func(context.Context) (*client, error) { return c.newClient(ck) },
		func(cl *client) { cl.conns.close() })
	if err != nil {
		return forward.Env{}, nil, err
	}
	held = append(held, func() { release(c, c.clients, ck, cs) })
	cl := cs.v
	ns := spec.Namespace
	if ns == "" {
		ns = cl.namespace
	}
	wk := watchKey{ck, ns}
	ws, err := acquire(ctx, life, c, c.watches, wk, func(ctx context.Context) (*forward.PodWatch, error) {
		return watchPods(ctx, cl.client, ns)
	}, func(w *forward.PodWatch) { <-w.Done() })
	if err != nil {
		letGo()
		return forward.Env{}, nil, err
	}
	held = append(held, func() { release(c, c.watches, wk, ws) })
	env := forward.Env{Config: cl.config, Client: cl.client, Namespace: ns, Pods: ws.v,
		AfterSilence: func(silentAt time.Time) { cl.conns.closeBefore(silentAt) }}
	if kind := spec.Target.Kind; needsLookup(kind) {
		tk := targetKey{wk, kind}
		ts, err := acquire(ctx, life, c, c.targets, tk, func(ctx context.Context) (*targetCache, error) {
			return watchTargets(ctx, cl.client, ns, kind)
		}, func(tc *targetCache) {
			if tc != nil {
				tc.stop()
			}
		})
		if err != nil {
			letGo()
			return forward.Env{}, nil, err
		}
		held = append(held, func() { release(c, c.targets, tk, ts) })
		if ts.v != nil { // else not allowed to list them: the forward gets its own
			env.Targets = ts.v
		}
	}
	return env, sync.OnceFunc(letGo), nil
}

// watchPods checks that namespace can be read, then watches its pods until
// ctx ends.
func watchPods(ctx context.Context, client kubernetes.Interface, namespace string) (*forward.PodWatch, error) {
	// Ask once with a deadline: a denied or unreachable namespace is an
	// error now, not a watch that retries silently forever.
	check, cancel := context.WithTimeout(ctx, accessCheckTimeout)
	defer cancel()
	if _, err := client.CoreV1().Pods(namespace).List(check, metav1.ListOptions{Limit: 1}); err != nil {
		return nil, fmt.Errorf("list pods in namespace %s: %w", namespace, err)
	}
	// Listing pods in a namespace that does not exist succeeds, empty.
	// Say so (when allowed to look; many users may not get namespaces).
	if _, err := client.CoreV1().Namespaces().Get(check, namespace, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("namespace %s does not exist", namespace)
	}
	return forward.WatchPods(ctx, client, namespace)
}

// newClient connects as kube.Connect does, through dials the client keeps
// (see conns). A kubeconfig the forwards file names is used only with the
// content this user approved: the client is built from the very bytes
// whose hash was approved.
func (c *clusters) newClient(k clientKey) (*client, error) {
	data, own, err := c.trust.readKubeconfig(k.kubeconfig)
	if err != nil {
		return nil, err
	}
	var kc *kube.Client
	if own {
		kc, err = kube.Connect(k.kubeconfig, k.context)
	} else {
		kc, err = kube.ConnectData(k.kubeconfig, data, k.context)
	}
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(kc.Config)
	tracked := newConns(cfg.Dial)
	cfg.Dial = tracked.DialContext
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &client{config: cfg, client: cs, namespace: kc.Namespace, conns: tracked}, nil
}
