package main

import (
	"github.com/spf13/cobra"

	"github.com/kforward/kforward/config"
)

func newSchemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of forwards.yaml",
		Long: `schema prints the JSON Schema of forwards.yaml. Point yaml-language-server
at it for completion and checks in your editor:
  # yaml-language-server: $schema=forwards.schema.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(config.Schema())
			return err
		},
	}
}
