package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/internal/testutil"
	"github.com/kforward/kforward/runner"
)

// traced is what a process tree did, as strace saw it: the programs each
// process ran, and the files each opened or tried to open.
type traced struct {
	execs map[string][]string // pid: programs
	opens map[string][]string // pid: paths
}

var (
	traceExec = regexp.MustCompile(`^(\d+) +execve\("([^"]*)"`)
	traceOpen = regexp.MustCompile(`^(\d+) +open(?:at2?)?\((?:AT_FDCWD, )?"([^"]*)"`)
)

func readTrace(t *testing.T, path string) traced {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tr := traced{execs: map[string][]string{}, opens: map[string][]string{}}
	for line := range strings.Lines(string(data)) {
		if m := traceExec.FindStringSubmatch(line); m != nil {
			tr.execs[m[1]] = append(tr.execs[m[1]], m[2])
		} else if m := traceOpen.FindStringSubmatch(line); m != nil {
			tr.opens[m[1]] = append(tr.opens[m[1]], m[2])
		}
	}
	return tr
}

// What any Go program on Linux reads, whatever its input: its own binary,
// the loader's files, the kernel's and the cgroup's facts, the time zone;
// and /dev/null, a started program's stdin.
func systemFile(path string) bool {
	for _, prefix := range []string{"/proc/", "/sys/", "/lib/", "/lib64/", "/usr/lib/", "/usr/share/zoneinfo/"} {
		if strings.HasPrefix(path, prefix) {
			return true
		}
	}
	return slices.Contains([]string{"/etc/ld.so.cache", "/etc/localtime", "/dev/null"}, path)
}

// TestFileCannotRunCommandsOrReadFiles: whatever a forwards file says, the
// only files kforward opens are that file, the kubeconfig it names once
// approved, and this user's approvals (and the system's own), and the only
// program it runs is that kubeconfig's exec credential plugin, which the
// user approved with `kforward allow`, and which keeps working. strace
// watches kforward run and validate a file that uses every indirection the
// format has (${VAR} with defaults, a relative kubeconfig, anchors).
func TestFileCannotRunCommandsOrReadFiles(t *testing.T) {
	c := needCluster(t)
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is needed (make test's tools target installs it): ", err)
	}
	ns := namespaceWithPod(t, c, "web")
	dir := t.TempDir()

	plugin := filepath.Join(dir, "credential-plugin")
	script := fmt.Sprintf("#!/bin/sh\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"%s\"}}'\n", c.Config.BearerToken)
	if err := os.WriteFile(plugin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	kc, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	user := kc.Contexts[kc.CurrentContext].AuthInfo
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{
		Command: plugin, APIVersion: "client.authentication.k8s.io/v1", InteractiveMode: clientcmdapi.NeverExecInteractiveMode,
	}}
	if err := clientcmd.WriteToFile(*kc, filepath.Join(dir, "kubeconfig")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "forwards.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf(`kubeconfig: ./kubeconfig
defaults:
  namespace: %s
  health: &health {interval: "${KFORWARD_TEST_INTERVAL:-1s}", timeout: 1s}
forwards:
  - name: web
    pod: web
    ports: ["${KFORWARD_TEST_LOCAL:-}:http"]
    health: *health
`, ns)), 0o644)

	home := t.TempDir() // no ~/.kube/config to fall back on, no approvals
	approvals := filepath.Join(home, ".config", "kforward", "allowed.json")
	env := append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "KUBECONFIG=")
	kforward := kforwardBinary(t)
	allow := exec.Command(kforward, "allow", "-f", file)
	allow.Env = env
	if b, err := allow.CombinedOutput(); err != nil {
		t.Fatalf("kforward allow: %v\n%s", err, b)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))

	runTrace := filepath.Join(dir, "run.trace")
	cmd := exec.Command(strace, "-f", "-qq", "-e", "trace=execve,execveat,open,openat,openat2", "-o", runTrace,
		kforward, "run", "-f", file, "--no-tui", "--status-addr", addr)
	cmd.Dir, cmd.Env = dir, env
	var out testutil.Buffer // written by the process while the test reads it
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// strace detaches on a signal of its own: signal kforward, its child.
	var pid int
	waitFor(t, 10*time.Second, "kforward under strace", func() bool { pid = childOf(cmd.Process.Pid); return pid != 0 })
	defer func() {
		syscall.Kill(pid, syscall.SIGKILL)
		cmd.Process.Kill()
		<-exited
	}()
	waitFor(t, 60*time.Second, "/readyz 200 (the plugin's token works)", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz") // under strace, kforward starts slowly
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	_, body := statusGet(t, addr, "/status")
	local := regexp.MustCompile(`"addresses": \[\s*"([^"]+)"`).FindStringSubmatch(body)
	if local == nil {
		t.Fatalf("no address in /status:\n%s", body)
	}
	if got := who(t, local[1]); got != ns+"/web" {
		t.Fatalf("answered by %q", got)
	}
	syscall.Kill(pid, syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("kforward did not stop; output:\n%s", out.String())
	}
	exited <- nil // for the deferred wait

	validateTrace := filepath.Join(dir, "validate.trace")
	v := exec.Command(strace, "-f", "-qq", "-e", "trace=execve,execveat,open,openat,openat2", "-o", validateTrace, kforward, "validate", "-f", file)
	v.Dir, v.Env = dir, env
	if b, err := v.CombinedOutput(); err != nil {
		t.Fatalf("validate: %v\n%s", err, b)
	}

	for _, run := range []struct {
		name, trace string
		allowed     []string // files besides the system's
		programs    []string // besides kforward
	}{
		{"run", runTrace, []string{"forwards.yaml", file, "kubeconfig", filepath.Join(dir, "kubeconfig"), approvals}, []string{plugin}},
		{"validate", validateTrace, []string{"forwards.yaml", file}, nil},
	} {
		tr := readTrace(t, run.trace)
		var ran, opened []string
		for pid, programs := range tr.execs {
			for _, p := range programs {
				if p != kforward {
					ran = append(ran, p)
				}
			}
			if len(programs) > 0 && programs[len(programs)-1] != kforward {
				delete(tr.opens, pid) // the plugin's own process: what it reads is its business
			}
		}
		for _, paths := range tr.opens {
			for _, p := range paths {
				if !systemFile(p) && p != kforward && !slices.Contains(run.allowed, p) {
					opened = append(opened, p)
				}
			}
		}
		slices.Sort(ran)
		ran = slices.Compact(ran)
		if !slices.Equal(ran, run.programs) {
			t.Errorf("kforward %s ran %q, want only %q", run.name, ran, run.programs)
		}
		if len(opened) > 0 {
			t.Errorf("kforward %s opened %q beyond the forwards file, the kubeconfig, the approvals and the system's files", run.name, opened)
			continue
		}
		t.Logf("kforward %s: ran %q; opened nothing else (%d processes traced)", run.name, ran, len(tr.execs))
	}
}

