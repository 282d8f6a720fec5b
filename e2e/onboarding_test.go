package e2e

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kforward/kforward/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// kforwardCmd runs the kforward binary with env added to the process's.
func kforwardCmd(t *testing.T, dir string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(kforwardBinary(t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		exit, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatal(err)
		}
		code = exit.ExitCode()
	}
	return out.String(), errOut.String(), code
}

// onboardingNamespace is what `kforward init` meets: a Deployment behind a
// Service with named ports, a Service with an unnamed port, one without a
// selector, a StatefulSet no Service selects (for --workloads) and a bare
// pod (which init leaves out).
func onboardingNamespace(t *testing.T) string {
	c := needCluster(t)
	ns := namespace(t, c)
	createDeployment(t, c.Client, ns, "web", 1)
	createService(t, c.Client, ns, "web", map[string]string{"app": "web"})
	for _, svc := range []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "metrics"}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 9100, TargetPort: intstr.FromInt32(7000)}},
		}},
		{ObjectMeta: metav1.ObjectMeta{Name: "external-db"}, Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{{Name: "pg", Port: 5432}},
		}},
	} {
		if _, err := c.Client.CoreV1().Services(ns).Create(t.Context(), svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	createPod(t, c.Client, ns, "solo")
	replicas := int32(1)
	labels := map[string]string{"app": "db"}
	tmpl := podTemplate(labels)
	tmpl.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "postgres", ContainerPort: 5432}}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl,
		},
	}
	if _, err := c.Client.AppsV1().StatefulSets(ns).Create(t.Context(), sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReadyPods(t, c.Client, ns, "app=web", 1)
	return ns
}

// golden compares got with testdata/name, after replacing the test's
// namespace with NAMESPACE.
func golden(t *testing.T, name, ns, got string) {
	t.Helper()
	got = strings.ReplaceAll(got, ns, "NAMESPACE")
	path := filepath.Join("testdata", name)
	if *update {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(path, []byte(got), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./e2e -run %s -update writes it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from %s:\n%s", t.Name(), path, got)
	}
}

// `kforward init` on a real cluster: a golden file, which kforward
// validate accepts, and the same bytes on a second run.
func TestInit(t *testing.T) {
	c := needCluster(t)
	ns := onboardingNamespace(t)
	empty := ns + "-none" // sorts after ns, so the file's order is fixed
	if _, err := c.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: empty}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	env := []string{"KUBECONFIG=" + c.Kubeconfig}

	out, errOut, code := kforwardCmd(t, dir, env, "init", "-n", ns, "-n", empty, "--workloads")
	if code != 0 || out != "wrote forwards.yaml: 3 forwards; kforward run starts them\n" {
		t.Fatalf("init: exit %d\n%s%s", code, out, errOut)
	}
	first, _ := os.ReadFile(filepath.Join(dir, "forwards.yaml"))
	golden(t, "init.golden", ns, strings.ReplaceAll(string(first), empty, "EMPTY"))
	if _, err := config.ParseFile("forwards.yaml", first); err != nil {
		t.Errorf("the file does not parse: %v", err)
	}
	if out, errOut, code := kforwardCmd(t, dir, env, "validate"); code != 0 {
		t.Errorf("kforward validate: exit %d\n%s%s", code, out, errOut)
	}

	if _, errOut, code := kforwardCmd(t, dir, env, "init", "-n", ns); code != 1 || errOut != "error: forwards.yaml exists; --force overwrites it, --dry-run prints the new one\n" {
		t.Errorf("init over an existing file: exit %d, %q", code, errOut)
	}
	again, _, _ := kforwardCmd(t, dir, env, "init", "-n", ns, "-n", empty, "--workloads", "--dry-run")
	if again != string(first) {
		t.Errorf("a second run differs:\n%s", again)
	}

	if _, errOut, code := kforwardCmd(t, dir, env, "init", "-n", empty, "--dry-run"); code != 1 || !strings.Contains(errOut, "nothing to forward") {
		t.Errorf("init of a namespace with no services: exit %d, %q", code, errOut)
	}
}

// An unreachable cluster is a clear error, soon.
func TestInitUnreachable(t *testing.T) {
	dead := deadKubeconfig(t, false)
	began := time.Now()
	_, errOut, code := kforwardCmd(t, t.TempDir(), []string{"KUBECONFIG=" + dead}, "init", "--dry-run")
	took := time.Since(began)
	t.Logf("init against a closed port: %s, %q", took, errOut)
	if code != 1 || !strings.HasPrefix(errOut, `error: list services in namespace "default": `) || !strings.Contains(errOut, "connection refused") {
		t.Errorf("exit %d, %q", code, errOut)
	}
	if took > 20*time.Second {
		t.Errorf("took %s", took)
	}
}

