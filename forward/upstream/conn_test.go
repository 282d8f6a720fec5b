package upstream

import (
	"errors"
	"fmt"
	"io"
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

// Close parts from a healthy server without a reset: it ends what it
// sends, then reads what the server still sends until the server closes.
// The server here answers the end of the session as the API server does
// (TLS's close_notify, a ping's echo in flight: bytes after the client's
// end), twice, some time apart. Had the client closed its socket at once,
// the first bytes would be answered with a reset and the second write
// would fail; the API server logs that as an error for every tunnel.
func TestCloseWithoutReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer sc.Close()
		if _, err := io.Copy(io.Discard, sc); err != nil { // until the client's end
			served <- fmt.Errorf("read: %w", err)
			return
		}
		ping := []byte{0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2} // a server's PING
		for i := range 2 {
			if i > 0 {
				time.Sleep(50 * time.Millisecond)
			}
			if _, err := sc.Write(ping); err != nil {
				served <- fmt.Errorf("write %d after the client's end: %w", i+1, err)
				return
			}
		}
		served <- nil
	}()
	tcp, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(tcp, tcp, nil, config.SPDY, Options{})
	done := errors.New("done")
	c.Close(done)
	if err := <-served; err != nil {
		t.Fatalf("the server: %v", err)
	}
	if c.Err() != done {
		t.Fatalf("closed for %v; want Close's reason", c.Err())
	}
}

// A server that left the last ping unanswered gets no goodbye: Close does
// not wait goodbyeTimeout for an answer that would not come, which would
// delay the redial of a dead tunnel by as much.
func TestCloseAfterUnansweredPing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	over := make(chan struct{})
	defer close(over)
	go func() { // a blackhole: reads everything, answers nothing, closes only when the test is over
		sc, err := ln.Accept()
		if err != nil {
			return
		}
		defer sc.Close()
		io.Copy(io.Discard, sc)
		<-over
	}()
	tcp, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(tcp, tcp, nil, config.SPDY, Options{})
	if _, err := c.Ping(t.Context(), 50*time.Millisecond); err == nil {
		t.Fatal("a ping was answered by a server that answers nothing")
	}
	begin := time.Now()
	c.Close(errors.New("done"))
	if took := time.Since(begin); took >= goodbyeTimeout {
		t.Fatalf("Close took %s: it waited for a silent server", took)
	}
}
