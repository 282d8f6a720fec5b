package upstream

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"

	"io"
	"net"
	"net/http"
	"os"

	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/spdystream"
	"github.com/moby/spdystream/spdy"
	corev1 "k8s.io/api/core/v1"

	"github.com/kforward/kforward/config"
)

// Tests of what issue 20 asked of the data path: nothing lost for a slow
// reader, control frames ahead of data, a busy link alive, the server's
// demands bounded, GOAWAY honoured. The server side is spdystream, the
// library the kubelet's port-forward server runs, over a pipe or
// loopback TCP.

// countingConn counts what its reader has taken, and reads at most rate
// bytes a second when rate is set.
type countingConn struct {
	net.Conn
	rate int
	n    atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	if c.rate > 0 {
		p = p[:min(len(p), c.rate/50)]
		time.Sleep(20 * time.Millisecond)
	}
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// pattern is byte i of a download: i%251.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// portForwardServer answers a pair as the kubelet does: it replies to
// both streams, ends the error stream empty, and hands the data stream
// to data.
func portForwardServer(data func(*spdystream.Stream)) spdystream.StreamHandler {
	return func(s *spdystream.Stream) {
		s.SendReply(http.Header{}, false)
		if s.Headers().Get(corev1.StreamType) == corev1.StreamTypeError {
			s.Close()
			return
		}
		go data(s)
	}
}

// serve runs spdystream's server on conn.
func serve(t *testing.T, conn net.Conn, handle spdystream.StreamHandler) {
	t.Helper()
	srv, err := spdystream.NewConnection(conn, true)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(handle)
	t.Cleanup(func() { conn.Close() })
}

// A client far slower than the pod gets every byte in order, though the
// forward keeps only 64 KiB per connection in memory: the rest waits in an
// overflow file, which no directory lists (it was removed when made), and
// whose space is all given back once the client has read it.
func TestSlowReaderGetsEveryByte(t *testing.T) {
	const n = 8 << 20
	want := pattern(n)
	client, server := net.Pipe()
	serve(t, server, portForwardServer(func(s *spdystream.Stream) {
		for b := want; len(b) > 0; b = b[min(len(b), 32<<10):] { // as the kubelet copies
			s.Write(b[:min(len(b), 32<<10)])
		}
		s.Close()
	}))
	dir := t.TempDir()
	overflow := NewOverflow(dir, 1<<30)
	c := newConn(client, client, nil, config.SPDY, Options{ClientBuffer: 64 << 10, Overflow: overflow})
	defer c.Close(errors.New("test over"))

	local, app := net.Pipe() // a pipe holds nothing: every byte the app has not read is ours to keep
	done := make(chan error, 1)
	go func() { done <- c.Forward(local, 80, 5*time.Second, &Bytes{}) }()

	r := bufio.NewReaderSize(&countingConn{Conn: app, rate: 4 << 20}, 64<<10)
	got := make([]byte, 0, n)
	buf := make([]byte, 32<<10)
	var most int64
	for len(got) < n {
		k, err := r.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil {
			t.Fatalf("after %d of %d bytes: %v (Forward: %v)", len(got), n, err, <-done)
		}
		most = max(most, overflow.Used())
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Fatalf("the overflow directory lists %d files; want none (removed when made)", len(entries))
		}
	}
	app.Close()
	if err := <-done; err != nil {
		t.Fatalf("Forward: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the bytes read are not the pod's")
	}
	t.Logf("%d bytes read intact; up to %d on disk at once", n, most)
	if most == 0 {
		t.Error("nothing waited on disk: the test did not outrun memory")
	}
	if used := overflow.Used(); used != 0 {
		t.Errorf("%d bytes of disk still counted after the connection ended", used)
	}
}

