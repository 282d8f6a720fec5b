package runner

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kforward/kforward/config"
)

// trustedHome gives the test a home and config directory of its own, with
// no approvals, and an own kubeconfig elsewhere.
func trustedHome(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("KUBECONFIG", filepath.Join(home, "own-kubeconfig"))
}

// allow runs what `kforward allow -f file` does.
func allow(t *testing.T, file string) Approval {
	t.Helper()
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	ask, err := Asks(file, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Allow(ask); err != nil {
		t.Fatal(err)
	}
	return ask
}

// A forward that listens beyond loopback does not start until this user
// approved that address for this file; the log says what to run, once;
// the others run beside it. An edit that changes nothing of it needs no new
// approval, a new address does.
func TestAddressBeyondLoopbackNeedsApproval(t *testing.T) {
	trustedHome(t)
	wide := "  - name: wide\n    pod: wide\n    address: 0.0.0.0\n    ports: [\"9009:80\"]\n"
	h := run(t, forwardsFile(map[string]int{"a": 9001}, wide), 0)
	abs, _ := filepath.Abs(h.file)
	run := "kforward allow -f " + abs
	h.waitFor("the approval asked for", func() bool { return strings.Contains(h.log.String(), run) })
	if h.current()["wide"] != nil {
		t.Fatal("the forward on 0.0.0.0 started without approval")
	}
	if h.current()["a"] == nil {
		t.Fatal("the forward on loopback did not start beside it")
	}
	st := statusOf(h, "wide")
	if st.State != "failed" || !strings.Contains(st.LastError, "listens on 0.0.0.0") || !strings.Contains(st.LastError, run) {
		t.Fatalf("status of the unapproved forward: %s %q", st.State, st.LastError)
	}

	// An edit elsewhere (b added): asked for again neither in the log nor
	// by a start.
	h.write(forwardsFile(map[string]int{"a": 9001, "b": 9002}, wide))
	h.waitFor("b", func() bool { return h.current()["b"] != nil })
	h.r.Reload(t.Context())
	if n := strings.Count(h.log.String(), run); n != 1 {
		t.Fatalf("the log says what to run %d times, want once:\n%s", n, h.log.String())
	}
	a := h.current()["a"]

	ask := allow(t, h.file)
	if strings.Join(ask.Addresses, ",") != "0.0.0.0" || ask.Kubeconfig != nil {
		t.Fatalf("kforward allow approved %+v, want the address 0.0.0.0 only", ask)
	}
	h.waitFor("the approved forward started", func() bool { return h.current()["wide"] != nil })
	if h.current()["a"] != a {
		t.Fatal("a was restarted by the approval")
	}

	// Another address needs approval again.
	h.write(forwardsFile(map[string]int{"a": 9001, "b": 9002}, strings.Replace(wide, "0.0.0.0", "192.0.2.1", 1)))
	h.waitFor("the new address asked for", func() bool { return strings.Contains(h.log.String(), "listens on 192.0.2.1") })
	if h.current()["wide"] != nil {
		t.Fatal("the forward started on a new address without approval")
	}
}

// A kubeconfig the file names (beside it, in the repository) is not read
// for a client, nor its exec plugin run, until approved by its content; a
// change to its content needs approval again. The user's own kubeconfig
// needs none, whoever names it.
func TestFileNamedKubeconfigNeedsApproval(t *testing.T) {
	trustedHome(t)
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\n"), 0o600)
	file := filepath.Join(dir, "forwards.yaml")
	os.WriteFile(file, []byte("kubeconfig: ./kubeconfig\n"+forwardsFile(map[string]int{"a": 9001})), 0o644)

	var starts []string
	h := runAt(t, file, 0)
	h.mu.Lock()
	h.onStart = func(s config.Forward) { starts = append(starts, s.Name) }
	h.mu.Unlock()
	h.waitFor("the approval asked for", func() bool { return strings.Contains(h.log.String(), "kforward allow -f "+file) })
	if !strings.Contains(h.log.String(), "names kubeconfig "+kc+" (sha256 ") {
		t.Fatalf("the log does not say which kubeconfig:\n%s", h.log.String())
	}
	h.mu.Lock()
	n := len(starts) + len(h.started)
	h.mu.Unlock()
	if n > 0 {
		t.Fatal("a forward on an unapproved kubeconfig was started")
	}

	ask := allow(t, file)
	if ask.Kubeconfig == nil || ask.Kubeconfig.Path != kc || len(ask.Kubeconfig.SHA256) != 64 {
		t.Fatalf("kforward allow approved %+v, want %s by its hash", ask, kc)
	}
	h.waitFor("the forward started once approved", func() bool { return h.current()["a"] != nil })

	// An edit to the forwards file that leaves the kubeconfig as it was
	// needs no new approval.
	a := h.current()["a"]
	h.write("kubeconfig: ./kubeconfig\n" + forwardsFile(map[string]int{"a": 9001, "b": 9002}))
	h.waitFor("b started", func() bool { return h.current()["b"] != nil })
	if h.current()["a"] != a {
		t.Fatal("an unrelated edit restarted the approved forward")
	}

	// The kubeconfig's content changed (a pull): its forwards stop and wait
	// for approval again.
	os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\n# edited\n"), 0o600)
	h.waitFor("the approval asked for again", func() bool {
		return strings.Contains(h.log.String(), "changed since you approved it") && len(h.current()) == 0
	})
	allow(t, file)
	h.waitFor("both started again once approved", func() bool { return len(h.current()) == 2 })

	// The user's own kubeconfig named by the file needs nothing.
	t.Setenv("KUBECONFIG", kc)
	os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\n# edited again\n"), 0o600)
	tr := newTrust(file)
	if err := tr.check(config.Forward{Kubeconfig: kc, Addresses: []string{"127.0.0.1"}}); err != nil {
		t.Fatalf("the user's own kubeconfig needs approval: %v", err)
	}
	t.Setenv("KUBECONFIG", filepath.Join(dir, "other"))
	err := tr.check(config.Forward{Kubeconfig: kc, Addresses: []string{"127.0.0.1"}})
	if err == nil || !strings.Contains(err.Error(), "changed since you approved it") {
		t.Fatalf("an edited kubeconfig: %v, want approval asked for again", err)
	}
}

func statusOf(h *harness, name string) (s struct{ State, LastError string }) {
	for _, st := range h.r.Statuses() {
		if st.Name == name {
			return struct{ State, LastError string }{string(st.State), st.LastError}
		}
	}
	return s
}

// A forwards file in a directory this user listed in trustedDirs (by hand,
// as direnv's whitelist) is trusted as their own: its kubeconfig and
// addresses need no approval.
func TestTrustedDirNeedsNoApproval(t *testing.T) {
	trustedHome(t)
	dir := t.TempDir()
	store, err := ApprovalsFile()
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(store), 0o700)
	os.WriteFile(store, []byte(`{"trustedDirs": [`+strconvQuote(dir)+`]}`), 0o600)
	os.WriteFile(filepath.Join(dir, "kubeconfig"), []byte("apiVersion: v1\nkind: Config\n"), 0o600)
	file := filepath.Join(dir, "forwards.yaml")
	os.WriteFile(file, []byte("kubeconfig: ./kubeconfig\n"+forwardsFile(map[string]int{"a": 9001}, "  - {name: wide, pod: w, address: 0.0.0.0, ports: [9009]}\n")), 0o644)
	h := runAt(t, file, 0)
	h.waitFor("both started", func() bool { return len(h.current()) == 2 })
	if strings.Contains(h.log.String(), "approval") {
		t.Fatalf("approval asked for in a trusted directory:\n%s", h.log.String())
	}
	if within(file, dir+"-other") || !within(file, dir) || within("/a/b", "a") {
		t.Error("within is wrong")
	}
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }
