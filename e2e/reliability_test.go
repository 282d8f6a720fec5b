package e2e

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/forward"
)

// TestClientResetAfterHalfClose: a client that half-closes, then resets,
// is released at once though the pod stays silent. kwok does not pass the
// half-close on to the pod, so an echo pod has nothing more to say after
// its echo: without watching the client's socket, the connection, its
// stream pair and the forward's active count would stay until the pod
// went.
func TestClientResetAfterHalfClose(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "p")
	f := startForward(t, c, spec("reset", ns, config.Target{Kind: config.Pod, Name: "p"}, ":echo"))
	addr := waitActive(t, f).Addresses[0]

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tcp := conn.(*net.TCPConn)
	defer tcp.Close()
	tcp.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(tcp, "hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(tcp, make([]byte, 5)); err != nil {
		t.Fatalf("echo: %v", err)
	}
	tcp.CloseWrite()
	time.Sleep(100 * time.Millisecond) // the half-close reaches the forward first
	if n := f.Status().Active; n != 1 {
		t.Fatalf("%d connections active after the half-close, want 1", n)
	}
	tcp.SetLinger(0)
	tcp.Close() // a reset
	reset := time.Now()
	waitFor(t, 5*time.Second, "the reset connection released", func() bool { return f.Status().Active == 0 })
	t.Logf("released %s after the reset", time.Since(reset).Round(time.Millisecond))
	if st := f.Status(); st.State != forward.Active || st.Reconnects != 0 {
		t.Errorf("forward %s with %d reconnects after a client's reset", st.State, st.Reconnects)
	}
}