// A PING queued behind uploads goes out ahead of them: the server reads
// it after at most one write's worth of the uploads (maxSend, or one
// upload frame), not after everything queued before it. (A pipe holds no
// bytes, as a kernel with TCP_NOTSENT_LOWAT holds few.)
func TestControlFramesOvertakeData(t *testing.T) {
	client, server := net.Pipe()
	slow := &countingConn{Conn: server, rate: 2 << 20} // the uplink: 2 MiB/s
	serve(t, slow, portForwardServer(func(s *spdystream.Stream) { io.Copy(io.Discard, s) }))
	c := newConn(client, client, nil, config.SPDY, Options{})
	defer c.Close(errors.New("test over"))

	for range 4 { // uploads that keep the writer's queue full
		local, app := net.Pipe()
		defer app.Close()
		go c.Forward(local, 80, 5*time.Second, &Bytes{})
		go func() {
			chunk := make([]byte, 32<<10)
			for {
				if _, err := app.Write(chunk); err != nil {
					return
				}
			}
		}()
	}
	queued := 0
	for queued < maxPending/2 {
		time.Sleep(5 * time.Millisecond)
		c.w.mu.Lock()
		queued = len(c.w.pending)
		c.w.mu.Unlock()
	}
	before := slow.n.Load()
	if _, err := c.Ping(t.Context(), 30*time.Second); err != nil {
		t.Fatalf("ping behind uploads: %v", err)
	}
	behind := slow.n.Load() - before
	t.Logf("the server read %d bytes of the uploads between the ping and its echo; %d were queued", behind, queued)
	if limit := int64(maxSend + maxUploadChunk + 64<<10); behind > limit {
		t.Errorf("the ping waited behind %d bytes of data; want at most %d", behind, limit)
	}
}

// blackhole accepts TCP connections and neither reads nor writes.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return ln.Addr().String()
}

// A ping that gets no echo in time on a tunnel that keeps moving data (an
// uplink full of uploads: the PING waits behind them in the network) is
// ErrBusy, not a dead tunnel; one on a tunnel that moves nothing but the
// ping is an error that is not ErrBusy. Over TCP, so that on Linux the
// kernel's counts decide.
func TestPingOnBusyLink(t *testing.T) {
	t.Run("busy", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			sc, err := ln.Accept()
			if err != nil {
				return
			}
			sc.(*net.TCPConn).SetReadBuffer(16 << 10) // a window that opens often, as a slow link's does
			serve(t, &countingConn{Conn: sc, rate: 128 << 10}, portForwardServer(func(s *spdystream.Stream) { io.Copy(io.Discard, s) }))
		}()
		tcp, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c := newConn(tcp, tcp, nil, config.SPDY, Options{})
		defer c.Close(errors.New("test over"))
		for range 2 {
			local, app := net.Pipe()
			defer app.Close()
			go c.Forward(local, 80, 5*time.Second, &Bytes{})
			go func() {
				chunk := make([]byte, 64<<10)
				for {
					if _, err := app.Write(chunk); err != nil {
						return
					}
				}
			}()
		}
		for c.w.sent.Load() < 512<<10 { // past what the sockets hold at once
			time.Sleep(5 * time.Millisecond)
		}
		busy := 0
		for range 5 {
			// Behind the kernel's share (notSentLowat) and the server's
			// window, the ping waits over a second at 128 KiB/s.
			_, err := c.Ping(t.Context(), time.Second)
			switch {
			case errors.Is(err, ErrBusy):
				busy++
			case err != nil:
				t.Fatalf("ping on a busy link: %v; want an echo or ErrBusy", err)
			}
		}
		t.Logf("%d of 5 pings busy, the others answered", busy)
		if busy == 0 {
			t.Error("every ping was answered in time: the link was not busy enough to tell")
		}
		if c.Err() != nil || c.unanswered.Load() {
			t.Fatalf("a busy tunnel counted dead: %v", c.Err())
		}
	})
	t.Run("swallowed", func(t *testing.T) {
		// A peer that takes bytes into its kernel and never reads them (a
		// frozen API server, a proxy whose network is gone) acknowledges
		// small writes: that proves nothing about the far end.
		tcp, err := net.Dial("tcp", blackhole(t))
		if err != nil {
			t.Fatal(err)
		}
		c := newConn(tcp, tcp, nil, config.SPDY, Options{})
		defer c.Close(errors.New("test over"))
		stop := make(chan struct{})
		defer close(stop)
		go func() { // small writes, as a prober's echoes
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
					c.sendControl(func(e *encoder) { e.ping(1 << 30) })
				}
			}
		}()
		_, err = c.Ping(t.Context(), 300*time.Millisecond)
		if err == nil || errors.Is(err, ErrBusy) {
			t.Fatalf("ping on a link whose peer reads nothing: %v; want a failure", err)
		}
	})
	t.Run("silent", func(t *testing.T) {
		tcp, err := net.Dial("tcp", blackhole(t))
		if err != nil {
			t.Fatal(err)
		}
		c := newConn(tcp, tcp, nil, config.SPDY, Options{})
		defer c.Close(errors.New("test over"))
		_, err = c.Ping(t.Context(), 50*time.Millisecond)
		if err == nil || errors.Is(err, ErrBusy) {
			t.Fatalf("ping on a silent link: %v; want a failure", err)
		}
	})
}

