package upstream

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/moby/spdystream"

	"github.com/kforward/kforward/config"
)

// session runs a client session against spdystream's server over a pipe;
// the server hands every new stream to handle.
func session(t *testing.T, handle spdystream.StreamHandler) *Conn {
	t.Helper()
	client, server := net.Pipe()
	srv, err := spdystream.NewConnection(server, true)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(handle)
	c := newConn(client, client, nil, config.SPDY, Options{})
	t.Cleanup(func() {
		c.Close(errors.New("test over"))
		server.Close()
	})
	return c
}

// A server that answers pings but never replies to a stream fails that
// connection alone, in bounded time; the tunnel lives on.
func TestStreamNeverReplied(t *testing.T) {
	c := session(t, func(*spdystream.Stream) {}) // no SYN_REPLY, ever
	if _, err := c.Ping(t.Context(), time.Second); err != nil {
		t.Fatalf("ping: %v", err)
	}
	local, peer := net.Pipe()
	defer peer.Close()
	begin := time.Now()
	err := c.Forward(local, 80, 50*time.Millisecond, &Bytes{})
	if err == nil || errors.Is(err, ErrNoStream) {
		t.Fatalf("Forward: %v; want a failure of this connection alone", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("gave up after %s", took)
	}
	if c.Err() != nil {
		t.Fatalf("the tunnel died: %v", c.Err())
	}
	if n := c.Streams(); n != 0 {
		t.Fatalf("%d streams left", n)
	}
}

// A server that reads nothing at all is a dead tunnel: the stream and the
// ping both go unanswered, the tunnel is closed, and the connection may
// try the next one (ErrNoStream).
func TestDeadTunnelNoStream(t *testing.T) {
	client, server := net.Pipe() // nobody reads the server's end
	defer server.Close()
	c := newConn(client, client, nil, config.SPDY, Options{})
	defer c.Close(errors.New("test over"))
	local, peer := net.Pipe()
	defer peer.Close()
	err := c.Forward(local, 80, 50*time.Millisecond, &Bytes{})
	if !errors.Is(err, ErrNoStream) {
		t.Fatalf("Forward: %v; want ErrNoStream", err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the dead tunnel was not closed")
	}
}
