package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// terminal is a real terminal (a tmux pane on its own server) running one
// command; the test reads its screen as a person would see it.
type terminal struct {
	t    *testing.T
	tmux string
	sock string
	pid  int // the command's (its shell's child)
}

func newTerminal(t *testing.T, width, height int, command ...string) *terminal {
	t.Helper()
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Fatal("tmux is needed to run kforward in a real terminal; `make test` installs it (Debian package tmux)")
	}
	term := &terminal{t: t, tmux: tmux, sock: filepath.Join(t.TempDir(), "tmux")}
	quoted := make([]string, len(command))
	for i, arg := range command {
		quoted[i] = "'" + strings.ReplaceAll(arg, "'", `'\''`) + "'"
	}
	// sh waits for the command and prints its exit status: tmux itself
	// does not always collect it.
	script := `"$@"; echo "[exit $?]"`
	term.run("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", strconv.Itoa(width), "-y", strconv.Itoa(height),
		"-e", "TERM=xterm-256color", "sh -c '"+script+"' sh "+strings.Join(quoted, " "), ";", "set-option", "-t", "t", "remain-on-exit", "on")
	sh, err := strconv.Atoi(strings.TrimSpace(term.run("display-message", "-p", "-t", "t", "#{pane_pid}")))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the command to start", func() bool { term.pid = childOf(sh); return term.pid != 0 })
	t.Cleanup(func() {
		syscall.Kill(term.pid, syscall.SIGKILL)
		term.run("kill-server")
	})
	return term
}

func (term *terminal) run(args ...string) string {
	term.t.Helper()
	out, err := exec.Command(term.tmux, append([]string{"-S", term.sock}, args...)...).CombinedOutput()
	if err != nil && args[0] != "kill-server" {
		term.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// exited waits for the command to exit and returns its exit status, or
// "signal" when a signal ended it (and the shell with it).
func (term *terminal) exited() string {
	term.t.Helper()
	status := regexp.MustCompile(`\[exit (\d+)\]`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := status.FindStringSubmatch(term.screen()); m != nil {
			return m[1]
		}
		if strings.TrimSpace(term.run("display-message", "-p", "-t", "t", "#{pane_dead}")) == "1" {
			if m := status.FindStringSubmatch(term.screen()); m != nil { // printed just before
				return m[1]
			}
			return "signal"
		}
		if time.Now().After(deadline) {
			term.t.Fatalf("still running 30s later; the screen:\n%s", term.screen())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// childOf returns the pid of a child of process ppid, or 0.
func childOf(ppid int) int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
		fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(ppid) {
			pid, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(filepath.Dir(path)), "/"))
			return pid
		}
	}
	return 0
}

// screen is what the terminal shows now.
func (term *terminal) screen() string { return term.run("capture-pane", "-p", "-t", "t") }

// waitScreen waits until re matches the screen and returns the match.
func (term *terminal) waitScreen(what string, re *regexp.Regexp) []string {
	term.t.Helper()
	var m []string
	deadline := time.Now().Add(30 * time.Second)
	for m = re.FindStringSubmatch(term.screen()); m == nil; m = re.FindStringSubmatch(term.screen()) {
		if time.Now().After(deadline) {
			term.t.Fatalf("timed out waiting for %s on the screen:\n%s", what, term.screen())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return m
}

// `kforward run` in a real terminal: the table appears with log records
// above it, follows traffic and a rollout, and Ctrl-C leaves every forward
// shown as stopped and the terminal as it was.
func TestLiveView(t *testing.T) {
	c := needCluster(t)
	ns := namespace(t, c)
	createDeployment(t, c.Client, ns, "web", 1)
	waitReadyPods(t, c.Client, ns, "app=web", 1)
	file := filepath.Join(t.TempDir(), "forwards.yaml")
	os.WriteFile(file, []byte(header(c, "", ns)+"  - name: web\n    deployment: web\n    ports: [\":http\"]\n"), 0o644)

	term := newTerminal(t, 150, 30, kforwardBinary(t), "run", "-f", file, "--status-addr", "off")
	row := regexp.MustCompile(`(?m)^web\s+deploy/web:http\s+127\.0\.0\.1:(\d+)\s+(web-\S+)\s+active\s+(\d+)/(\d+)\s+(\S+ \S+)`)
	m := term.waitScreen("the table with web active", row)
	addr, pod := "127.0.0.1:"+m[1], m[2]
	screen := term.screen()
	logAt, tableAt := strings.Index(screen, "INFO  connected forward=web pod="+pod), strings.Index(screen, "NAME ")
	if logAt < 0 || tableAt < 0 || logAt > tableAt || !strings.Contains(screen, "1 forward, 1 active") {
		t.Fatalf("want the header, the log record above the table:\n%s", screen)
	}
	t.Logf("the screen:\n%s", strings.TrimSpace(screen))

	for range 3 {
		who(t, addr)
	}
	m = term.waitScreen("3 connections and bytes in the table", regexp.MustCompile(`(?m)^web\s.*\s(\d+)/3\s+(\d+ B|[\d.]+ KiB)`))
	if m[2] == "0 B" {
		t.Errorf("IN is %s after 3 requests", m[2])
	}

	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"restartedAt":"%s"}}}}}`, time.Now().Format(time.RFC3339Nano))
	if _, err := c.Client.AppsV1().Deployments(ns).Patch(t.Context(), "web", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var newPod string
	term.waitScreen("a new pod after the rollout", regexp.MustCompile(`(?m)^web\s+deploy/web:http\s+`+regexp.QuoteMeta(addr)+`\s+(web-\S+)\s+active`))
	deadline := time.Now().Add(30 * time.Second)
	for newPod = pod; newPod == pod && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m := row.FindStringSubmatch(term.screen()); m != nil {
			newPod = m[2]
		}
	}
	if newPod == pod {
		t.Fatalf("the table still shows %s 30s after the rollout:\n%s", pod, term.screen())
	}
	t.Logf("rollout: %s -> %s", pod, newPod)

	term.run("send-keys", "-t", "t", "C-c")
	if st := term.exited(); st != "0" {
		t.Errorf("exit status %s after Ctrl-C, want 0", st)
	}
	final := term.screen()
	if !regexp.MustCompile(`(?m)^web\s+deploy/web:http\s+` + regexp.QuoteMeta(addr) + `\s+-\s+stopped\s`).MatchString(final) {
		t.Errorf("the final table does not show web stopped:\n%s", final)
	}
}

// Closing the terminal (its window, an ssh session) stops kforward: the
// SIGHUP that comes with it is not taken for a reload request.
func TestLiveViewTerminalClosed(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "web")
	file := filepath.Join(t.TempDir(), "forwards.yaml")
	os.WriteFile(file, []byte(header(c, "", ns)+"  - name: web\n    pod: web\n    ports: [\":http\"]\n"), 0o644)
	term := newTerminal(t, 120, 20, kforwardBinary(t), "run", "-f", file, "--status-addr", "off")
	term.waitScreen("the table", regexp.MustCompile(`(?m)^web\s+pod/web:http\s+\S+\s+web\s+active`))
	term.run("kill-server")
	waitFor(t, 10*time.Second, "kforward to exit", func() bool { return syscall.Kill(term.pid, 0) != nil })
}
