package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kforward/kforward/e2e/cluster"
)

// The pods' container ports (see e2e/cluster/backends.go): "http" answers
// GET /, GET /bytes/N and POST /sink; "echo" echoes; "once" echoes its
// first read and closes. Short connections use "once": through kwok, an
// "echo" connection outlives its client (kwok does not pass the client's
// half-close on), and thousands of them exhaust file descriptors.
const (
	httpPort   int32 = 80
	echoPort   int32 = 7000
	oncePort   int32 = 7001
	benchPod         = "web"
	rolloutApp       = "rollout"
)

var ports = []corev1.ContainerPort{{Name: "http", ContainerPort: httpPort}, {Name: "echo", ContainerPort: echoPort}, {Name: "once", ContainerPort: oncePort}}

func podTemplate(app string, ports []corev1.ContainerPort) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{
			// Old pods go at once in a rollout, as in the e2e tests.
			TerminationGracePeriodSeconds: new(int64),
			Containers:                    []corev1.Container{{Name: "app", Image: "example.invalid/app", Ports: ports}},
		},
	}
}

// setup creates the namespace, the pod every data-path scenario uses and
// the deployment of the recovery scenario.
func (b *bench) setup(ctx context.Context) error {
	b.ns = "bench"
	client := b.c.Client
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: b.ns}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace: %w", err)
	}
	if err := b.poll(ctx, 30*time.Second, "default ServiceAccount", func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ServiceAccounts(b.ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return err
	}
	tmpl := podTemplate(benchPod, ports)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: benchPod, Namespace: b.ns, Labels: tmpl.Labels}, Spec: tmpl.Spec}
	if _, err := client.CoreV1().Pods(b.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create pod: %w", err)
	}
	replicas := int32(2)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: rolloutApp, Namespace: b.ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": rolloutApp}},
			Template: podTemplate(rolloutApp, ports),
		},
	}
	if _, err := client.AppsV1().Deployments(b.ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create deployment: %w", err)
	}
	return b.waitReady(ctx, "app="+benchPod, 1, time.Minute)
}

// readyPods lists the Ready, not terminating pods matching selector.
func (b *bench) readyPods(ctx context.Context, selector string) ([]corev1.Pod, int, error) {
	list, err := b.c.Client.CoreV1().Pods(b.ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, 0, err
	}
	var ready []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && podReady(&p) {
			ready = append(ready, p)
		}
	}
	return ready, len(list.Items), nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitReady waits until exactly n pods match selector and all are Ready.
func (b *bench) waitReady(ctx context.Context, selector string, n int, timeout time.Duration) error {
	return b.poll(ctx, timeout, fmt.Sprintf("%d ready pods %s", n, selector), func(ctx context.Context) (bool, error) {
		ready, all, err := b.readyPods(ctx, selector)
		return err == nil && len(ready) == n && all == n, nil
	})
}

func (b *bench) poll(ctx context.Context, timeout time.Duration, what string, cond wait.ConditionWithContextFunc) error {
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, cond); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("waiting %s for %s: %w", timeout, what, err)
	}
	return nil
}

// session is one forwarder carrying the bench pod's three ports.
type session struct {
	http, echo, once string // local addresses
	proc             *proc  // the forwarding process; nil for direct
}

func (s *session) close() {
	if s.proc != nil {
		s.proc.stop()
	}
}

