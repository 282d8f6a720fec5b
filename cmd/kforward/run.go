package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/klog/v2"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/internal/status"
	"github.com/kforward/kforward/internal/view"
	"github.com/kforward/kforward/runner"
)

func newRunCmd() *cobra.Command {
	var (
		file       string
		grace      time.Duration
		logFormat  string
		verbose    int
		profile    string
		statusAddr string
		noTUI      bool
		portsFile  string
	)
	cmd := &cobra.Command{
		Use:   "run [-f forwards.yaml]",
		Short: "Run every forward in the file, keep them alive and apply edits live",
		Long: `Run every forward in the file and keep them alive. Edits to the file are
applied while running (only the forwards that changed restart); an invalid
edit changes nothing. SIGHUP reloads the file. SIGINT or SIGTERM stops:
listeners close, open connections get the grace period, and a second
signal exits at once.

On a terminal, a table of every forward updates in place, with log records
above it; elsewhere (a pipe, a file, systemd), or with --no-tui, one line
per forward at start and after each reload, then log records.

The status endpoint (--status-addr, default ` + status.DefaultAddr + `) serves
GET /status (JSON), /metrics (Prometheus), /healthz, /readyz (503 until
every forward is active) and POST /-/reload.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if statusAddr != "off" {
				if err := status.CheckAddr(statusAddr, cmd.Flags().Changed("status-addr")); err != nil {
					return err
				}
			}
			if portsFile != "" {
				if err := status.CheckPortsFile(portsFile); err != nil {
					return err
				}
			}
			if profile != "" {
				stopProfile, err := startCPUProfile(profile)
				if err != nil {
					return err
				}
				defer stopProfile()
			}
			ctx, interrupted := context.WithCancel(cmd.Context())
			defer interrupted()
			keys := make(chan struct{}, 1) // Ctrl-C pressed in the view
			// Everything beside the forwards (the view, the status endpoint,
			// the ports file) lives until the runner has shut down.
			aux, endAux := context.WithCancel(context.WithoutCancel(ctx))
			var wg sync.WaitGroup
			defer wg.Wait()
			defer endAux()

			out, logOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
			tty := terminalOf(out, logOut, cmd.InOrStdin()) // its hangup (a closed window) stops kforward
			var r *runner.Runner
			var live *view.Live
			human, color := false, false // the log: short lines above the table, coloured
			if !noTUI && isTerminal(out) {
				live = view.NewLive(out, terminalOrNil(cmd.InOrStdin()),
					func() (runner.Snapshot, error) { return r.Snapshot(), nil },
					func() {
						select {
						case keys <- struct{}{}:
						default:
						}
					})
				if isTerminal(logOut) { // on the same screen: above the table
					logOut, human, color = live.Writer(), true, os.Getenv("NO_COLOR") == ""
				}
				out = io.Discard // the table shows what the summary lines would
			}
			log, err := newLogger(logOut, logFormat, verbose, human, color)
			if err != nil {
				return err
			}
			reload := make(chan struct{})
			wg.Go(func() {
				hangups(aux, reload, tty, func() {
					log.Warn("the terminal hung up; stopping")
					interrupted()
				})
			})
			r = runner.New(runner.Options{File: file, Out: out, Log: log, Grace: grace, Reload: reload})

			viewDone := make(chan struct{})
			if live != nil {
				wg.Go(func() {
					defer close(viewDone)
					select {
					case <-r.Loaded(): // not before: a file that cannot be loaded is only an error
					case <-aux.Done():
						return
					}
					err := live.Run(aux)
					if aux.Err() == nil { // the terminal went away (closed window, lost ssh)
						log.Warn("the terminal is gone; stopping", "err", err)
						interrupted()
					}
				})
			} else {
				close(viewDone)
			}
			hard := make(chan struct{}) // a second Ctrl-C: exit now
			wg.Go(func() { onInterrupts(aux, keys, interrupted, hard) })
			if statusAddr != "off" {
				wg.Go(func() { status.Serve(aux, statusAddr, status.Handler(r), log) })
			}
			if portsFile != "" {
				wg.Go(func() { status.WritePorts(aux, portsFile, r.Snapshot, log) })
			}

			ran := make(chan error, 1)
			go func() { ran <- r.Run(ctx) }() // on a hard exit, the process ends with it running
			select {
			case err = <-ran:
			case <-hard:
				endAux()
				select { // the view leaves the terminal as it found it
				case <-viewDone:
				case <-time.After(time.Second):
				}
				return errInterrupted
			}
			endAux()
			wg.Wait()
			return fileError(cmd.ErrOrStderr(), file, err)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "forwards.yaml", "forwards file")
	cmd.Flags().DurationVar(&grace, "grace", 2*time.Second, "on shutdown, how long open connections may finish")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	cmd.Flags().CountVarP(&verbose, "verbose", "v", "more detail in the log; repeat for client-go's own (-vv, -vvv)")
	cmd.Flags().StringVar(&profile, "cpuprofile", "", "write a CPU profile of the whole run to this file (for performance reports; read it with go tool pprof)")
	cmd.Flags().StringVar(&statusAddr, "status-addr", status.DefaultAddr, `serve status, metrics and reload on this address; "off" serves nothing. A non-loopback address must be an explicit IP`)
	cmd.Flags().BoolVar(&noTUI, "no-tui", false, "no live table even on a terminal: summary lines and log records only")
	cmd.Flags().StringVar(&portsFile, "ports-file", "", "keep this file holding every forward's bound ports as NAME_PORT=N lines (for `source`); removed on exit")
	return cmd
}

// noFile is the error for a forwards file that is not there: say how to
// get one.
// fileError says what is wrong with reading file: that it is missing, or
// every error in it, one per line on stderr (then errInvalid). Any other
// error is returned as it is.
func fileError(stderr io.Writer, file string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return noFile(file)
	}
	if errs := config.Errors(err); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		return errInvalid
	}
	return err
}

func noFile(file string) error {
	if file == "forwards.yaml" {
		dir, _ := os.Getwd()
		return fmt.Errorf("there is no forwards.yaml here (%s); kforward init writes one from the Services in your cluster, or give another file with -f", dir)
	}
	return fmt.Errorf("there is no forwards file at %s; kforward init -f %s writes one from the Services in your cluster", file, file)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// terminalOrNil returns r if it is a terminal (the view reads keys from
// it), else nil.
func terminalOrNil(r io.Reader) io.Reader {
	if isTerminal(r) {
		return r
	}
	return nil
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
func newLogger(w io.Writer, format string, verbose int, live, color bool) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if verbose > 0 {
		// klog's V(n) records arrive as slog level -n: let through as many
		// as klog is asked for, and at least slog's own debug level.
		opts.Level = min(slog.LevelDebug, slog.Level(-(verbose - 1)))
	}
	var h slog.Handler
	switch format {
	case "text":
		if live { // for people: short lines above the table
			h = view.LogHandler(w, opts.Level, color)
		} else {
			h = slog.NewTextHandler(w, opts)
		}
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

// hungUpSoon reports whether the terminal is hung up now or within a
// moment: the signal may come before the hangup it announces.
func hungUpSoon(terminal *os.File) bool {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for range 5 {
		if !term.IsTerminal(int(terminal.Fd())) {
			return true
		}
		<-tick.C
	}
	return false
}

// hangups sends on reload for every SIGHUP until ctx ends. A SIGHUP that
// comes with the terminal gone (its window closed: the kernel hangs up the
// terminal and sends SIGHUP) calls hungUp instead, once.
func hangups(ctx context.Context, reload chan<- struct{}, terminal *os.File, hungUp func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	defer signal.Stop(sig)
	for {
		select {
		case <-sig:
			if terminal != nil && hungUpSoon(terminal) {
				hungUp()
				return
			}
			select {
			case reload <- struct{}{}:
			case <-ctx.Done():
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// terminalOf returns the first of files that is a terminal, or nil.
func terminalOf(files ...any) *os.File {
	for _, f := range files {
		if isTerminal(f) {
			return f.(*os.File)
		}
	}
	return nil
}

// errInterrupted is a second Ctrl-C: Main exits 130 at once, saying nothing.
var errInterrupted = errors.New("interrupted")

// onInterrupts handles Ctrl-C (SIGINT, SIGTERM, or the key in the view)
// until ctx ends: the first one stops gracefully (cancel), a second one
// closes hard, for an exit at once.
func onInterrupts(ctx context.Context, keys <-chan struct{}, cancel func(), hard chan<- struct{}) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-keys:
		}
		if n == 1 {
			cancel()
			continue
		}
		close(hard)
		return
	}
}