// trustRun is `kforward run` in its own process, as a user with a fresh
// home and config directory (no approvals) runs it.
type trustRun struct {
	*kforwardRun
	addr string
	env  []string
}

// freshUser is the environment of a user with an empty home: no
// kubeconfig of their own unless own is given, and no approvals.
func freshUser(t *testing.T, own string) []string {
	home := t.TempDir()
	return append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "KUBECONFIG="+own)
}

func startAs(t *testing.T, env []string, file string) *trustRun {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	k := &kforwardRun{stderr: &testutil.Buffer{}, exited: make(chan struct{})}
	k.cmd = exec.Command(kforwardBinary(t), "run", "-f", file, "--no-tui", "--status-addr", addr)
	k.cmd.Env, k.cmd.Stderr, k.cmd.Stdout = env, k.stderr, io.Discard
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
	return &trustRun{kforwardRun: k, addr: addr, env: env}
}

// allow runs `kforward allow -f file` as the same user and returns what it
// printed.
func (k *trustRun) allow(t *testing.T, file string) string {
	t.Helper()
	cmd := exec.Command(kforwardBinary(t), "allow", "-f", file)
	cmd.Env = k.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kforward allow: %v\n%s", err, out)
	}
	return string(out)
}

func (k *trustRun) waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; kforward's log:\n%s", within, what, k.stderr.String())
		}
	}
}

// forward returns the named forward's status, zero until kforward answers.
func (k *trustRun) forward(name string) forward.Status {
	resp, err := http.Get("http://" + k.addr + "/status")
	if err != nil {
		return forward.Status{}
	}
	defer resp.Body.Close()
	var s runner.Snapshot
	json.NewDecoder(resp.Body).Decode(&s)
	for _, f := range s.Forwards {
		if f.Name == name {
			return f
		}
	}
	return forward.Status{}
}