// open starts forwarder f to target ("pod/web" or "deployment/rollout")
// and returns once it answers (on http and once: a probe on echo would
// outlive itself in kwok). settings is extra YAML for
// kforward's defaults (one line), or "".
func (b *bench) open(ctx context.Context, f forwarder, target, settings string) (*session, error) {
	s := &session{}
	switch f.kind {
	case direct:
		name, ok := strings.CutPrefix(target, "pod/")
		if !ok {
			return nil, fmt.Errorf("direct needs a pod, not %s", target)
		}
		var err error
		if s.http, err = b.c.BackendAddr(ctx, b.ns, name, httpPort); err != nil {
			return nil, err
		}
		if s.echo, err = b.c.BackendAddr(ctx, b.ns, name, echoPort); err != nil {
			return nil, err
		}
		if s.once, err = b.c.BackendAddr(ctx, b.ns, name, oncePort); err != nil {
			return nil, err
		}
	case kforwardKind:
		local, err := cluster.FreePorts(3)
		if err != nil {
			return nil, err
		}
		kind, name, _ := strings.Cut(target, "/")
		forward := fmt.Sprintf("  - name: bench\n    %s: %s\n    ports: [\"%d:%d\", \"%d:%d\", \"%d:%d\"]\n", kind, name, local[0], httpPort, local[1], echoPort, local[2], oncePort)
		s.http, s.echo, s.once = loopback(local[0]), loopback(local[1]), loopback(local[2])
		if s.proc, _, err = b.startKforward(f, settings, forward); err != nil {
			return nil, err
		}
	case kubectlKind:
		local, err := cluster.FreePorts(3)
		if err != nil {
			return nil, err
		}
		s.http, s.echo, s.once = loopback(local[0]), loopback(local[1]), loopback(local[2])
		if s.proc, err = b.startKubectl(ctx, f, target, fmt.Sprintf("%d:%d", local[0], httpPort), fmt.Sprintf("%d:%d", local[1], echoPort), fmt.Sprintf("%d:%d", local[2], oncePort)); err != nil {
			return nil, err
		}
	}
	err := b.poll(ctx, 30*time.Second, f.Name+" to answer", func(ctx context.Context) (bool, error) {
		if s.proc != nil && s.proc.exited() {
			return true, nil // said below
		}
		_, err := get(ctx, s.http, "/")
		if err == nil {
			err = echoOnce(ctx, s.once, 1)
		}
		return err == nil, nil
	})
	switch {
	case err == nil && s.proc != nil && s.proc.exited():
		err = s.proc.failure("exited")
	case err != nil && s.proc != nil && ctx.Err() == nil:
		err = s.proc.failure("does not answer within 30s")
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// kubeconfig is the kubeconfig every forwarder uses: the cluster's, or
// during the uplink scenario one that reaches it through a slow link.
func (b *bench) kubeconfig() string {
	if b.via != "" {
		return b.via
	}
	return b.c.Kubeconfig
}

// kforwardFile writes a forwards file: the namespace, the forwarder's
// transport, extra default settings, then the forwards (YAML list items).
// The kubeconfig is the user's own ($KUBECONFIG, see startKforward), as
// kubectl's is: one the file named would need kforward allow.
func (b *bench) kforwardFile(path string, f forwarder, settings, forwards string) error {
	var y strings.Builder
	fmt.Fprintf(&y, "defaults:\n  namespace: %s\n  transport: %s\n", b.ns, f.transport)
	if settings != "" {
		fmt.Fprintf(&y, "  %s\n", settings)
	}
	y.WriteString("forwards:\n")
	y.WriteString(forwards)
	// Written to a temporary file and renamed, as editors save, so that a
	// running kforward never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(y.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

var fileCounter int

// startKforward runs kforward on a new forwards file, in a directory of
// its own (kforward watches the directory), and returns the file's path.
func (b *bench) startKforward(f forwarder, settings, forwards string) (*proc, string, error) {
	fileCounter++
	dir := filepath.Join(b.tmp, fmt.Sprintf("kforward-%d", fileCounter))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, "", err
	}
	file := filepath.Join(dir, "forwards.yaml")
	if err := b.kforwardFile(file, f, settings, forwards); err != nil {
		return nil, "", err
	}
	env := append(os.Environ(), "KUBECONFIG="+b.kubeconfig())
	binary := b.kforward
	if f.binary != "" {
		binary = f.binary
	}
	p, err := startProc(f.Name, binary, []string{"run", "-f", file, "--grace", "200ms"}, env, "")
	return p, file, err
}

// startKubectl starts kubectl port-forward and waits for its "Forwarding
// from" line.
func (b *bench) startKubectl(ctx context.Context, f forwarder, target string, portMaps ...string) (*proc, error) {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "KUBECTL_PORT_FORWARD_WEBSOCKETS=") {
			env = append(env, e)
		}
	}
	if f.transport == "spdy" {
		env = append(env, "KUBECTL_PORT_FORWARD_WEBSOCKETS=false")
	} // else kubectl's default, WebSocket since 1.31
	args := append([]string{"--kubeconfig", b.kubeconfig(), "-n", b.ns, "port-forward", "--address", "127.0.0.1", target}, portMaps...)
	p, err := startProc(f.Name, b.kubectl, args, env, "Forwarding from")
	if err != nil {
		return nil, err
	}
	select {
	case <-p.out.marked:
		return p, nil
	case <-p.done:
		return nil, p.failure("exited before forwarding")
	case <-time.After(30 * time.Second):
		p.stop()
		return nil, p.failure("printed no \"Forwarding from\" within 30s")
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
}

func loopback(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
