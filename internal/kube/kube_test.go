package kube

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const twoContexts = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: secret-token}
contexts:
- name: dev
  context: {cluster: c, user: u, namespace: team}
- name: prod
  context: {cluster: c, user: u}
current-context: dev
`

func writeKubeconfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConnect(t *testing.T) {
	p := writeKubeconfig(t, twoContexts)
	c, err := Connect(p, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Context != "dev" || c.Namespace != "team" || c.Config.QPS != QPS || c.Config.Burst != Burst {
		t.Errorf("current context: %q %q qps %v burst %d", c.Context, c.Namespace, c.Config.QPS, c.Config.Burst)
	}
	if c, err := Connect(p, "prod"); err != nil || c.Context != "prod" || c.Namespace != "default" {
		t.Errorf("context prod: %v %+v", err, c)
	}
}

// The first-run messages, word for word.
func TestConnectErrors(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("KUBECONFIG", "")
	_, err := Connect("", "")
	want := "no kubeconfig: tried $KUBECONFIG (not set) and " + filepath.Join(home, ".kube", "config") +
		" (no such file); set KUBECONFIG, write ~/.kube/config, or name one with kubeconfig: in the forwards file"
	if err == nil || err.Error() != want {
		t.Errorf("no kubeconfig:\n got %v\nwant %s", err, want)
	}

	_, err = Connect("", "staging")
	if err == nil || !strings.HasPrefix(err.Error(), "no kubeconfig: tried $KUBECONFIG (not set)") {
		t.Errorf("no kubeconfig, a context named: %v", err)
	}

	empty := writeKubeconfig(t, "")
	t.Setenv("KUBECONFIG", empty)
	_, err = Connect("", "")
	want = "no kubeconfig: tried $KUBECONFIG's " + empty + " (empty); set KUBECONFIG, write ~/.kube/config, or name one with kubeconfig: in the forwards file"
	if err == nil || err.Error() != want {
		t.Errorf("empty $KUBECONFIG:\n got %v\nwant %s", err, want)
	}

	p := writeKubeconfig(t, twoContexts)
	_, err = Connect(p, "staging")
	want = `context "staging" is not in the kubeconfig (` + p + `); it has: dev, prod`
	if err == nil || err.Error() != want {
		t.Errorf("unknown context:\n got %v\nwant %s", err, want)
	}

	missing := filepath.Join(t.TempDir(), "nope")
	_, err = Connect(missing, "")
	want = "kubeconfig " + missing + " (the forwards file's kubeconfig:) cannot be read: no such file or directory"
	if err == nil || err.Error() != want {
		t.Errorf("missing explicit kubeconfig:\n got %v\nwant %s", err, want)
	}

	noCurrent := writeKubeconfig(t, twoContexts[:len(twoContexts)-len("current-context: dev\n")])
	_, err = Connect(noCurrent, "")
	want = "the kubeconfig (" + noCurrent + ") has no current context; name one with context: in the forwards file (it has: dev, prod)"
	if err == nil || err.Error() != want {
		t.Errorf("no current context:\n got %v\nwant %s", err, want)
	}
}

func TestContexts(t *testing.T) {
	names, current, err := Contexts(writeKubeconfig(t, twoContexts))
	if err != nil || current != "dev" || len(names) != 2 || names[0] != "dev" || names[1] != "prod" {
		t.Errorf("Contexts = %v %q %v", names, current, err)
	}
}
