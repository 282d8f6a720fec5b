package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kforward/kforward/forward"
)

// TestKubeconfigServerChangeRestartsItsForwards: when the kubeconfig
// changes what one context connects to (as kind or minikube do when they
// make a cluster again: here the server's port, now a proxy's), the
// forwards on that context restart on a new client that uses the new
// server, and the forward on the other context is not touched.
func TestKubeconfigServerChangeRestartsItsForwards(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "web")
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cur := cfg.Contexts[cfg.CurrentContext]
	two := *cfg.Clusters[cur.Cluster]
	cfg.Clusters["two"] = &two
	cfg.Contexts["one"] = &clientcmdapi.Context{Cluster: cur.Cluster, AuthInfo: cur.AuthInfo}
	cfg.Contexts["two"] = &clientcmdapi.Context{Cluster: "two", AuthInfo: cur.AuthInfo}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	write := func() {
		// As kind does: a new file renamed over the old one.
		tmp := filepath.Join(dir, "kubeconfig.new")
		if err := clientcmd.WriteToFile(*cfg, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, kubeconfig); err != nil {
			t.Fatal(err)
		}
	}
	write()
	rf := runFile(t, fmt.Sprintf(`kubeconfig: %s
defaults:
  namespace: %s
  reconnect: {initial: 50ms, max: 1s}
  health: {interval: 1s, timeout: 1s}
forwards:
  - name: a
    pod: web
    context: one
    ports: [":http"]
  - name: b
    pod: web
    context: two
    ports: [":http"]
`, kubeconfig, ns))
	rf.waitState("a", forward.Active)
	b := rf.waitState("b", forward.Active)

	proxy := newFaultProxy(t, apiServerAddr(t, c))
	cfg.Clusters[cur.Cluster].Server = "https://" + proxy.Addr()
	write()
	waitFor(t, 30*time.Second, "a restarted", func() bool {
		return strings.Contains(rf.log.String(), `msg="kubeconfig changed; restarting the forwards on its context" kubeconfig=`+kubeconfig+` context=one restarted=[a]`)
	})
	a := rf.waitState("a", forward.Active)
	if got := who(t, a.Addresses[0]); got != ns+"/web" {
		t.Fatalf("a answered by %q", got)
	}
	proxy.mu.Lock()
	through := len(proxy.conns)
	proxy.mu.Unlock()
	if through == 0 {
		t.Fatal("a's new client does not use the new server: no connection through it")
	}
	if now := rf.status("b"); now.State != forward.Active || now.Reconnects != b.Reconnects || now.Addresses[0] != b.Addresses[0] ||
		strings.Contains(rf.log.String(), "restarted=[b]") {
		t.Fatalf("b, on the unchanged context, was touched: %s, %d reconnects, on %v (was %v)", now.State, now.Reconnects, now.Addresses, b.Addresses)
	}

	// Back to the server itself, so that no tunnel is on the proxy when it
	// closes (the API server would log the abrupt end as an error).
	cfg.Clusters[cur.Cluster].Server = two.Server
	write()
	waitFor(t, 30*time.Second, "a restarted again", func() bool { return strings.Count(rf.log.String(), "context=one restarted=[a]") == 2 })
	rf.waitState("a", forward.Active)
	waitFor(t, 30*time.Second, "no connection left through the proxy", func() bool {
		proxy.mu.Lock()
		defer proxy.mu.Unlock()
		return len(proxy.conns) == 0
	})
}
