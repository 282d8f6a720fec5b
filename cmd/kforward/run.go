package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/runner"
)

func newRunCmd() *cobra.Command {
	var (
		file      string
		grace     time.Duration
		logFormat string
		verbose   int
		profile   string
	)
	cmd := &cobra.Command{
		Use:   "run [-f forwards.yaml]",
		Short: "Run every forward in the file, keep them alive and apply edits live",
		Long: `Run every forward in the file and keep them alive. Edits to the file are
applied while running (only the forwards that changed restart); an invalid
edit changes nothing. SIGHUP reloads the file. SIGINT or SIGTERM stops:
listeners close, open connections get the grace period, and a second
signal exits at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logFormat, verbose)
			if err != nil {
				return err
			}
			if profile != "" {
				stopProfile, err := startCPUProfile(profile)
				if err != nil {
					return err
				}
				defer stopProfile()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go exitOnSecondSignal(ctx)
			err = runner.New(runner.Options{
				File: file, Out: cmd.OutOrStdout(), Log: log, Grace: grace, Reload: hangups(ctx),
			}).Run(ctx)
			if errs := config.Errors(err); len(errs) > 0 {
				for _, e := range errs {
					fmt.Fprintln(cmd.ErrOrStderr(), e)
				}
				return errInvalid
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "forwards.yaml", "forwards file")
	cmd.Flags().DurationVar(&grace, "grace", 2*time.Second, "on shutdown, how long open connections may finish")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	cmd.Flags().CountVarP(&verbose, "verbose", "v", "more detail in the log; repeat for client-go's own (-vv, -vvv)")
	cmd.Flags().StringVar(&profile, "cpuprofile", "", "write a CPU profile of the whole run to this file (for performance reports; read it with go tool pprof)")
	return cmd
}

// startCPUProfile profiles until the returned function is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// newLogger returns the log for a run, and routes client-go's klog output
// into it so that nothing else is written to stderr. -v shows debug
// records; each further -v raises klog's verbosity.
func newLogger(w io.Writer, format string, verbose int) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if verbose > 0 {
		opts.Level = slog.LevelDebug
	}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("unknown log format %q; allowed: text, json", format)
	}
	log := slog.New(h)
	klog.SetSlogLogger(log)
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	fs.Set("v", fmt.Sprint(max(verbose-1, 0)))
	return log, nil
}

// hangups returns a channel that receives on every SIGHUP until ctx ends.
func hangups(ctx context.Context) <-chan struct{} {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	out := make(chan struct{})
	go func() {
		defer signal.Stop(sig)
		for {
			select {
			case <-sig:
				select {
				case out <- struct{}{}:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// exitOnSecondSignal lets a second Ctrl-C end the process at once while the
// first one is still shutting forwards down gracefully.
func exitOnSecondSignal(ctx context.Context) {
	<-ctx.Done()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	os.Exit(130)
}
