package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/e2e/cluster"
	"github.com/kforward/kforward/forward"
)

var nsCounter struct {
	sync.Mutex
	n int
}

// namespace creates a fresh namespace for one test.
func namespace(t testing.TB, c *cluster.Cluster) string {
	t.Helper()
	nsCounter.Lock()
	nsCounter.n++
	name := fmt.Sprintf("e2e-%d-%d", time.Now().UnixNano()%100000, nsCounter.n)
	nsCounter.Unlock()
	_, err := c.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "default ServiceAccount in "+name, func() bool {
		_, err := c.Client.CoreV1().ServiceAccounts(name).Get(t.Context(), "default", metav1.GetOptions{})
		return err == nil
	})
	return name
}

// namespaceWithPod creates a fresh namespace with one Ready pod, labelled
// app=<pod>, and returns the namespace.
func namespaceWithPod(t testing.TB, c *cluster.Cluster, pod string) string {
	t.Helper()
	ns := namespace(t, c)
	createPod(t, c.Client, ns, pod)
	waitReadyPods(t, c.Client, ns, "app="+pod, 1)
	return ns
}

var webPorts = []corev1.ContainerPort{
	{Name: "http", ContainerPort: 80},
	{Name: "echo", ContainerPort: 7000},
	{Name: "refused", ContainerPort: 81},
}

func podTemplate(labels map[string]string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			Containers:                    []corev1.Container{{Name: "app", Image: "example.invalid/app", Ports: webPorts}},
		},
	}
}

func createPod(t testing.TB, client kubernetes.Interface, ns, name string) {
	t.Helper()
	tmpl := podTemplate(map[string]string{"app": name})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: tmpl.Labels}, Spec: tmpl.Spec}
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func createDeployment(t testing.TB, client kubernetes.Interface, ns, name string, replicas int32) {
	t.Helper()
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: podTemplate(labels),
		},
	}
	if _, err := client.AppsV1().Deployments(ns).Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// createService creates a service whose port 8080 "web" targets the
// container port named http.
func createService(t testing.TB, client kubernetes.Interface, ns, name string, selector map[string]string) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: selector,
			Ports: []corev1.ServicePort{
				{Name: "web", Port: 8080, TargetPort: intstr.FromString("http")},
				{Name: "raw", Port: 9000, TargetPort: intstr.FromInt32(7000)},
			},
		},
	}
	if _, err := client.CoreV1().Services(ns).Create(t.Context(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func readyPods(t testing.TB, client kubernetes.Interface, ns, selector string) []corev1.Pod {
	list, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				out = append(out, p)
			}
		}
	}
	return out
}

func waitReadyPods(t testing.TB, client kubernetes.Interface, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	waitFor(t, 60*time.Second, fmt.Sprintf("%d ready pods %s", n, selector), func() bool {
		pods = readyPods(t, client, ns, selector)
		return len(pods) == n
	})
	return pods
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// spec returns a forward spec with test-friendly timings.
func spec(name, ns string, target config.Target, ports ...string) config.Forward {
	f := config.Forward{
		Name: name, Namespace: ns, Target: target, Addresses: []string{"127.0.0.1"},
		Transport:      config.Auto,
		Reconnect:      config.Backoff{Initial: 50 * time.Millisecond, Max: time.Second},
		Health:         config.Health{Interval: time.Second, Timeout: time.Second},
		ConnectTimeout: 10 * time.Second,
	}
	for _, p := range ports {
		port, err := config.ParsePort(p)
		if err != nil {
			panic(err)
		}
		f.Ports = append(f.Ports, port)
	}
	return f
}

// startForward runs a forward until the test ends and waits for it to be
// active; it fails the test if Run does not return promptly at the end.
func startForward(t testing.TB, c *cluster.Cluster, s config.Forward) *forward.Forward {
	t.Helper()
	return startForwardLog(t, c, s, nil)
}

// startForwardLog is startForward with the forward's log going to log.
func startForwardLog(t testing.TB, c *cluster.Cluster, s config.Forward, log *slog.Logger) *forward.Forward {
	t.Helper()
	f := forward.New(s, forward.Env{Config: c.Config, Client: c.Client, Namespace: s.Namespace, Log: log})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("forward %s did not stop within 5s", s.Name)
		}
	})
	return f
}

func waitActive(t testing.TB, f *forward.Forward) forward.Status {
	t.Helper()
	var st forward.Status
	waitFor(t, 30*time.Second, "forward active", func() bool {
		st = f.Status()
		return st.State == forward.Active
	})
	return st
}

// get sends GET path to addr and returns the body.
func get(addr, path string) (string, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return string(body), err
}

// who asks the forward at addr which pod answers.
func who(t testing.TB, addr string) string {
	t.Helper()
	body, err := get(addr, "/")
	if err != nil {
		t.Fatalf("GET http://%s/: %v", addr, err)
	}
	return strings.TrimSpace(body)
}

// echoOnce sends msg over a new connection and reads it back.
func echoOnce(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return echoOver(c, msg)
}

// echoOver sends msg over c and reads it back.
func echoOver(c net.Conn, msg string) (string, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// notOurs are goroutines a leak check must not blame on kforward: idle
// keep-alive connections of the tests' own client (HTTP/1.1, see
// cluster.Start; a read loop waits in a select or in a read), and the pods'
// backends (their listeners and connections), which belong to the cluster
// until their pod goes; kwok does not end a stream when the client
// half-closes it. The forwards and runners these tests run in-process serve
// no HTTP themselves: kforward's status endpoint runs only in the command,
// which the tests run as a separate process.
var notOurs = []goleak.Option{
	goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
	goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	goleak.IgnoreAnyFunction("github.com/kforward/kforward/e2e/cluster.(*echoServer).serve"),
	goleak.IgnoreAnyFunction("github.com/kforward/kforward/e2e/cluster.(*echoServer).serve.func1"),
	goleak.IgnoreAnyFunction("net/http.(*Server).Serve"),
	goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
}

// soak is short under `make test` and long under `make soak`
// (KFORWARD_SOAK=1): the fault tests take their counts and durations from
// it, so the same test is both the quick check and the long one.
func soak[T any](short, long T) T {
	if os.Getenv("KFORWARD_SOAK") != "" {
		return long
	}
	return short
}

// failIfAny reports the first five errors of errs, which is closed, and
// ends the test if there were any, out of n things of what.
func failIfAny(t testing.TB, errs <-chan error, n int, what string) {
	t.Helper()
	failed := 0
	for err := range errs {
		if failed++; failed <= 5 {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d %s failed", failed, n, what)
	}
}
