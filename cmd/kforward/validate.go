package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/runner"
)

func newValidateCmd() *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "validate [-f FILE]... [FILE]...",
		Short: "Check forwards files and print what each forward would do",
		Long: `validate parses and checks each file without contacting any cluster.
It prints one line per forward, and what in the file kforward run uses only
once you approve it (kforward allow), or every problem as
file:line:col: message and exits 1.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			files = append(files, args...)
			if len(files) == 0 {
				files = []string{"forwards.yaml"}
			}
			return validate(cmd.OutOrStdout(), cmd.ErrOrStderr(), files)
		},
	}
	cmd.Flags().StringArrayVarP(&files, "file", "f", nil, "forwards file to check (repeatable; default ./forwards.yaml)")
	return cmd
}

var errInvalid = errors.New("invalid forwards file")

func validate(stdout, stderr io.Writer, files []string) error {
	bad := 0
	for _, path := range files {
		cfg, err := config.Load(path)
		if err != nil {
			bad++
			if errs := config.Errors(err); len(errs) > 0 {
				for _, e := range errs {
					fmt.Fprintln(stderr, e)
				}
			} else {
				fmt.Fprintf(stderr, "%s: %v\n", path, err)
			}
			continue
		}
		for _, f := range cfg.Forwards {
			fmt.Fprintf(stdout, "%s: %s\n", path, summary(f))
		}
		if asks := runner.NeedsApproval(cfg); len(asks) > 0 {
			fmt.Fprintf(stdout, "%s: kforward run uses %s only once you approve it (kforward allow -f %s)\n", path, strings.Join(asks, " and "), path)
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d files: %w", bad, len(files), errInvalid)
	}
	return nil
}

// summary is one line describing a forward: name, target, where and ports.
func summary(f config.Forward) string {
	var b strings.Builder
	b.WriteString(f.Name)
	if t := f.Target.String(); t != f.Name {
		b.WriteString(" (" + t + ")")
	}
	if f.Namespace != "" {
		b.WriteString(" in namespace " + f.Namespace)
	}
	if f.Context != "" {
		b.WriteString(" of context " + f.Context)
	}
	ports := make([]string, len(f.Ports))
	for i, p := range f.Ports {
		ports[i] = p.String()
	}
	fmt.Fprintf(&b, ": ports %s on %s", strings.Join(ports, " "), strings.Join(f.Addresses, ", "))
	return b.String()
}
