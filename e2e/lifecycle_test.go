package e2e

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/e2e/cluster"
	"github.com/kforward/kforward/forward"
)

// TestStopWithHalfOpenUpstream: with the API server frozen mid-connection,
// stopping the forward still returns promptly and leaves no goroutine.
func TestStopWithHalfOpenUpstream(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "p")
	before := goleak.IgnoreCurrent()

	s := spec("stop", ns, config.Target{Kind: config.Pod, Name: "p"}, ":echo")
	s.Health = config.Health{Interval: time.Hour, Timeout: time.Hour} // nothing notices the freeze
	f := forward.New(s, forward.Env{Config: c.Config, Client: c.Client, Namespace: ns})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	addr := waitActive(t, f).Addresses[0]
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "x")
	io.ReadFull(conn, make([]byte, 1))

	if err := c.Pause(cluster.APIServer); err != nil {
		t.Fatal(err)
	}
	defer c.Resume(cluster.APIServer)
	go io.Copy(conn, zeroReader{}) // keep writing into the frozen tunnel
	time.Sleep(300 * time.Millisecond)

	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return within 3s of Stop with a frozen upstream")
	}
	t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))
	conn.Close()
	c.Resume(cluster.APIServer)
	goleak.VerifyNone(t, append(notOurs, before)...)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestConnectTimeout: while no pod is ready, a connection waits up to
// connectTimeout; one that a pod becomes ready for in time succeeds, one
// that nothing becomes ready for is closed.
func TestConnectTimeout(t *testing.T) {
	c := needCluster(t)
	ns := namespace(t, c)
	s := spec("wait", ns, config.Target{Kind: config.Pod, Name: "late"}, ":echo")
	s.ConnectTimeout = 1500 * time.Millisecond
	s.Ports = []config.Port{{Local: 0, Remote: 7000}}
	f := startForward(t, c, s)
	var addr string
	waitFor(t, 10*time.Second, "listeners bound", func() bool {
		st := f.Status()
		if len(st.Addresses) == 1 {
			addr = st.Addresses[0]
		}
		return addr != "" && st.State == forward.WaitingForPod
	})

	start := time.Now()
	_, err := echoOnce(addr, "too early")
	if waited := time.Since(start); err == nil || waited < time.Second || waited > 5*time.Second {
		t.Errorf("with no pod: err %v after %s; want the connection closed after about 1.5s", err, waited)
	}

	got := make(chan error, 1)
	go func() {
		msg, err := echoOnce(addr, "in time")
		if err == nil && msg != "in time" {
			err = io.ErrUnexpectedEOF
		}
		got <- err
	}()
	time.Sleep(200 * time.Millisecond)
	createPod(t, c.Client, ns, "late")
	if err := <-got; err != nil {
		t.Errorf("connection made before the pod was ready: %v", err)
	}
}
