package e2e

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kforward/kforward/e2e/cluster"
	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/internal/testutil"
	"github.com/kforward/kforward/runner"
)

// runningFile is a runner on a forwards file, as `kforward run` runs it.
type runningFile struct {
	t      testing.TB
	file   string
	r      *runner.Runner
	log    *testutil.Buffer
	out    *testutil.Buffer
	reload chan struct{}
}

// runFile writes content to a forwards file and runs it until the test
// ends; then it checks that the runner left no goroutine behind, passing
// over only what ignore names besides notOurs.
func runFile(t testing.TB, content string, ignore ...goleak.Option) *runningFile {
	t.Helper()
	before := goleak.IgnoreCurrent()
	rf := &runningFile{t: t, file: filepath.Join(t.TempDir(), "forwards.yaml"), log: &testutil.Buffer{}, out: &testutil.Buffer{}, reload: make(chan struct{})}
	rf.write(content)
	rf.r = runner.New(runner.Options{File: rf.file, Out: rf.out, Log: slog.New(slog.NewTextHandler(rf.log, nil)), Reload: rf.reload, Grace: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rf.r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the runner did not stop within 10s")
		}
		goleak.VerifyNone(t, slices.Concat(notOurs, []goleak.Option{before}, ignore)...)
	})
	return rf
}

func (rf *runningFile) write(content string) {
	rf.t.Helper()
	if err := os.WriteFile(rf.file, []byte(content), 0o644); err != nil {
		rf.t.Fatal(err)
	}
}

// status returns the named forward's status, or a zero one.
func (rf *runningFile) status(name string) forward.Status {
	for _, s := range rf.r.Statuses() {
		if s.Name == name {
			return s
		}
	}
	return forward.Status{}
}

func (rf *runningFile) waitState(name string, state forward.State) forward.Status {
	rf.t.Helper()
	var s forward.Status
	waitFor(rf.t, 30*time.Second, name+" "+string(state), func() bool { s = rf.status(name); return s.State == state })
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// header is the top of a test's forwards file: the cluster, the namespace
// and quick timings.
func header(c *cluster.Cluster, kubeconfig, ns string) string {
	if kubeconfig == "" {
		kubeconfig = c.Kubeconfig
	}
	return fmt.Sprintf(`kubeconfig: %s
defaults:
  namespace: %s
  reconnect: {initial: 50ms, max: 1s}
  health: {interval: 1s, timeout: 1s}
forwards:
`, kubeconfig, ns)
}

// 1. Forwards start together; one that cannot start, for whatever reason,
// is reported and the others run.
func TestRunnerStartIsolatesFailures(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "web")
	kubeconfig := deniedKubeconfig(t, c, ns)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	rf := runFile(t, header(c, kubeconfig, ns)+fmt.Sprintf(`  - name: good
    pod: web
    ports: [":http"]
  - name: no-context
    pod: web
    context: nope
    ports: [":http"]
  - name: denied
    pod: web
    context: denied
    ports: [":http"]
  - name: busy
    pod: web
    ports: ["%d:http"]
  - name: no-namespace
    pod: web
    namespace: %s-later
    ports: [":http"]
`, busyPort, ns))

	good := rf.waitState("good", forward.Active)
	if pod := who(t, good.Addresses[0]); pod != ns+"/web" {
		t.Fatalf("answered by %q", pod)
	}
	for name, reason := range map[string]string{
		"no-context":   `context "nope" is not in the kubeconfig (`,
		"denied":       "forbidden",
		"busy":         fmt.Sprintf("127.0.0.1:%d is already in use", busyPort),
		"no-namespace": fmt.Sprintf("namespace %s-later does not exist", ns),
	} {
		s := rf.waitState(name, forward.Failed)
		if !strings.Contains(s.LastError, reason) {
			t.Errorf("%s failed with %q, want %q", name, s.LastError, reason)
		}
	}
	waitFor(t, 5*time.Second, "the summary", func() bool { return strings.Count(rf.out.String(), "\n") == 5 })
	t.Logf("summary:\n%s", rf.out.String())
	if !strings.Contains(rf.out.String(), "busy                 (not running: 127.0.0.1:") {
		t.Errorf("the summary does not show why busy is not running:\n%s", rf.out.String())
	}
	if who(t, good.Addresses[0]) != ns+"/web" {
		t.Fatal("good stopped answering")
	}

	// Once its namespace exists, the forward starts by itself.
	later := ns + "-later"
	if _, err := c.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: later}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "default ServiceAccount in "+later, func() bool {
		_, err := c.Client.CoreV1().ServiceAccounts(later).Get(t.Context(), "default", metav1.GetOptions{})
		return err == nil
	})
	createPod(t, c.Client, later, "web")
	s := rf.waitState("no-namespace", forward.Active)
	if pod := who(t, s.Addresses[0]); pod != later+"/web" {
		t.Fatalf("answered by %q", pod)
	}
}

