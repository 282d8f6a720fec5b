package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestUpDown runs the command as people do: up starts a background
// cluster with a Ready node, a second up is a no-op, and down leaves no
// process behind.
func TestUpDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	bin := filepath.Join(t.TempDir(), "devcluster")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	devcluster := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"--dir", dir}, args...)...).Output()
		if err != nil {
			t.Fatalf("devcluster %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { exec.Command(bin, "--dir", dir, "down").Run() })

	out := devcluster("up")
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if out != kubeconfig+"\n" {
		t.Errorf("up printed %q, want the kubeconfig path %q", out, kubeconfig)
	}
	env, _ := os.ReadFile(filepath.Join(dir, "env"))
	if string(env) != "export KUBECONFIG="+kubeconfig+"\n" {
		t.Errorf("env file = %q", env)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cfg)
	nodes, err := client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 1 || !ready(nodes.Items[0]) {
		t.Fatalf("nodes = %+v, want one Ready node", nodes.Items)
	}

	pidData, _ := os.ReadFile(filepath.Join(dir, "pid"))
	server, _ := strconv.Atoi(string(pidData))
	if again := devcluster("up"); again != out {
		t.Errorf("second up printed %q, want %q", again, out)
	}
	if pidAgain, _ := os.ReadFile(filepath.Join(dir, "pid")); string(pidAgain) != string(pidData) {
		t.Errorf("second up replaced the server: pid %s -> %s", pidData, pidAgain)
	}
	children := childrenOf(t, server)
	if len(children) != 5 {
		t.Errorf("server %d has children %v, want 5 (etcd, apiserver, controller-manager, scheduler, kwok)", server, children)
	}

	if got := devcluster("down"); got != "devcluster: stopped\n" {
		t.Errorf("down printed %q", got)
	}
	for _, pid := range append(children, server) {
		if alive(pid) {
			t.Errorf("process %d still running after down", pid)
		}
	}
	if got := devcluster("status"); got != "devcluster: not running\n" {
		t.Errorf("status after down = %q", got)
	}
}

func ready(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(t *testing.T, pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return false
		}
		stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