// A server that sends PINGs and reads nothing kills the session once the
// echoes it is owed pass maxProvoked, rather than grow the queue without
// end.
func TestServerPingsBounded(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newConn(client, client, nil, config.SPDY, Options{})
	defer c.Close(errors.New("test over"))
	var ping [12]byte
	binary.BigEndian.PutUint32(ping[:], 0x80000000|spdy.Version<<16|uint32(spdy.TypePing))
	binary.BigEndian.PutUint32(ping[4:], 4)
	sent := 0
	server.SetWriteDeadline(time.Now().Add(30 * time.Second))
	for c.Err() == nil {
		binary.BigEndian.PutUint32(ping[8:], uint32(2*sent+2)) // a server's pings are even
		if _, err := server.Write(ping[:]); err != nil {
			break // the session is dead and reads no more
		}
		sent++
	}
	<-c.Done()
	t.Logf("died after %d pings: %v", sent, c.Err())
	if !errors.Is(c.Err(), errProvoked) {
		t.Fatalf("session ended with %v; want errProvoked", c.Err())
	}
	if most := 2*maxProvoked/len(ping) + 2; sent > most {
		t.Errorf("%d pings taken before the session died; want at most %d", sent, most)
	}
}

// A stream above the last one a GOAWAY says the server took is refused
// at once with ErrNoStream, so that its connection goes to another
// tunnel, and the tunnel lives on for the streams it carries.
func TestGoAwayRefusesLaterStreams(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newConn(client, client, nil, config.SPDY, Options{})
	defer c.Close(errors.New("test over"))
	go func() { // a server that takes nothing and says so
		framer, err := spdy.NewFramer(server, server)
		if err != nil {
			return
		}
		for {
			f, err := framer.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *spdy.SynStreamFrame:
				if f.CFHeader.Flags&spdy.ControlFlagFin == 0 { // the data stream: the pair is whole
					framer.WriteFrame(&spdy.GoAwayFrame{LastGoodStreamId: 0})
				}
			case *spdy.PingFrame:
				framer.WriteFrame(f)
			}
		}
	}()
	local, peer := net.Pipe()
	defer peer.Close()
	returned := make(chan error, 1)
	go func() { returned <- c.Forward(local, 80, time.Minute, &Bytes{}) }()
	select {
	case err := <-returned:
		if !errors.Is(err, ErrNoStream) || !errors.Is(err, ErrGoingAway) {
			t.Fatalf("Forward: %v; want ErrNoStream and ErrGoingAway", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the connection still waits for a stream the server said it did not take")
	}
	if c.Err() != nil {
		t.Fatalf("the tunnel died: %v", c.Err())
	}
	select {
	case <-c.GoingAway():
	default:
		t.Fatal("the tunnel still takes new streams after GOAWAY")
	}
	if n := c.Streams(); n != 0 {
		t.Fatalf("%d streams left", n)
	}
}

// A client that reads nothing at all is closed after the stall timeout
// with ErrClientStalled, and what it left is given back.
func TestStalledClientClosed(t *testing.T) {
	client, server := net.Pipe()
	serve(t, server, portForwardServer(func(s *spdystream.Stream) {
		s.Write(pattern(4 << 20))
		io.Copy(io.Discard, s)
	}))
	overflow := NewOverflow(t.TempDir(), 1<<30)
	c := newConn(client, client, nil, config.SPDY, Options{ClientBuffer: 64 << 10, StallTimeout: 300 * time.Millisecond, Overflow: overflow})
	defer c.Close(errors.New("test over"))
	local, app := net.Pipe() // the app never reads
	defer app.Close()
	err := c.Forward(local, 80, 5*time.Second, &Bytes{})
	if !errors.Is(err, ErrClientStalled) {
		t.Fatalf("Forward: %v; want ErrClientStalled", err)
	}
	if used := overflow.Used(); used != 0 {
		t.Errorf("%d bytes of disk still counted", used)
	}
	if c.Err() != nil {
		t.Fatalf("the tunnel died with its client: %v", c.Err())
	}
	t.Log(err)
}
