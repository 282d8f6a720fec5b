package main

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"github.com/kforward/kforward/internal/kube"
)

// completionTimeout bounds what a TAB may wait for: a slow or unreachable
// cluster completes nothing, and the shell never hangs.
const completionTimeout = time.Second

// completeCluster completes -n with the cluster's namespaces and --context
// with the kubeconfig's contexts.
func completeCluster(cmd *cobra.Command, kubeconfig, kubeContext *string) {
	none := ""
	completeClusterFile(cmd, &none, kubeconfig, kubeContext)
}

// completeClusterFile is completeCluster for a command with a forwards
// file: what the flags leave empty comes from the file.
func completeClusterFile(cmd *cobra.Command, file, kubeconfig, kubeContext *string) {
	at := func() where { return withFileDefaults(*file, *kubeconfig, *kubeContext, "") }
	cmd.RegisterFlagCompletionFunc("namespace", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return fromCluster(at(), func(ctx context.Context, c *kube.Client) ([]string, error) {
			l, err := c.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			if err != nil {
				return nil, err
			}
			return objectNames(l)
		}), cobra.ShellCompDirectiveNoFileComp
	})
	cmd.RegisterFlagCompletionFunc("context", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		names, _, _ := kube.Contexts(at().kubeconfig)
		return names, cobra.ShellCompDirectiveNoFileComp
	})
}

// targetKinds list what `add svc/<TAB>` and friends complete, by kind.
var targetKinds = map[string]func(ctx context.Context, cs kubernetes.Interface, ns string) (runtime.Object, error){
	"svc": func(ctx context.Context, cs kubernetes.Interface, ns string) (runtime.Object, error) {
		return cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	},
	"deploy": func(ctx context.Context, cs kubernetes.Interface, ns string) (runtime.Object, error) {
		return cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	},
	"sts": func(ctx context.Context, cs kubernetes.Interface, ns string) (runtime.Object, error) {
		return cs.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
	},
	"pod": func(ctx context.Context, cs kubernetes.Interface, ns string) (runtime.Object, error) {
		return cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	},
}

// objectNames are the names of the items of a list.
func objectNames(list runtime.Object) ([]string, error) {
	items, err := meta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(items))
	for _, o := range items {
		if m, err := meta.Accessor(o); err == nil {
			out = append(out, m.GetName())
		}
	}
	return out, nil
}

// kindAliases maps what may be typed before the slash to targetKinds' keys.
var kindAliases = map[string]string{
	"svc": "svc", "service": "svc", "services": "svc",
	"deploy": "deploy", "deployment": "deploy", "deployments": "deploy",
	"sts": "sts", "statefulset": "sts", "statefulsets": "sts",
	"pod": "pod", "po": "pod", "pods": "pod",
}

// completeTarget completes add's TARGET: the kinds first (svc/, deploy/,
// sts/, pod/), then the names of that kind in the namespace.
func completeTarget(at where, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	kind, _, typed := strings.Cut(toComplete, "/")
	if !typed {
		return []cobra.Completion{"svc/", "deploy/", "sts/", "pod/"}, cobra.ShellCompDirectiveNoSpace | cobra.ShellCompDirectiveNoFileComp
	}
	list := targetKinds[kindAliases[kind]]
	if list == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	found := fromCluster(at, func(ctx context.Context, c *kube.Client) ([]string, error) {
		ns := at.namespace
		if ns == "" {
			ns = c.Namespace
		}
		l, err := list(ctx, c.Client, ns)
		if err != nil {
			return nil, err
		}
		return objectNames(l)
	})
	out := make([]cobra.Completion, len(found))
	for i, n := range found {
		out[i] = kind + "/" + n
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// fromCluster runs ask against the cluster and returns its answer sorted,
// or nothing once completionTimeout has passed or on any error. It does
// not wait for ask to give up: a connect that hangs (an exec credential
// plugin, a blackholed VPN) is left behind, and the process exits.
func fromCluster(at where, ask func(context.Context, *kube.Client) ([]string, error)) []string {
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	answer := make(chan []string, 1)
	go func() {
		c, err := kube.Connect(at.kubeconfig, at.context)
		if err != nil {
			answer <- nil
			return
		}
		got, err := ask(ctx, c)
		if err != nil {
			got = nil
		}
		answer <- got
	}()
	select {
	case got := <-answer:
		slices.Sort(got)
		return got
	case <-ctx.Done():
		return nil
	}
}
