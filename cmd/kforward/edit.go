package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/config/edit"
	"github.com/kforward/kforward/internal/kube"
	"github.com/kforward/kforward/internal/scaffold"
	"github.com/kforward/kforward/runner"
)

// clusterTimeout bounds what `init` asks the cluster: an unreachable one is
// an error in seconds, not a hang.
const clusterTimeout = 15 * time.Second

func newInitCmd() *cobra.Command {
	var (
		file, kubeconfig, kubeContext, selector string
		namespaces                              []string
		all, workloads, force, dryRun           bool
	)
	cmd := &cobra.Command{
		Use:   "init [-n NAMESPACE]... [--context CTX] [-l SELECTOR] [-f FILE]",
		Short: "Write a forwards.yaml from the Services running in the cluster",
		Long: `Write a forwards.yaml with one forward per Service in the namespace (the
context's, or each -n; -A for all), every named port as LOCAL:name. The local
port is the service port where that is 1024 or more and not taken in the
file, else a free one chosen at run time. --workloads adds Deployments and
StatefulSets no Service selects. The same cluster gives the same file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !dryRun && !force {
				if _, err := os.Stat(file); err == nil {
					return fmt.Errorf("%s exists; --force overwrites it, --dry-run prints the new one", file)
				}
			}
			c, err := kube.Connect(kubeconfig, kubeContext)
			if err != nil {
				return err
			}
			if len(namespaces) == 0 && !all {
				namespaces = []string{c.Namespace}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), clusterTimeout)
			defer cancel()
			data, err := scaffold.Generate(ctx, c.Client, scaffold.Options{
				Context: c.Context, Namespaces: namespaces, Selector: selector, Workloads: workloads,
			})
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("the cluster of context %s did not answer within %s: %w", c.Context, clusterTimeout, err)
			}
			if err != nil {
				return err
			}
			if dryRun {
				_, err := cmd.OutOrStdout().Write(data)
				return err
			}
			if err := edit.WriteFile(file, data); err != nil {
				return err
			}
			cfg, err := config.ParseFile(file, data)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d forwards; kforward run starts them\n", file, len(cfg.Forwards))
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "forwards.yaml", "the file to write")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	cmd.Flags().StringVar(&kubeContext, "context", "", "kubeconfig context (default: the current one)")
	cmd.Flags().StringSliceVarP(&namespaces, "namespace", "n", nil, "namespace to read; repeat for more (default: the context's)")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "read every namespace")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "only Services and workloads with these labels (app=web,tier!=db)")
	cmd.Flags().BoolVar(&workloads, "workloads", false, "also Deployments and StatefulSets that no Service selects")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing file")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the file instead of writing it")
	completeCluster(cmd, &kubeconfig, &kubeContext)
	return cmd
}

func newAddCmd() *cobra.Command {
	var (
		file, name, namespace, kubeContext, kubeconfig string
	)
	cmd := &cobra.Command{
		Use:   "add TARGET PORT... [--name N] [-n NS] [--context CTX] [-f FILE]",
		Short: "Add a forward to the file, keeping everything else in it as it is",
		Long: `Add a forward to the file: TARGET as kubectl port-forward takes it (svc/api,
deploy/web, sts/db, pod/x or a bare pod name) and ports in its syntax
(5000, 6000:5000, :5000, 8080:http). Comments and formatting of the rest of
the file stay as they are. The result is checked first: an invalid one
(a duplicate name, a local port already used) changes nothing. A running
kforward run picks the change up.`,
		Example: `  kforward add svc/api 8080:http
  kforward add sts/db 5432 -n data --name db`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, target, err := edit.ParseTarget(args[0])
			if err != nil {
				return err
			}
			data, err := os.ReadFile(file)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			out, err := edit.Add(file, data, edit.Forward{
				Name: name, Kind: kind, Target: target, Ports: args[1:], Namespace: namespace, Context: kubeContext,
			})
			if err != nil {
				return err
			}
			if err := edit.WriteFile(file, out); err != nil {
				return err
			}
			added := name
			if added == "" {
				added = string(kind) + "/" + target
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added %s to %s\n", added, file)
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return completeTarget(withFileDefaults(file, kubeconfig, kubeContext, namespace), toComplete)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "forwards.yaml", "forwards file (created if missing)")
	cmd.Flags().StringVar(&name, "name", "", "the forward's name (default: KIND/NAME, e.g. service/api)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace (default: the file's defaults, else the context's)")
	cmd.Flags().StringVar(&kubeContext, "context", "", "kubeconfig context (default: the file's defaults, else the current one)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig for completion (default: $KUBECONFIG, then ~/.kube/config)")
	completeClusterFile(cmd, &file, &kubeconfig, &kubeContext)
	return cmd
}

// where says which cluster and namespace completion asks.
type where struct{ kubeconfig, context, namespace string }

// withFileDefaults fills what the flags leave empty from the forwards
// file, as kforward run would: its kubeconfig and its defaults' context
// and namespace (a file that does not parse adds nothing). A kubeconfig
// the file names is used only as kforward run would use it: the user's
// own, or approved (kforward allow); a TAB never runs the exec plugin of
// a kubeconfig that came with a repository.
func withFileDefaults(file, kubeconfig, kubeContext, namespace string) where {
	w := where{kubeconfig, kubeContext, namespace}
	cfg, err := config.Load(file)
	if err != nil {
		return w
	}
	if w.kubeconfig == "" && runner.KubeconfigApproved(file, cfg.Kubeconfig) {
		w.kubeconfig = cfg.Kubeconfig
	}
	if w.context == "" {
		w.context = cfg.Context
	}
	if w.namespace == "" {
		w.namespace = cfg.Namespace
	}
	return w
}

func newRemoveCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "remove NAME [-f FILE]",
		Short: "Remove a forward from the file, keeping everything else in it as it is",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(file)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("there is no forwards file at %s to remove %s from", file, args[0])
			}
			if err != nil {
				return err
			}
			out, err := edit.Remove(file, data, args[0])
			if err != nil {
				return err
			}
			if err := edit.WriteFile(file, out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s from %s\n", args[0], file)
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			cfg, err := config.Load(file)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []cobra.Completion
			for _, f := range cfg.Forwards {
				names = append(names, cobra.CompletionWithDesc(f.Name, f.Target.String()))
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "forwards.yaml", "forwards file")
	return cmd
}
