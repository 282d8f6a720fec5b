package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kforward/kforward/internal/testutil"
)

// The first things a new user tries, each checked word for word.

func TestRunWithoutFile(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	code, _, errOut := runMain(t, "run", "--status-addr", "off")
	want := "error: there is no forwards.yaml here (" + dir + "); kforward init writes one from the Services in your cluster, or give another file with -f\n"
	if code != 1 || errOut != want {
		t.Errorf("exit %d, stderr:\n%q\nwant\n%q", code, errOut, want)
	}
	code, _, errOut = runMain(t, "run", "-f", "team/forwards.yaml", "--status-addr", "off")
	want = "error: there is no forwards file at team/forwards.yaml; kforward init -f team/forwards.yaml writes one from the Services in your cluster\n"
	if code != 1 || errOut != want {
		t.Errorf("-f a missing file: exit %d, stderr:\n%q\nwant\n%q", code, errOut, want)
	}
}

// runUntil runs `kforward run` on content until its log has want, then
// stops it and returns the log.
func runUntil(t *testing.T, content string, want *regexp.Regexp) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "forwards.yaml")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testutil.Buffer
	done := make(chan int)
	go func() {
		done <- Main(ctx, []string{"run", "-f", file, "--status-addr", "off", "--grace", "0s"}, &stdout, &stderr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !want.MatchString(stderr.String()) {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("no %s in the log:\n%s", want, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // the other forwards' first attempts
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d after Ctrl-C", code)
	}
	return stderr.String()
}

func TestRunWithoutKubeconfig(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("KUBECONFIG", "")
	log := runUntil(t, "forwards:\n  - pod: a\n    ports: [\":80\"]\n  - pod: b\n    ports: [\":80\"]\n",
		regexp.MustCompile(`cannot start forward`))
	want := `level=ERROR msg="cannot start forward; retrying" forward=pod/a err="no kubeconfig: tried $KUBECONFIG (not set) and ` +
		filepath.Join(home, ".kube", "config") + ` (no such file); set KUBECONFIG, write ~/.kube/config, or name one with kubeconfig: in the forwards file"`
	if n := strings.Count(log, "level=ERROR"); n != 1 || !strings.Contains(strings.ReplaceAll(log, "forward=pod/b", "forward=pod/a"), want) {
		t.Errorf("%d error lines; want once:\n%s\nlog:\n%s", n, want, log)
	}
}

func TestRunUnknownContext(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "config")
	os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: dev, context: {cluster: c, user: u}}, {name: prod, context: {cluster: c, user: u}}]
current-context: dev
`), 0o600)
	t.Setenv("KUBECONFIG", kubeconfig) // the user's own: no approval needed
	log := runUntil(t, "kubeconfig: "+kubeconfig+"\ndefaults: {context: staging}\nforwards:\n  - pod: a\n    ports: [\":80\"]\n  - pod: b\n    ports: [\":80\"]\n",
		regexp.MustCompile(`cannot start forward`))
	want := `err="context \"staging\" is not in the kubeconfig (` + kubeconfig + `); it has: dev, prod"`
	if n := strings.Count(log, "level=ERROR"); n != 1 || !strings.Contains(log, want) {
		t.Errorf("%d error lines; want once: %s\nlog:\n%s", n, want, log)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runMain(t, "version")
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	clientGo := regexp.MustCompile(`(?m)^\s+k8s.io/client-go (\S+)$`).FindStringSubmatch(string(gomod))[1]
	want := regexp.MustCompile(`^kforward \S+\n  commit:    \S+\n  built:     \S+\n  go:        ` + regexp.QuoteMeta(runtime.Version()) +
		` ` + runtime.GOOS + `/` + runtime.GOARCH + `\n  client-go: ` + regexp.QuoteMeta(clientGo) + `\n$`)
	if code != 0 || !want.MatchString(out) {
		t.Errorf("kforward version:\n%s", out)
	}
}

// A release build's stamps win over what the build info says.
func TestVersionStamped(t *testing.T) {
	defer func(v, c, d string) { version, commit, date = v, c, d }(version, commit, date)
	version, commit, date = "v1.2.3", "abc1234", "2026-11-22T10:00:00Z"
	_, out, _ := runMain(t, "version")
	if !strings.HasPrefix(out, "kforward v1.2.3\n  commit:    abc1234\n  built:     2026-11-22T10:00:00Z\n") {
		t.Errorf("stamped version:\n%s", out)
	}
}