// deniedKubeconfig writes a kubeconfig with the cluster's admin context
// (current) and a context "denied" for a service account with no rights.
func deniedKubeconfig(t *testing.T, c *cluster.Cluster, ns string) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}
	if _, err := c.Client.CoreV1().ServiceAccounts(ns).Create(t.Context(), sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), "nobody", &authv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	current := cfg.Contexts[cfg.CurrentContext]
	cfg.AuthInfos["nobody"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	cfg.Contexts["denied"] = &clientcmdapi.Context{Cluster: current.Cluster, AuthInfo: "nobody", Namespace: ns}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// 2, 3, 4. Through 20 reloads saved every way an editor or a ConfigMap
// saves, a connection open through an unchanged forward keeps exchanging
// data; added, changed and removed forwards follow the file; a bad edit
// and a deleted file change nothing.
func TestRunnerReloadKeepsUnchangedForwards(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "web")
	keepPort := freePort(t)
	file := func(i int) string {
		s := header(c, "", ns) + fmt.Sprintf("  - name: keep\n    pod: web\n    ports: [\"%d:echo\"]\n", keepPort)
		s += fmt.Sprintf("  - name: churn\n    pod: web\n    ports: [\"%d:http\"]\n", 20000+i) // changed every time
		if i%2 == 1 {
			s += fmt.Sprintf("  - name: extra-%d\n    pod: web\n    ports: [\":http\"]\n", i) // added, then removed
		}
		return s
	}
	rf := runFile(t, file(0))
	rf.waitState("keep", forward.Active)

	live, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", keepPort))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	lines := bufio.NewReader(live)
	exchange := func(msg string) error {
		live.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintln(live, msg); err != nil {
			return err
		}
		got, err := lines.ReadString('\n')
		if err != nil {
			return err
		}
		if got != msg+"\n" {
			return fmt.Errorf("got %q, want %q", got, msg)
		}
		return nil
	}
	// The live connection talks all the time, in the background.
	stop := make(chan struct{})
	talked := make(chan error, 1)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				talked <- nil
				return
			default:
			}
			if err := exchange(fmt.Sprintf("message %d", n)); err != nil {
				talked <- fmt.Errorf("message %d: %w", n, err)
				return
			}
			n++
			time.Sleep(5 * time.Millisecond)
		}
	}()

	saves := []func(content string){
		rf.write, // truncate and write
		func(content string) { // an editor: write a temporary file, rename it over
			tmp := rf.file + ".swp"
			os.WriteFile(tmp, []byte(content), 0o644)
			os.Rename(tmp, rf.file)
		},
		func(content string) { // cp over it
			src := filepath.Join(t.TempDir(), "new.yaml")
			os.WriteFile(src, []byte(content), 0o644)
			if out, err := exec.Command("cp", src, rf.file).CombinedOutput(); err != nil {
				t.Errorf("cp: %v %s", err, out)
			}
		},
		func(content string) { // a symlink swapped to a new file
			target := filepath.Join(filepath.Dir(rf.file), fmt.Sprintf("v%d.yaml", time.Now().UnixNano()))
			os.WriteFile(target, []byte(content), 0o644)
			link := rf.file + ".new"
			os.Symlink(filepath.Base(target), link)
			os.Rename(link, rf.file)
		},
	}
	for i := 1; i <= 20; i++ {
		saves[i%len(saves)](file(i))
		want := fmt.Sprintf("127.0.0.1:%d", 20000+i)
		waitFor(t, 10*time.Second, fmt.Sprintf("reload %d", i), func() bool {
			s := rf.status("churn")
			_, extra := findStatus(rf.r.Statuses(), fmt.Sprintf("extra-%d", i))
			return len(s.Addresses) == 1 && s.Addresses[0] == want && extra == (i%2 == 1)
		})
	}
	close(stop)
	if err := <-talked; err != nil {
		t.Fatalf("the live connection through the unchanged forward broke: %v", err)
	}
	if s := rf.status("keep"); s.Total != 1 || s.Reconnects != 0 {
		t.Fatalf("keep: %d connections, %d reconnects; want the one live connection and no restart", s.Total, s.Reconnects)
	}
	if got := strings.Count(rf.log.String(), "msg=reloaded"); got != 20 {
		t.Errorf("%d reloads logged, want 20", got)
	}

	// A bad edit: nothing changes, the log says where and what.
	before := rf.r.Statuses()
	rf.write(file(21) + "  - name: bad\n    pod: web\n    ports: [\"99999\"]\n")
	waitFor(t, 5*time.Second, "the error in the log", func() bool { return strings.Contains(rf.log.String(), "invalid forwards file") })
	if !strings.Contains(rf.log.String(), rf.file+":18:13: ") {
		t.Errorf("the log does not give file:line:col:\n%s", rf.log.String())
	}
	time.Sleep(200 * time.Millisecond)
	if after := rf.r.Statuses(); !sameForwards(before, after) {
		t.Fatalf("a bad edit changed the forwards:\n%v\n%v", before, after)
	}

	// A deleted file: everything keeps running; re-created, it is applied.
	os.Remove(rf.file)
	waitFor(t, 5*time.Second, "the warning", func() bool { return strings.Contains(rf.log.String(), "the forwards file is gone") })
	if err := exchange("after delete"); err != nil {
		t.Fatalf("deleting the file broke the live connection: %v", err)
	}
	rf.write(file(23))
	waitFor(t, 10*time.Second, "the re-created file", func() bool {
		_, ok := findStatus(rf.r.Statuses(), "extra-23")
		return ok
	})
	if err := exchange("after re-create"); err != nil {
		t.Fatalf("the live connection after the file came back: %v", err)
	}
}

