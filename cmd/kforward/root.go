package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Stamped by release builds: -ldflags "-X main.version=v1.2.3 -X
// main.commit=... -X main.date=..." (.goreleaser.yaml). Otherwise the build
// info says what it can.
var version, commit, date string

// Main runs the kforward command line and returns the process exit code.
// Errors are printed once, to stderr, as "error: ...".
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		if errors.Is(err, errInterrupted) {
			return 130
		}
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
	root.AddCommand(newInitCmd(), newAddCmd(), newRemoveCmd(), newRunCmd(), newAllowCmd(), newStatusCmd(), newValidateCmd(), newSchemaCmd(), newVersionCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build date, and the Go and client-go versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := readVersion()
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "kforward %s\n  commit:    %s\n  built:     %s\n  go:        %s %s/%s\n  client-go: %s\n",
				v.version, v.commit, v.date, runtime.Version(), runtime.GOOS, runtime.GOARCH, v.clientGo)
			return err
		},
	}
}

type versionInfo struct{ version, commit, date, clientGo string }

// readVersion is what the release build stamped (-X main.version=...,
// main.commit, main.date), else what the Go toolchain recorded: the
// module version for `go install ...@vX`, the VCS revision and time for a
// build from a checkout.
func readVersion() versionInfo {
	v := versionInfo{version: version, commit: commit, date: date, clientGo: "unknown"}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return fill(v)
	}
	if v.version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v.version = info.Main.Version
	}
	for _, s := range info.Settings {
		switch {
		case s.Key == "vcs.revision" && v.commit == "":
			v.commit = s.Value
		case s.Key == "vcs.time" && v.date == "":
			v.date = s.Value
		}
	}
	for _, d := range info.Deps {
		if d.Path == "k8s.io/client-go" {
			v.clientGo = d.Version
		}
	}
	return fill(v)
}

func fill(v versionInfo) versionInfo {
	for _, f := range []*string{&v.version, &v.commit, &v.date} {
		if *f == "" {
			*f = "unknown"
		}
	}
	if v.version == "unknown" {
		v.version = "(devel)"
	}
	return v
}
