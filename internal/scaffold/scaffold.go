// Package scaffold writes a forwards.yaml from what runs in a cluster, for
// `kforward init`: one forward per Service, and optionally per Deployment
// or StatefulSet that no Service selects.
//
// It only reads the cluster, through a kubernetes.Interface the caller
// builds (a fake in unit tests, the local control plane in e2e tests), and
// writes nothing: Generate returns the file's bytes. The same cluster gives
// the same bytes: everything is sorted and nothing depends on time.
package scaffold

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/kforward/kforward/config"
)

// Options say what to read and what to write in defaults:.
type Options struct {
	// Context is written to defaults: as the context every forward uses.
	// Empty leaves it out: kforward then uses the kubeconfig's current
	// context, whichever that is when it runs.
	Context string
	// Namespaces are the namespaces to read. With exactly one, it goes in
	// defaults:; with more, or none (every namespace), each forward names
	// its own.
	Namespaces []string
	// Selector is a label selector (app=web,tier!=db) on the labels of the
	// Services and workloads; empty selects all of them.
	Selector string
	// Workloads adds Deployments and StatefulSets that no Service selects.
	Workloads bool
	// SchemaURL is the JSON Schema for the yaml-language-server line; empty
	// means edit.SchemaURL.
	SchemaURL string
}

// ErrNoForwards matches (errors.Is) Generate's error when nothing in the
// namespaces can be forwarded: a file without forwards would be invalid.
var ErrNoForwards = errors.New("nothing to forward")

// Generate reads Services (and with opts.Workloads, Deployments and
// StatefulSets) and returns a forwards file for them that config accepts.
// A Service without a selector (no pods to follow), of type ExternalName
// or without a TCP port is left out with a comment saying so. The caller
// bounds the time with ctx: an unreachable cluster fails when it ends, and
// errors say what was being listed.
func Generate(ctx context.Context, client kubernetes.Interface, opts Options) ([]byte, error) {
	sel, err := labels.Parse(opts.Selector)
	if err != nil {
		return nil, fmt.Errorf("invalid selector %q: %w", opts.Selector, err)
	}
	cl, err := read(ctx, client, opts)
	if err != nil {
		return nil, err
	}
	g := &generator{opts: opts, sel: sel, names: map[string]bool{}, ports: map[int32]bool{}}
	// One namespace asked for goes in defaults:; otherwise each forward
	// names its own.
	g.perForward = len(opts.Namespaces) == 0 || len(cl.namespaces) != 1
	if !g.perForward {
		g.namespace1 = cl.namespaces[0]
	}
	for _, ns := range cl.namespaces {
		g.namespace(ns, cl)
	}
	if g.forwards == 0 {
		return nil, fmt.Errorf("found no Service with a selector and a TCP port%s in %s: %w", g.alsoWorkloads(), where(opts), ErrNoForwards)
	}
	out := g.file()
	if _, err := config.Parse(out); err != nil {
		return nil, fmt.Errorf("generated a file config refuses (a bug in kforward): %w", err)
	}
	return out, nil
}

// cluster is what was read, by namespace.
type cluster struct {
	namespaces   []string // sorted
	services     map[string][]corev1.Service
	deployments  map[string][]appsv1.Deployment
	statefulsets map[string][]appsv1.StatefulSet
}

func read(ctx context.Context, client kubernetes.Interface, opts Options) (*cluster, error) {
	cl := &cluster{
		services:     map[string][]corev1.Service{},
		deployments:  map[string][]appsv1.Deployment{},
		statefulsets: map[string][]appsv1.StatefulSet{},
	}
	namespaces := slices.Clone(opts.Namespaces)
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	slices.Sort(namespaces)
	namespaces = slices.Compact(namespaces)
	for _, ns := range namespaces {
		in := fmt.Sprintf("namespace %q", ns)
		if ns == metav1.NamespaceAll {
			in = "all namespaces"
		}
		svcs, err := client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list services in %s: %w", in, err)
		}
		for _, s := range svcs.Items {
			cl.services[s.Namespace] = append(cl.services[s.Namespace], s)
		}
		if !opts.Workloads {
			continue
		}
		deps, err := client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list deployments in %s: %w", in, err)
		}
		for _, d := range deps.Items {
			cl.deployments[d.Namespace] = append(cl.deployments[d.Namespace], d)
		}
		sets, err := client.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list statefulsets in %s: %w", in, err)
		}
		for _, s := range sets.Items {
			cl.statefulsets[s.Namespace] = append(cl.statefulsets[s.Namespace], s)
		}
	}
	if len(opts.Namespaces) > 0 {
		cl.namespaces = namespaces
	} else {
		for _, m := range []map[string]bool{keys(cl.services), keys(cl.deployments), keys(cl.statefulsets)} {
			for ns := range m {
				cl.namespaces = append(cl.namespaces, ns)
			}
		}
		slices.Sort(cl.namespaces)
		cl.namespaces = slices.Compact(cl.namespaces)
	}
	for _, ns := range cl.namespaces {
		slices.SortFunc(cl.services[ns], func(a, b corev1.Service) int { return strings.Compare(a.Name, b.Name) })
		slices.SortFunc(cl.deployments[ns], func(a, b appsv1.Deployment) int { return strings.Compare(a.Name, b.Name) })
		slices.SortFunc(cl.statefulsets[ns], func(a, b appsv1.StatefulSet) int { return strings.Compare(a.Name, b.Name) })
	}
	return cl, nil
}

func keys[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func where(opts Options) string {
	switch len(opts.Namespaces) {
	case 0:
		return "any namespace"
	case 1:
		return "namespace " + opts.Namespaces[0]
	}
	return "namespaces " + strings.Join(opts.Namespaces, ", ")
}

func (g *generator) alsoWorkloads() string {
	s := ""
	if g.opts.Selector != "" {
		s = " matching " + g.opts.Selector
	}
	if g.opts.Workloads {
		s += ", nor a Deployment or StatefulSet outside them with a TCP container port,"
	}
	return s
}
