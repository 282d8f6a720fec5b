// Command devcluster runs the local control plane of package e2e/cluster in
// the background, for people and scripts:
//
//	go run ./e2e/cmd/devcluster up       # start (no-op when running); prints the kubeconfig path
//	go run ./e2e/cmd/devcluster status   # is it running?
//	go run ./e2e/cmd/devcluster apply -f FILE  # create the objects in a manifest
//	go run ./e2e/cmd/devcluster down     # stop it and every process it started
//
// State lives in .devcluster/ under the repository root (or --dir):
// kubeconfig, env (export KUBECONFIG=...), pid and the cluster's logs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kforward/kforward/e2e/cluster"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

const usage = "usage: devcluster [--dir DIR] up|down|status|apply -f FILE"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devcluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "state directory (default: .devcluster under the repository root)")
	file := fs.String("f", "", "manifest for apply")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return errors.New(usage)
	}
	cmd := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil { // flags after the command
		return err
	}
	if *dir == "" {
		root, err := repoRoot()
		if err != nil {
			return err
		}
		*dir = filepath.Join(root, ".devcluster")
	}
	s := state{dir: *dir}
	switch cmd {
	case "up":
		return s.up(ctx, stdout, stderr)
	case "down":
		return s.down(stdout)
	case "status":
		return s.status(stdout)
	case "apply":
		if *file == "" {
			return errors.New("apply needs -f FILE")
		}
		return apply(ctx, s.kubeconfig(), *file, stdout)
	case "serve": // the background process started by up
		return s.serve(ctx, stderr)
	}
	return fmt.Errorf("unknown command %q; %s", cmd, usage)
}

type state struct{ dir string }

func (s state) kubeconfig() string { return filepath.Join(s.dir, "kubeconfig") }
func (s state) pidFile() string    { return filepath.Join(s.dir, "pid") }
func (s state) logFile() string    { return filepath.Join(s.dir, "devcluster.log") }

// pid returns the running server's process ID, or 0.
func (s state) pid() int {
	data, err := os.ReadFile(s.pidFile())
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

func (s state) printUp(stdout io.Writer) {
	fmt.Fprintln(stdout, s.kubeconfig())
}

func (s state) up(ctx context.Context, stdout, stderr io.Writer) error {
	if s.pid() != 0 {
		s.printUp(stdout)
		return nil
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	// Build (first run only) in the foreground so the progress is seen.
	if _, err := cluster.EnsureBinaries(ctx, stderr); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.Create(s.logFile())
	if err != nil {
		return err
	}
	defer logf.Close()
	os.Remove(s.pidFile())
	cmd := exec.Command(self, "--dir", s.dir, "serve")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlive this command and its terminal
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(2 * time.Minute)
	for s.pid() == 0 {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(s.logFile())
			return fmt.Errorf("cluster failed to start (%v):\n%s", err, log)
		case <-deadline:
			cmd.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("cluster not up after 2 minutes; see %s", s.logFile())
		case <-time.After(100 * time.Millisecond):
		}
	}
	s.printUp(stdout)
	return nil
}

// serve runs the cluster until SIGTERM or SIGINT. The pid file, written
// last, tells up that the cluster is ready.
func (s state) serve(ctx context.Context, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	clusterDir := filepath.Join(s.dir, "cluster")
	os.RemoveAll(clusterDir)
	if err := os.MkdirAll(clusterDir, 0o755); err != nil {
		return err
	}
	c, err := cluster.Start(ctx, cluster.Options{Progress: stderr, Dir: clusterDir})
	if err != nil {
		return err
	}
	defer func() {
		c.Stop()
		os.Remove(s.kubeconfig())
		os.Remove(filepath.Join(s.dir, "env"))
		os.Remove(s.pidFile())
	}()
	data, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		return err
	}
	if err := os.WriteFile(s.kubeconfig(), data, 0o600); err != nil {
		return err
	}
	env := fmt.Sprintf("export KUBECONFIG=%s\n", s.kubeconfig())
	if err := os.WriteFile(filepath.Join(s.dir, "env"), []byte(env), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(s.pidFile(), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	fmt.Fprintln(stderr, "devcluster: up; kubeconfig", s.kubeconfig())
	<-ctx.Done()
	fmt.Fprintln(stderr, "devcluster: stopping")
	return nil
}

func (s state) down(stdout io.Writer) error {
	pid := s.pid()
	if pid == 0 {
		fmt.Fprintln(stdout, "devcluster: not running")
		return nil
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			fmt.Fprintln(stdout, "devcluster: stopped")
			return nil
		}
	}
	syscall.Kill(pid, syscall.SIGKILL) // its children die with it (Pdeathsig)
	fmt.Fprintln(stdout, "devcluster: killed")
	return nil
}

func (s state) status(stdout io.Writer) error {
	if pid := s.pid(); pid != 0 {
		fmt.Fprintf(stdout, "devcluster: running (pid %d); export KUBECONFIG=%s\n", pid, s.kubeconfig())
		return nil
	}
	fmt.Fprintln(stdout, "devcluster: not running")
	return nil
}

// repoRoot finds the directory holding kforward's go.mod, from the
// working directory upwards.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(data), "module github.com/kforward/kforward\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the kforward repository; pass --dir")
		}
		dir = parent
	}
}