func findStatus(all []forward.Status, name string) (forward.Status, bool) {
	for _, s := range all {
		if s.Name == name {
			return s, true
		}
	}
	return forward.Status{}, false
}

// sameForwards reports whether two snapshots show the same forwards on the
// same addresses.
func sameForwards(a, b []forward.Status) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || strings.Join(a[i].Addresses, ",") != strings.Join(b[i].Addresses, ",") {
			return false
		}
	}
	return true
}

// 5. From the write of the file to the added forward carrying a
// connection. The figure is logged; the bound is only against hangs (the
// target, well under 250 ms, is for benchmarks).
func TestRunnerReloadLatency(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "web")
	base := header(c, "", ns) + "  - name: first\n    pod: web\n    ports: [\":echo\"]\n"
	rf := runFile(t, base)
	rf.waitState("first", forward.Active)

	var took []time.Duration
	for i := range 5 {
		took = append(took, rf.addAndEcho(base, fmt.Sprintf("added-%d", i)))
	}
	t.Logf("file write to first echo through the added forward: %v", took)
}

// addAndEcho writes base plus one forward named name on a free port and
// returns how long it took from the write to the first echo through it.
func (rf *runningFile) addAndEcho(base, name string) time.Duration {
	rf.t.Helper()
	port := freePort(rf.t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	begin := time.Now()
	rf.write(base + fmt.Sprintf("  - name: %s\n    pod: web\n    ports: [\"%d:echo\"]\n", name, port))
	for {
		if reply, err := echoOnce(addr, "hi"); err == nil && reply == "hi" {
			return time.Since(begin)
		}
		if time.Since(begin) > 10*time.Second {
			rf.t.Fatalf("forward %s not carrying connections 10s after the write", name)
		}
		time.Sleep(time.Millisecond)
	}
}

// 6. However many forwards use a namespace, it has one pod watch.
func TestRunnerOnePodWatchPerNamespace(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "web")
	baseline := podWatches(t, c)

	var b strings.Builder
	b.WriteString(header(c, "", ns))
	for i := range 100 {
		fmt.Fprintf(&b, "  - name: f%d\n    pod: web\n    ports: [\":echo\"]\n", i)
	}
	rf := runFile(t, b.String())
	waitFor(t, 60*time.Second, "100 active forwards", func() bool {
		n := 0
		for _, s := range rf.r.Statuses() {
			if s.State == forward.Active {
				n++
			}
		}
		return n == 100
	})
	if got := podWatches(t, c) - baseline; got != 1 {
		t.Fatalf("100 forwards on one namespace hold %d pod watches on the API server, want 1", got)
	}
}

// podWatches reads from the API server's metrics how many namespaced pod
// watches are open.
func podWatches(t *testing.T, c *cluster.Cluster) int {
	return apiserverMetric(t, c, "apiserver_longrunning_requests", `resource="pods"`, `scope="namespace"`, `verb="WATCH"`)
}

// apiserverMetric sums the API server's series of metric whose labels
// include every one of labels (as written: name="value").
func apiserverMetric(t *testing.T, c *cluster.Cluster, metric string, labels ...string) int {
	t.Helper()
	raw, err := c.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, metric+"{") {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(line, l)
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		n += int(v)
	}
	return n
}
