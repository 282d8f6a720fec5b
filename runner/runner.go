// Package runner turns a forwards file into running forwards: it shares one
// API client per (kubeconfig, context) and one pod watch per namespace, and
// reports what every forward is doing.
package runner

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/forward"
)

// Runner runs the forwards of one file.
type Runner struct {
	out io.Writer // one line per forward on start
	log *slog.Logger

	mu       sync.Mutex
	clients  map[clientKey]*client
	watches  map[watchKey]*forward.PodWatch
	forwards map[string]*running
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

type running struct {
	spec   config.Forward
	fwd    *forward.Forward
	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a runner that prints forward summaries to out and logs to log.
func New(out io.Writer, log *slog.Logger) *Runner {
	return &Runner{out: out, log: log, clients: map[clientKey]*client{},
		watches: map[watchKey]*forward.PodWatch{}, forwards: map[string]*running{}}
}

// Run starts every forward of cfg and keeps them running until ctx ends,
// then stops them all and returns once they have stopped.
func (r *Runner) Run(ctx context.Context, cfg *config.Config) error {
	for _, spec := range cfg.Forwards {
		r.start(ctx, spec)
	}
	r.printSummary(ctx)
	<-ctx.Done()
	r.stopAll()
	return nil
}

// start starts one forward; a forward that cannot start is reported and
// does not affect the others.
func (r *Runner) start(ctx context.Context, spec config.Forward) {
	env, err := r.env(ctx, spec)
	if err != nil {
		r.log.Error("cannot start forward", "forward", spec.Name, "err", err)
		return
	}
	fctx, cancel := context.WithCancel(ctx)
	rf := &running{spec: spec, fwd: forward.New(spec, env), cancel: cancel, done: make(chan struct{})}
	r.mu.Lock()
	r.forwards[spec.Name] = rf
	r.mu.Unlock()
	go func() {
		defer close(rf.done)
		if err := rf.fwd.Run(fctx); err != nil && fctx.Err() == nil {
			r.log.Error("forward stopped", "forward", spec.Name, "err", err)
		}
	}()
}

func (r *Runner) stopAll() {
	r.mu.Lock()
	all := r.forwards
	r.forwards = map[string]*running{}
	r.mu.Unlock()
	for _, rf := range all {
		rf.cancel()
	}
	for _, rf := range all {
		<-rf.done
	}
}

// env finds or creates the shared client and pod watch for a forward.
func (r *Runner) env(ctx context.Context, spec config.Forward) (forward.Env, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ck := clientKey{spec.Kubeconfig, spec.Context}
	c, ok := r.clients[ck]
	if !ok {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = spec.Kubeconfig
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: spec.Context})
		cfg, err := cc.ClientConfig()
		if err != nil {
			return forward.Env{}, err
		}
		ns, _, err := cc.Namespace()
		if err != nil {
			return forward.Env{}, err
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return forward.Env{}, err
		}
		c = &client{config: cfg, client: cs, namespace: ns}
		r.clients[ck] = c
	}
	ns := spec.Namespace
	if ns == "" {
		ns = c.namespace
	}
	wk := watchKey{ck, ns}
	w, ok := r.watches[wk]
	if !ok {
		var err error
		// The watch lives as long as the runner: forwards come and go.
		if w, err = forward.WatchPods(ctx, c.client, ns); err != nil {
			return forward.Env{}, err
		}
		r.watches[wk] = w
	}
	return forward.Env{Config: c.config, Client: c.client, Namespace: ns, Pods: w, Log: r.log}, nil
}

// Statuses returns a snapshot of every forward, sorted by name.
func (r *Runner) Statuses() []forward.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []forward.Status
	for _, rf := range r.forwards {
		out = append(out, rf.fwd.Status())
	}
	slices.SortFunc(out, func(a, b forward.Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// printSummary prints one line per forward once its listeners are bound
// (so a free port's chosen number is visible), waiting at most a moment.
func (r *Runner) printSummary(ctx context.Context) {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		bound := true
		for _, s := range r.Statuses() {
			if len(s.Addresses) == 0 && s.State != forward.Failed {
				bound = false
			}
		}
		if bound {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.mu.Lock()
	specs := map[string]config.Forward{}
	for name, rf := range r.forwards {
		specs[name] = rf.spec
	}
	r.mu.Unlock()
	for _, s := range r.Statuses() {
		addrs := strings.Join(s.Addresses, ", ")
		if addrs == "" {
			addrs = "(not bound: " + s.LastError + ")"
		}
		fmt.Fprintf(r.out, "%-20s %s -> %s\n", s.Name, addrs, specs[s.Name].Target)
	}
}
