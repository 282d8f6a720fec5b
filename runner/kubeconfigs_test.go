package runner

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// ownKubeconfig writes the user's own kubeconfig ($KUBECONFIG) with two
// contexts, one and two, each on its own cluster.
func writeOwnKubeconfig(t *testing.T, path, serverOne, caOne, tokenTwo string) {
	t.Helper()
	content := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- {name: c1, cluster: {server: %q, certificate-authority-data: %s}}
- {name: c2, cluster: {server: "https://127.0.0.1:6002"}}
users:
- {name: u1, user: {token: one}}
- {name: u2, user: {token: %s}}
contexts:
- {name: one, context: {cluster: c1, user: u1}}
- {name: two, context: {cluster: c2, user: u2}}
current-context: one
`, serverOne, caOne, tokenTwo)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// 7. When a kubeconfig changes what a context connects to (a cluster made
// again: a new CA and server port), the forwards on that context restart,
// with a new client; those on other contexts are untouched, and a rotated
// inline token alone restarts nothing (it is read again by the client).
func TestKubeconfigChangeRestartsOnlyItsContext(t *testing.T) {
	trustedHome(t)
	own := os.Getenv("KUBECONFIG")
	writeOwnKubeconfig(t, own, "https://127.0.0.1:6001", "Q0EtMQ==", "two")
	h := run(t, `forwards:
  - {name: a, pod: a, context: one, ports: ["9001:80"]}
  - {name: a2, pod: a2, ports: ["9003:80"]}
  - {name: b, pod: b, context: two, ports: ["9002:80"]}
`, 0)
	first := h.current()
	for _, n := range []string{"a", "a2", "b"} {
		if first[n] == nil {
			t.Fatalf("%s not started", n)
		}
	}

	// Only b's token: nothing restarts.
	writeOwnKubeconfig(t, own, "https://127.0.0.1:6001", "Q0EtMQ==", "two-rotated")
	time.Sleep(3 * kubeconfigCheck)
	if h.startCount() != 3 {
		t.Fatalf("a new inline token restarted forwards:\n%s", h.log.String())
	}

	// kind made cluster one again: a new CA and port.
	writeOwnKubeconfig(t, own, "https://127.0.0.1:7001", "Q0EtMg==", "two-rotated")
	h.waitFor("a restarted", func() bool {
		now := h.current()
		return now["a"] != nil && now["a"] != first["a"] && now["a2"] != nil && now["a2"] != first["a2"]
	})
	if !first["a"].isStopped() || !first["a2"].isStopped() {
		t.Fatal("the forwards on the old client were not stopped")
	}
	if h.current()["b"] != first["b"] || first["b"].isStopped() {
		t.Fatal("the forward on the unchanged context was restarted")
	}
	if !strings.Contains(h.log.String(), `msg="kubeconfig changed; restarting the forwards on its context" kubeconfig=yours context=one restarted=[a]`) {
		t.Errorf("the log does not say what restarted:\n%s", h.log.String())
	}
}