// reload asks kforward to read the file again now, and retry what failed.
func (k *trustRun) reload(t *testing.T) {
	t.Helper()
	resp, err := http.Post("http://"+k.addr+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestFileNamedKubeconfigWaitsForAllow: a kubeconfig that arrives with the
// forwards file (beside it in the repository), whose exec plugin would run
// a program, is not used until this user ran `kforward allow`: the plugin
// does not run, the forward does not start, and the log says once what to
// run. Once allowed it runs. An edit elsewhere in the file needs nothing
// new; an edit to the kubeconfig's content needs approval again.
func TestFileNamedKubeconfigWaitsForAllow(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "web")
	dir := t.TempDir()
	marker := filepath.Join(dir, "plugin-ran")
	plugin := filepath.Join(dir, "credential-plugin")
	script := fmt.Sprintf("#!/bin/sh\ntouch %s\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"%s\"}}'\n", marker, c.Config.BearerToken)
	if err := os.WriteFile(plugin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	kc, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc.AuthInfos[kc.Contexts[kc.CurrentContext].AuthInfo] = &clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{
		Command: "./credential-plugin", APIVersion: "client.authentication.k8s.io/v1", InteractiveMode: clientcmdapi.NeverExecInteractiveMode,
	}}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "forwards.yaml")
	head := fmt.Sprintf("kubeconfig: ./kubeconfig\ndefaults:\n  namespace: %s\n  reconnect: {initial: 50ms, max: 1s}\n  health: {interval: 1s, timeout: 1s}\nforwards:\n", ns)
	web := "  - name: web\n    pod: web\n    ports: [\":http\"]\n"
	os.WriteFile(file, []byte(head+web), 0o644)

	k := startAs(t, freshUser(t, ""), file)
	run := "kforward allow -f " + file
	k.waitFor(t, 60*time.Second, "the log to say what to run", func() bool { return strings.Contains(k.stderr.String(), run) })
	st := k.forward("web")
	if st.State != forward.Failed || !strings.Contains(st.LastError, "needs your approval") || !strings.Contains(st.LastError, run) {
		t.Fatalf("/status of the unapproved forward: %s %q", st.State, st.LastError)
	}
	k.reload(t) // every start is tried again: still not approved
	time.Sleep(2 * time.Second)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the exec plugin of an unapproved kubeconfig ran")
	}
	if st := k.forward("web"); st.State != forward.Failed || len(st.Addresses) > 0 {
		t.Fatalf("the forward started unapproved: %s on %q", st.State, st.Addresses)
	}
	if n := strings.Count(k.stderr.String(), run); n != 1 {
		t.Fatalf("the log says what to run %d times, want once:\n%s", n, k.stderr.String())
	}

	out := k.allow(t, file)
	for _, want := range []string{"approved for " + file, "kubeconfig " + kubeconfig + " (sha256 ", "its exec plugins run: " + plugin} {
		if !strings.Contains(out, want) {
			t.Fatalf("kforward allow does not say %q:\n%s", want, out)
		}
	}
	k.waitFor(t, 60*time.Second, "web active once allowed", func() bool { return k.forward("web").State == forward.Active })
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("the approved kubeconfig's exec plugin did not run")
	}
	if got := who(t, k.forward("web").Addresses[0]); got != ns+"/web" {
		t.Fatalf("answered by %q", got)
	}

	// An edit that changes nothing security-relevant: a second forward.
	reconnects := k.forward("web").Reconnects
	os.WriteFile(file, []byte(head+web+"  - name: echo\n    pod: web\n    ports: [\":echo\"]\n"), 0o644)
	k.waitFor(t, 60*time.Second, "the added forward active", func() bool { return k.forward("echo").State == forward.Active })
	if st := k.forward("web"); st.State != forward.Active || st.Reconnects != reconnects {
		t.Fatalf("an unrelated edit touched web: %s, %d reconnects", st.State, st.Reconnects)
	}
	if strings.Count(k.stderr.String(), run) != 1 {
		t.Fatalf("an unrelated edit asked for approval again:\n%s", k.stderr.String())
	}

	// The kubeconfig's content changes (a pull): approval again.
	data, _ := os.ReadFile(kubeconfig)
	os.WriteFile(kubeconfig, append(data, "# changed by someone else\n"...), 0o600)
	k.waitFor(t, 60*time.Second, "both forwards stopped, waiting for approval", func() bool {
		w, e := k.forward("web"), k.forward("echo")
		return strings.Contains(w.LastError, "changed since you approved it") && w.State == forward.Failed && e.State == forward.Failed
	})
	k.allow(t, file)
	k.waitFor(t, 60*time.Second, "both active once allowed again", func() bool {
		return k.forward("web").State == forward.Active && k.forward("echo").State == forward.Active
	})
	k.cmd.Process.Signal(syscall.SIGTERM)
	if code, _ := k.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d; log:\n%s", code, k.stderr.String())
	}
}

