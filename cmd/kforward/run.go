package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newRunCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "run [-f forwards.yaml]",
		Short: "Run every forward in the file and keep them alive",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return errors.New("run is not implemented yet")
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "forwards.yaml", "forwards file")
	return cmd
}
