package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/runner"
)

func newAllowCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "allow [-f forwards.yaml]",
		Short: "Approve what the forwards file asks for: a kubeconfig it names, addresses beyond loopback",
		Long: `A forwards file comes from a repository and is applied live, so kforward run
does not use what would let it run a program, talk to a server or listen
beyond loopback until you approved it here:

  - a kubeconfig the file names (its server, its credentials, its exec
    plugin), approved by path and the sha256 of its content: a change to
    the kubeconfig needs approval again. Your own kubeconfig ($KUBECONFIG,
    ~/.kube/config) needs none.
  - an address beyond loopback (0.0.0.0, ::, a LAN address).

allow prints what it approves and records it in kforward/allowed.json in
your config directory, keyed by the file's absolute path and the values. A
running kforward starts the forwards that waited within a second.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(file)
			if err != nil {
				return fileError(cmd.ErrOrStderr(), file, err)
			}
			ask, err := runner.Asks(file, cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if ask.Empty() {
				_, err := fmt.Fprintf(out, "%s needs no approval: it uses your own kubeconfig and listens on loopback only\n", ask.File)
				return err
			}
			path, err := runner.Allow(ask)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(out, "approved for %s:\n%srecorded in %s\n", ask.File, ask.Describe(), path)
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "forwards.yaml", "forwards file")
	return cmd
}
