package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version from the build info is used.
var version = ""

// Main runs the kforward command line and returns the process exit code.
// Errors are printed once, to stderr, as "error: ...".
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	return 0
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "kforward",
		Short: "Keep every Kubernetes port-forward in forwards.yaml alive",
		Long: `kforward reads a forwards.yaml and keeps every port-forward in it running:
it follows pods through restarts and rollouts, reconnects with backoff,
detects dead tunnels and applies edits to the file while it runs.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	if filepath.Base(os.Args[0]) == "kubectl-forward" || filepath.Base(os.Args[0]) == "kubectl-forward.exe" {
		// A kubectl plugin: `kubectl forward run` runs this binary under
		// that name (a symlink, or krew's install), so help says so.
		root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl forward"}
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newRunCmd(), newStatusCmd(), newValidateCmd(), newSchemaCmd(), newVersionCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the kforward version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "kforward", versionString())
			return err
		},
	}
}

func versionString() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		return info.Main.Version
	}
	return "(devel)"
}
