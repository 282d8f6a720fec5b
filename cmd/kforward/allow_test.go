package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// kforward allow says what it approves (the kubeconfig by path and hash,
// the program its exec plugin runs, each address beyond loopback and its
// forwards) and records it in the user's config directory; validate says
// what needs approval.
func TestAllowSaysWhatItApproves(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "cfg"))
	t.Setenv("KUBECONFIG", "")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "kubeconfig"), []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: ./plugin}}}]
contexts: [{name: dev, context: {cluster: c, user: u}}]
current-context: dev
`), 0o600)
	file := filepath.Join(dir, "forwards.yaml")
	os.WriteFile(file, []byte("kubeconfig: kubeconfig\nforwards:\n  - {name: db, pod: db, ports: [5432], address: 0.0.0.0}\n  - {name: web, pod: web, ports: [80]}\n"), 0o644)

	code, out, errOut := runMain(t, "validate", file)
	if code != 0 || !strings.Contains(out, file+": kforward run uses kubeconfig "+filepath.Join(dir, "kubeconfig")+" and address 0.0.0.0 only once you approve it (kforward allow -f "+file+")") {
		t.Fatalf("validate: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = runMain(t, "allow", "-f", file)
	store := filepath.Join(home, "cfg", "kforward", "allowed.json")
	for _, want := range []string{
		"approved for " + file + ":\n",
		"  kubeconfig " + filepath.Join(dir, "kubeconfig") + " (sha256 ",
		"its exec plugins run: " + filepath.Join(dir, "plugin") + "\n",
		"  address 0.0.0.0: reachable from other machines (forwards: db)\n",
		"recorded in " + store + "\n",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("kforward allow: exit %d, want %q in:\n%s%s", code, want, out, errOut)
		}
	}
	var stored struct {
		Files map[string]struct {
			Kubeconfigs []struct{ Path, SHA256 string }
			Addresses   []string
		}
	}
	data, err := os.ReadFile(store)
	if err != nil || json.Unmarshal(data, &stored) != nil {
		t.Fatalf("approvals file: %v\n%s", err, data)
	}
	got := stored.Files[file]
	if len(got.Kubeconfigs) != 1 || got.Kubeconfigs[0].Path != filepath.Join(dir, "kubeconfig") || len(got.Kubeconfigs[0].SHA256) != 64 ||
		strings.Join(got.Addresses, ",") != "0.0.0.0" {
		t.Fatalf("recorded %s", data)
	}

	os.WriteFile(file, []byte("forwards:\n  - {name: web, pod: web, ports: [80]}\n"), 0o644)
	if code, out, _ := runMain(t, "allow", "-f", file); code != 0 || !strings.Contains(out, "needs no approval") {
		t.Fatalf("a file that asks for nothing: exit %d\n%s", code, out)
	}
}

// Completion asks the cluster of the file's kubeconfig only once that is
// approved: a TAB in a repository never runs its kubeconfig's exec plugin.
func TestCompletionUsesOnlyApprovedKubeconfig(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "cfg"))
	t.Setenv("KUBECONFIG", "")
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\n"), 0o600)
	file := filepath.Join(dir, "forwards.yaml")
	os.WriteFile(file, []byte("kubeconfig: kubeconfig\ndefaults: {context: dev}\nforwards:\n  - {pod: web, ports: [80]}\n"), 0o644)
	if w := withFileDefaults(file, "", "", ""); w.kubeconfig != "" || w.context != "dev" {
		t.Fatalf("before allow: %+v, want no kubeconfig from the file", w)
	}
	if code, out, errOut := runMain(t, "allow", "-f", file); code != 0 {
		t.Fatalf("allow: %s%s", out, errOut)
	}
	if w := withFileDefaults(file, "", "", ""); w.kubeconfig != kc {
		t.Fatalf("after allow: %+v, want the file's kubeconfig", w)
	}
}