// deadKubeconfig is a kubeconfig for a server that refuses connections or,
// with hang, accepts them and never answers.
func deadKubeconfig(t *testing.T, hang bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if hang {
		t.Cleanup(func() { ln.Close() })
		go func() {
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
			}
		}()
	} else {
		ln.Close()
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: dead, cluster: {server: "https://%s", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: dead, context: {cluster: dead, user: u}}]
current-context: dead
`, addr)), 0o600)
	return path
}

// `kforward add` and `remove` on a file a running kforward watches: the
// added forward starts, the removed one stops; a refused add changes not
// a byte.
func TestAddRemoveWhileRunning(t *testing.T) {
	c := needCluster(t)
	ns := onboardingNamespace(t)
	dir := t.TempDir()
	env := []string{"KUBECONFIG=" + c.Kubeconfig}
	if _, errOut, code := kforwardCmd(t, dir, env, "init", "-n", ns); code != 0 {
		t.Fatal(errOut)
	}
	file := filepath.Join(dir, "forwards.yaml")
	t.Setenv("KUBECONFIG", c.Kubeconfig) // for the kforward run started below
	k := startRun(t, file, "--status-addr", "off")
	for range 2 {
		k.line(t)
	}

	port := freePort(t)
	out, errOut, code := kforwardCmd(t, dir, nil, "add", "pod/solo", fmt.Sprintf("%d:echo", port), "--name", "solo")
	if code != 0 || out != "added solo to forwards.yaml\n" {
		t.Fatalf("add: exit %d\n%s%s", code, out, errOut)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := echoOnce(fmt.Sprintf("127.0.0.1:%d", port), "hello")
		if err == nil && got == "hello" {
			break
		}
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(file)
			t.Fatalf("the added forward carries no connection: %v\nfile:\n%s\nlog:\n%s", err, data, k.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	before, _ := os.ReadFile(file)
	golden(t, "add.golden", ns, strings.ReplaceAll(string(before), fmt.Sprint(port), "PORT"))

	_, errOut, code = kforwardCmd(t, dir, nil, "add", "svc/web", fmt.Sprintf("%d:web", port))
	if after, _ := os.ReadFile(file); code != 1 || !bytes.Equal(after, before) || !strings.Contains(errOut, fmt.Sprintf("127.0.0.1:%d is already used by forward \"solo\"", port)) {
		t.Errorf("an add on a used port: exit %d, %q; file changed: %v", code, errOut, !bytes.Equal(after, before))
	}

	if out, errOut, code := kforwardCmd(t, dir, nil, "remove", "solo"); code != 0 || out != "removed solo from forwards.yaml\n" {
		t.Fatalf("remove: exit %d\n%s%s", code, out, errOut)
	}
	waitFor(t, 30*time.Second, "the removed forward's port to close", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	initial, _, _ := kforwardCmd(t, dir, env, "init", "-n", ns, "--dry-run")
	if after, _ := os.ReadFile(file); string(after) != initial {
		t.Errorf("add then remove did not give back the file init wrote:\n%s", after)
	}
}

// Completion that knows the cluster, and gives up within a second.
func TestCompletion(t *testing.T) {
	c := needCluster(t)
	ns := onboardingNamespace(t)
	env := []string{"KUBECONFIG=" + c.Kubeconfig}
	dir := t.TempDir() // a forwards file whose defaults name ns
	if _, errOut, code := kforwardCmd(t, dir, env, "init", "-n", ns); code != 0 {
		t.Fatal(errOut)
	}
	complete := func(env []string, args ...string) ([]string, time.Duration) {
		began := time.Now()
		out, errOut, code := kforwardCmd(t, t.TempDir(), env, append([]string{"__complete"}, args...)...)
		if code != 0 {
			t.Fatalf("__complete %v: exit %d %s", args, code, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		return lines[:len(lines)-1], time.Since(began) // the last line is the directive
	}
	if got, _ := complete(env, "add", "-n", ns, "svc/"); !slices.Equal(got, []string{"svc/external-db", "svc/metrics", "svc/web"}) {
		t.Errorf("add svc/<TAB>: %q", got)
	}
	if got, _ := complete(env, "add", "-f", filepath.Join(dir, "forwards.yaml"), "sts/"); !slices.Equal(got, []string{"sts/db"}) {
		t.Errorf("add sts/<TAB> with the namespace from the file's defaults: %q", got)
	}
	if got, _ := complete(env, "add", "-n", ns, "deploy/"); !slices.Equal(got, []string{"deploy/web"}) {
		t.Errorf("add deploy/<TAB>: %q", got)
	}
	if got, _ := complete(env, "add", "-n", ""); !slices.Contains(got, ns) || !slices.Contains(got, "default") {
		t.Errorf("-n <TAB>: %q", got)
	}
	if got, _ := complete(env, "add", "--context", ""); !slices.Equal(got, []string{"kforward-e2e"}) {
		t.Errorf("--context <TAB>: %q", got)
	}
	got, took := complete([]string{"KUBECONFIG=" + deadKubeconfig(t, true)}, "add", "svc/")
	t.Logf("a cluster that never answers: %q after %s", got, took)
	if len(got) != 0 || took > 2*time.Second { // a second, and the process's own start
		t.Errorf("a hanging cluster: %q after %s, want nothing within about a second", got, took)
	}
}
