package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/e2e/netem"
	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/internal/testutil"
)

// TestSlowUplinkUpload: kforward reaches the API server over a home
// uplink, 512 KiB/s with 20ms each way (e2e/netem; the kubeconfig points at
// it). A 20 MiB upload through a forward arrives intact with no reconnect,
// though the health check's pings wait behind it (before, the tunnel was
// taken for dead after 13-14.5 MB and every connection on it cut), and
// new connections are answered meanwhile, their streams going ahead of the
// upload. Then the link goes dark, and the dead tunnel is still found
// within the health interval and timeout.
func TestSlowUplinkUpload(t *testing.T) {
	t.Parallel()
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "p")
	link, err := netem.Start(apiServerAddr(t, c), netem.Link{Delay: 20 * time.Millisecond, Up: 512 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(link.Close)
	cfg, err := clientcmd.BuildConfigFromFlags("", proxiedKubeconfig(t, c.Kubeconfig, link.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := spec("up", ns, config.Target{Kind: config.Pod, Name: "p"}, ":http")
	s.Health = config.Health{Interval: time.Second, Timeout: time.Second}
	log := &testutil.Buffer{}
	f := forward.New(s, forward.Env{Config: cfg, Client: client, Namespace: ns, Log: slog.New(slog.NewTextHandler(log, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		link.Close() // a dark link would hold the goodbye
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("forward did not stop within 5s")
		}
	})
	addr := waitActive(t, f).Addresses[0]

	const size = 20 << 20
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i*7 + i>>13)
	}
	want := fmt.Sprintf("%d %x", size, sha256.Sum256(body))
	uploaded := make(chan error, 1)
	var answer string
	go func() {
		hc := &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := hc.Post("http://"+addr+"/sum", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			uploaded <- err
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		answer = strings.TrimSpace(string(b))
		uploaded <- err
	}()
	begin := time.Now()
	var worst time.Duration
	answered := 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for finished := false; !finished; {
		select {
		case err := <-uploaded:
			if err != nil {
				t.Fatalf("upload: %v\nstatus %+v\nlog:\n%s", err, f.Status(), log)
			}
			finished = true
		case <-tick.C:
			start := time.Now()
			got, err := get(addr, "/")
			if err != nil || strings.TrimSpace(got) != ns+"/p" {
				t.Fatalf("a new connection during the upload: %q, %v\nstatus %+v\nlog:\n%s", got, err, f.Status(), log)
			}
			worst = max(worst, time.Since(start))
			answered++
		}
	}
	if answer != want {
		t.Fatalf("the pod got %q, want %q", answer, want)
	}
	st := f.Status()
	t.Logf("%d MiB uploaded intact in %s at 512 KiB/s; %d new connections answered meanwhile, slowest %s; %d health checks",
		size>>20, time.Since(begin).Round(time.Second), answered, worst.Round(time.Millisecond), st.HealthChecks)
	if st.Reconnects != 0 {
		t.Fatalf("%d reconnects during the upload (%s); want none: a busy link is not a dead one\nlog:\n%s", st.Reconnects, st.LastError, log)
	}
	if answered == 0 {
		t.Fatal("no new connection was tried during the upload")
	}

	faultAt := time.Now()
	link.Blackhole()
	limit := s.Health.Interval + s.Health.Timeout + 2*time.Second
	waitFor(t, 3*limit, "the dark link found dead", func() bool { return f.Status().State != forward.Active })
	if took := time.Since(faultAt); took > limit {
		t.Errorf("dead link found after %s, want within interval+timeout (+2s slack) = %s", took, limit)
	}
	t.Logf("dark link found dead after %s: %s", time.Since(faultAt).Round(time.Millisecond), f.Status().LastError)
}
