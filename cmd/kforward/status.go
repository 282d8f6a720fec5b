package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/charmbracelet/colorprofile"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kforward/kforward/internal/status"
	"github.com/kforward/kforward/internal/view"
	"github.com/kforward/kforward/runner"
)

func newStatusCmd() *cobra.Command {
	var (
		addr   string
		output string
		watch  bool
	)
	cmd := &cobra.Command{
		Use:   "status [--addr ADDR] [-o table|wide|json|env] [--watch]",
		Short: "Show what a running kforward is doing",
		Long: `Ask a running kforward (its status endpoint, see kforward run --status-addr)
for every forward's state. The table is the one kforward run shows on a
terminal; -o wide adds columns, -o json prints GET /status as served, and
-o env prints every forward's bound ports as NAME_PORT=N lines for source.
Exits 1 when nothing answers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			switch output {
			case "table", "wide":
			case "json", "env":
				if watch {
					return fmt.Errorf("--watch shows the table; with -o %s, run it again instead", output)
				}
			default:
				return fmt.Errorf("unknown output %q; allowed: table, wide, json, env", output)
			}
			wide := output == "wide"
			if watch {
				if !isTerminal(out) {
					return fmt.Errorf("--watch needs a terminal")
				}
				if _, err := status.Fetch(cmd.Context(), addr); err != nil {
					return err // nothing to watch: exit 1, as without --watch
				}
				return watchStatus(cmd.Context(), out, cmd.InOrStdin(), addr, wide)
			}
			if output == "json" {
				body, err := status.FetchJSON(cmd.Context(), addr)
				if err != nil {
					return err
				}
				_, err = out.Write(body)
				return err
			}
			snap, err := status.Fetch(cmd.Context(), addr)
			if err != nil {
				return err
			}
			if output == "env" {
				_, err = io.WriteString(out, view.Env(snap.Forwards))
				return err
			}
			width, color := 1000, false // not a terminal: whole lines, no escape codes
			if isTerminal(out) {
				width, _, _ = term.GetSize(int(out.(*os.File).Fd()))
				color = true
				out = colorprofile.NewWriter(out, os.Environ())
			}
			_, err = io.WriteString(out, view.Table(snap, nil, time.Now(), width, view.Options{Wide: wide, Color: color}))
			return err
		},
	}
	cmd.Flags().StringVar(&addr, "addr", status.DefaultAddr, "the status address of the kforward to ask (kforward run --status-addr)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output: table, wide, json or env")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep the table on screen, updated live, until Ctrl-C")
	return cmd
}

// watchStatus shows the live view of the kforward at addr until Ctrl-C.
func watchStatus(ctx context.Context, out io.Writer, in io.Reader, addr string, wide bool) error {
	// Ctrl-C is a key while the view has the terminal in raw mode, and a
	// signal before that (and from kill): both end the watch the same way.
	ctx, cancel := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer cancel()
	live := view.NewLive(out, terminalOrNil(in), func() (runner.Snapshot, error) {
		return status.Fetch(context.WithoutCancel(ctx), addr) // the final frame is fetched after Ctrl-C
	}, cancel)
	live.Wide = wide
	return live.Run(ctx)
}
