package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kforward/kforward/internal/testutil"
)

var built struct {
	once sync.Once
	path string
	err  error
}

// kforwardBinary builds the command once per test run.
func kforwardBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "kforward-e2e-bin")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "kforward")
		out, err := exec.Command("go", "build", "-o", built.path, "../cmd/kforward").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// kforwardRun is `kforward run` as a user runs it, in its own process.
type kforwardRun struct {
	cmd    *exec.Cmd
	stdout *bufio.Scanner
	stderr *testutil.Buffer
	exited chan struct{}
	err    error
}

func startRun(t *testing.T, file string, args ...string) *kforwardRun {
	t.Helper()
	return startRunUnder(t, nil, file, args...)
}

// startRunUnder is startRun with kforward run by a command that execs it
// (wrapper, then kforward's path and arguments): say, prlimit.
func startRunUnder(t *testing.T, wrapper []string, file string, args ...string) *kforwardRun {
	t.Helper()
	k := &kforwardRun{stderr: &testutil.Buffer{}, exited: make(chan struct{})}
	argv := append(append(slices.Clone(wrapper), kforwardBinary(t), "run", "-f", file), args...)
	k.cmd = exec.Command(argv[0], argv[1:]...)
	k.cmd.Stderr = k.stderr
	out, err := k.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	k.stdout = bufio.NewScanner(out)
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		k.err = k.cmd.Wait()
		close(k.exited)
	}()
	t.Cleanup(func() {
		k.cmd.Process.Kill()
		<-k.exited
	})
	return k
}

// line returns the next line kforward prints on stdout.
func (k *kforwardRun) line(t *testing.T) string {
	t.Helper()
	lines := make(chan string, 1)
	go func() {
		if k.stdout.Scan() {
			lines <- k.stdout.Text()
		}
		close(lines)
	}()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("kforward printed nothing; stderr:\n%s", k.stderr.String())
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("no line from kforward in 30s; stderr:\n%s", k.stderr.String())
		return ""
	}
}

func (k *kforwardRun) wait(t *testing.T, within time.Duration) (code int, took time.Duration) {
	t.Helper()
	begin := time.Now()
	select {
	case <-k.exited:
	case <-time.After(within):
		t.Fatalf("kforward still running %s after the signal; stderr:\n%s", within, k.stderr.String())
	}
	var exit *exec.ExitError
	if errors.As(k.err, &exit) {
		return exit.ExitCode(), time.Since(begin)
	}
	return 0, time.Since(begin)
}

// 7, 9. `kforward run` prints where each forward listens; on SIGINT it
// stops accepting at once, lets an open connection finish within the grace
// period, and exits 0; a second signal exits at once. SIGHUP reloads.
func TestRunCommandSignals(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "web")
	file := filepath.Join(t.TempDir(), "forwards.yaml")
	os.WriteFile(file, []byte(header(c, "", ns)+"  - name: echo\n    pod: web\n    ports: [\":echo\"]\n"), 0o644)

	t.Run("graceful", func(t *testing.T) {
		k := startRun(t, file, "--grace", "1s")
		summary := k.line(t)
		fields := strings.Fields(summary)
		if len(fields) != 4 || fields[0] != "echo" || fields[3] != "pod/web" || !strings.HasPrefix(fields[1], "127.0.0.1:") {
			t.Fatalf("summary line %q, want: echo 127.0.0.1:PORT -> pod/web", summary)
		}
		addr := fields[1]
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		lines := bufio.NewReader(conn)
		echo := func(msg string) error {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintln(conn, msg)
			got, err := lines.ReadString('\n')
			if err == nil && got != msg+"\n" {
				err = fmt.Errorf("got %q", got)
			}
			return err
		}
		if err := echo("before"); err != nil {
			t.Fatal(err)
		}

		k.cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, 5*time.Second, "the reload on SIGHUP", func() bool { return strings.Contains(k.stderr.String(), "reloading on signal") })
		if k.line(t) != summary {
			t.Fatal("the summary after the reload differs: the forward was restarted")
		}

		k.cmd.Process.Signal(syscall.SIGINT)
		waitFor(t, 2*time.Second, "the listener to close", func() bool {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err != nil
		})
		if err := echo("during the grace period"); err != nil {
			t.Fatalf("the open connection broke before the grace period ended: %v", err)
		}
		code, took := k.wait(t, 10*time.Second)
		t.Logf("exit %d, %s after the signal", code, took)
		if code != 0 {
			t.Fatalf("exit %d, want 0; stderr:\n%s", code, k.stderr.String())
		}
		if _, err := lines.ReadString('\n'); err == nil {
			t.Fatal("the connection is still open after kforward exited")
		}
	})

	t.Run("second signal", func(t *testing.T) {
		k := startRun(t, file, "--grace", "1m")
		addr := strings.Fields(k.line(t))[1]
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintln(conn, "hold")
		io.ReadFull(conn, make([]byte, 5))
		k.cmd.Process.Signal(syscall.SIGINT)
		time.Sleep(300 * time.Millisecond)
		k.cmd.Process.Signal(syscall.SIGINT)
		code, took := k.wait(t, 5*time.Second)
		if code != 130 {
			t.Fatalf("exit %d after a second signal, want 130 at once", code)
		}
		t.Logf("second signal: exit 130 after %s", took)
	})
}

// kforward as a kubectl plugin: a binary named kubectl-forward on PATH (here
// a symlink, as the README says) makes `kubectl forward ...` run it, and
// its help speaks of `kubectl forward`.
func TestKubectlPlugin(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal("kubectl is needed to run kforward as its plugin")
	}
	dir := t.TempDir()
	if err := os.Symlink(kforwardBinary(t), filepath.Join(dir, "kubectl-forward")); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	help := exec.Command(kubectl, "forward", "--help")
	help.Env = env
	out, err := help.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "\n  kubectl forward [command]\n") {
		t.Errorf("kubectl forward --help (%v):\n%s", err, out)
	}
	nobody := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	status := exec.Command(kubectl, "forward", "status", "--addr", nobody)
	status.Env = env
	out, err = status.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || string(out) != "error: no kforward running at "+nobody+"\n" {
		t.Errorf("kubectl forward status with nothing running: %v\n%s", err, out)
	}
}