// TestAddressBeyondLoopbackWaitsForAllow: a forward that would listen on
// 0.0.0.0 does not listen until this user allowed that address for this
// file; the forward beside it on loopback runs meanwhile.
func TestAddressBeyondLoopbackWaitsForAllow(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "web")
	file := filepath.Join(t.TempDir(), "forwards.yaml")
	port := freePort(t)
	os.WriteFile(file, []byte(fmt.Sprintf(`defaults: {namespace: %s, reconnect: {initial: 50ms, max: 1s}}
forwards:
  - name: local
    pod: web
    ports: [":http"]
  - name: wide
    pod: web
    address: 0.0.0.0
    ports: ["%d:http"]
`, ns, port)), 0o644)
	k := startAs(t, freshUser(t, c.Kubeconfig), file) // the cluster is the user's own
	k.waitFor(t, 60*time.Second, "local active", func() bool { return k.forward("local").State == forward.Active })
	k.waitFor(t, 60*time.Second, "the log to say what to run", func() bool {
		return strings.Contains(k.stderr.String(), "listens on 0.0.0.0") && strings.Contains(k.stderr.String(), "kforward allow -f "+file)
	})
	if st := k.forward("wide"); st.State != forward.Failed || !strings.Contains(st.LastError, "needs your approval") {
		t.Fatalf("/status of the unapproved forward: %s %q", st.State, st.LastError)
	}
	wide := fmt.Sprintf("127.0.0.1:%d", port)
	if conn, err := net.DialTimeout("tcp", wide, time.Second); err == nil {
		conn.Close()
		t.Fatalf("something listens on %s before it was allowed", wide)
	}
	if got := who(t, k.forward("local").Addresses[0]); got != ns+"/web" {
		t.Fatalf("local answered by %q", got)
	}
	if out := k.allow(t, file); !strings.Contains(out, "address 0.0.0.0: reachable from other machines (forwards: wide)") {
		t.Fatalf("kforward allow says:\n%s", out)
	}
	k.waitFor(t, 60*time.Second, "wide active once allowed", func() bool { return k.forward("wide").State == forward.Active })
	if got := who(t, wide); got != ns+"/web" {
		t.Fatalf("wide answered by %q", got)
	}
	k.cmd.Process.Signal(syscall.SIGTERM) // its tunnels end cleanly
	if code, _ := k.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d; log:\n%s", code, k.stderr.String())
	}
}

// TestKubeconfigThatNeverEnds: `kubeconfig: /dev/zero` fails at once with a
// clear error instead of reading without end, and SIGTERM stops kforward.
func TestKubeconfigThatNeverEnds(t *testing.T) {
	file := filepath.Join(t.TempDir(), "forwards.yaml")
	os.WriteFile(file, []byte("kubeconfig: /dev/zero\nforwards:\n  - {name: web, pod: web, ports: [\":80\"]}\n"), 0o644)
	env := freshUser(t, "")
	k := startAs(t, env, file)
	k.waitFor(t, 30*time.Second, "the error", func() bool {
		return strings.Contains(k.stderr.String(), "kubeconfig /dev/zero is not a regular file")
	})
	if st := k.forward("web"); st.State != forward.Failed {
		t.Fatalf("web is %s", st.State)
	}
	k.cmd.Process.Signal(syscall.SIGTERM)
	if code, _ := k.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d; log:\n%s", code, k.stderr.String())
	}
	allow := exec.Command(kforwardBinary(t), "allow", "-f", file)
	allow.Env = env
	out, err := allow.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "kubeconfig /dev/zero is not a regular file") {
		t.Fatalf("kforward allow: %v\n%s", err, out)
	}
}
