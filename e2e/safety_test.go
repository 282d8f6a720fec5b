package e2e

import (
	"fmt"
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
// only files kforward opens are that file and the kubeconfig it names (and
// the system's own), and the only program it runs is the kubeconfig's exec
// credential plugin, the user's own choice, which keeps working. strace
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
  namespace: "${KFORWARD_TEST_NS:-%s}"
  health: &health {interval: 1s, timeout: 1s}
forwards:
  - name: web
    pod: "${KFORWARD_TEST_POD:-web}"
    ports: [":http"]
    health: *health
`, ns)), 0o644)

	home := t.TempDir() // no ~/.kube/config to fall back on
	env := append(os.Environ(), "HOME="+home, "KUBECONFIG=")
	kforward := kforwardBinary(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))

	runTrace := filepath.Join(dir, "run.trace")
	cmd := exec.Command(strace, "-f", "-qq", "-e", "trace=execve,execveat,open,openat,openat2", "-o", runTrace,
		kforward, "run", "-f", file, "--no-tui", "--status-addr", addr)
	cmd.Dir, cmd.Env = dir, env
	var out strings.Builder
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
		{"run", runTrace, []string{"forwards.yaml", file, "kubeconfig", filepath.Join(dir, "kubeconfig")}, []string{plugin}},
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
			t.Errorf("kforward %s opened %q beyond the forwards file, the kubeconfig and the system's files", run.name, opened)
			continue
		}
		t.Logf("kforward %s: ran %q; opened nothing else (%d processes traced)", run.name, ran, len(tr.execs))
	}
}
