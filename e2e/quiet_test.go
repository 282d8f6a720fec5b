package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/e2e/cluster"
	"github.com/kforward/kforward/forward"
)

// Tunnels end without the API server logging an error: one retired by a
// rollout, and one closed when its forward stops, on both transports. (A
// WebSocket closed without a close frame is logged by the API server as
// "Error proxying data from client to backend ... close 1006".) Not
// parallel: the API server's log is shared by every test that runs at the
// same time.
func TestTunnelsEndQuietly(t *testing.T) {
	c := needCluster(t)
	ns := namespace(t, c)
	createDeployment(t, c.Client, ns, "web", 1)
	old := waitReadyPods(t, c.Client, ns, "app=web", 1)[0].Name
	logFile := c.LogFile(cluster.APIServer)
	from := fileSize(t, logFile)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fs []*forward.Forward
	done := make(chan struct{}, 2)
	for _, tr := range []config.Transport{config.WebSocket, config.SPDY} {
		s := spec("quiet-"+string(tr), ns, config.Target{Kind: config.Deployment, Name: "web"}, ":http")
		s.Transport = tr
		f := forward.New(s, forward.Env{Config: c.Config, Client: c.Client, Namespace: ns})
		go func() {
			defer func() { done <- struct{}{} }()
			f.Run(ctx)
		}()
		fs = append(fs, f)
	}
	for _, f := range fs {
		addr := waitActive(t, f).Addresses[0]
		for range 3 {
			who(t, addr)
		}
	}

	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	if _, err := c.Client.AppsV1().Deployments(ns).Patch(t.Context(), "web", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		waitFor(t, 30*time.Second, "the forward on the new pod", func() bool {
			st := f.Status()
			return st.State == forward.Active && st.Pod != "" && st.Pod != old
		})
		who(t, f.Status().Addresses[0])
	}
	cancel()
	for range fs {
		<-done
	}
	time.Sleep(time.Second) // the API server logs a broken tunnel at once

	var noisy []string
	for _, line := range linesFrom(t, logFile, from) {
		if strings.Contains(line, "Error proxying data") {
			noisy = append(noisy, line)
		}
	}
	if len(noisy) > 0 {
		t.Fatalf("the API server logged %d errors for tunnels that kforward ended, first:\n%s", len(noisy), noisy[0])
	}
	t.Logf("2 transports: tunnels retired by a rollout and closed on stop; the API server's log has no error for them")
}
