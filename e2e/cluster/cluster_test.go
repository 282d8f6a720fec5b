package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport/spdy"
)

// TestSmoke proves the real path end to end without kubectl: a Deployment's
// two pods become Ready on the kwok node, and a port-forward stream through
// the API server to each pod reaches that pod's own backend.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	ctx := t.Context()
	start := time.Now()
	c, err := Start(ctx, Options{Progress: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	t.Logf("cluster.Start took %s", time.Since(start).Round(time.Millisecond))

	pods := deployAndWait(t, c.Client, "smoke", 2)
	for _, pod := range pods {
		got := httpGetThroughPortForward(t, c.Config, pod.Namespace, pod.Name, 80)
		if want := pod.Namespace + "/" + pod.Name + "\n"; got != want {
			t.Errorf("pod %s answered %q, want %q", pod.Name, got, want)
		}
	}
}

func deployAndWait(t *testing.T, client kubernetes.Interface, name string, replicas int32) []corev1.Pod {
	t.Helper()
	ctx := t.Context()
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "web", Image: "example.invalid/web",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}},
				}}},
			},
		},
	}
	if _, err := client.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ready []corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err
		}
		ready = ready[:0]
		for _, p := range list.Items {
			if podReady(&p) && p.Spec.NodeName == NodeName {
				ready = append(ready, p)
			}
		}
		return len(ready) == int(replicas), nil
	})
	if err != nil {
		t.Fatalf("waiting for %d ready pods: %v (have %d)", replicas, err, len(ready))
	}
	return ready
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// httpGetThroughPortForward opens one port-forward stream pair to the pod
// over SPDY and sends GET / on it, returning the body.
func httpGetThroughPortForward(t *testing.T, cfg *rest.Config, ns, pod string, port int) string {
	t.Helper()
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(cfg.Host + fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/portforward", ns, pod))
	if err != nil {
		t.Fatal(err)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	conn, _, err := dialer.Dial("portforward.k8s.io")
	if err != nil {
		t.Fatalf("upgrade to %s: %v", pod, err)
	}
	defer conn.Close()
	headers := http.Header{}
	headers.Set("streamType", "error")
	headers.Set("port", fmt.Sprint(port))
	headers.Set("requestID", "1")
	errStream, err := conn.CreateStream(headers)
	if err != nil {
		t.Fatal(err)
	}
	errStream.Close()
	headers.Set("streamType", "data")
	data, err := conn.CreateStream(headers)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Reset()
	if _, err := io.WriteString(data, "GET / HTTP/1.0\r\nHost: pod\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(data), nil)
	if err != nil {
		msg, _ := io.ReadAll(errStream)
		t.Fatalf("response from %s: %v (error stream: %q)", pod, err, msg)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %s", pod, resp.Status)
	}
	return string(body)
}
