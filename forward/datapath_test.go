package forward

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/internal/testutil"
)

// Tests of the data path (package upstream) through a forward, against the
// in-process kubelet. e2e/ repeats the stalled client, the quiet health
// check and the 1,000 connections against a real API server and kwok.

var transports = []config.Transport{config.WebSocket, config.SPDY}

// download asks a "bytes" backend for n bytes over c.
func download(c net.Conn, n int64) error {
	_, err := fmt.Fprintf(c, "%d\n", n)
	return err
}

// checkPattern reads n bytes of writePattern's pattern from r.
func checkPattern(r io.Reader, n int64) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for i := int64(0); i < n; i++ {
		b, err := br.ReadByte()
		if err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", i, n, err)
		}
		if b != byte(i%251) {
			return fmt.Errorf("byte %d is %d, want %d", i, b, byte(i%251))
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return fmt.Errorf("more than %d bytes, or no end: %v", n, err)
	}
	return nil
}

// 1. A client that stops reading costs only its own connection: every
// request of another client on the same forward is answered promptly, new
// connections and one opened before the stall alike, the tunnel is not
// redialed, and the stalled connection is closed once it has read nothing
// for stallTimeout, with a warning naming the forward and the client.
// What it leaves unread waits in memory, then on disk (diskBuffer).
func TestStalledClientIsolated(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			k := newFakeKubelet(t)
			pods := newFakePods(k.addPod("a", t0, map[string]int32{"http": 80, "bytes": 7100, "echo": 7000}))
			s := spec(":http", ":bytes", ":echo")
			s.Transport = tr
			s.Health = config.Health{Interval: 2 * time.Second, Timeout: time.Second}
			s.ClientBuffer = 4 << 20
			s.DiskBuffer = config.DefaultDiskBuffer
			s.StallTimeout = 3 * time.Second
			log := &testLog{}
			f, _ := start(t, s, k.env(pods, log))
			st := waitState(t, f, Active)
			web, bytesAddr, echoAddr := st.Addresses[0], st.Addresses[1], st.Addresses[2]

			neighbour := connect(t, echoAddr) // open before the stall, used through it
			if err := echo(neighbour, "before"); err != nil {
				t.Fatal(err)
			}
			stalled := connect(t, bytesAddr)
			if err := download(stalled, 256<<20); err != nil {
				t.Fatal(err)
			}
			client := stalled.LocalAddr().String()

			const rounds = 20 // every 250ms for 5s
			var worst time.Duration
			var onDisk int64
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for i := range rounds {
				<-tick.C
				begin := time.Now()
				if pod := mustGet(t, web); pod != "a" {
					t.Fatalf("request %d answered by %q", i, pod)
				}
				if err := echo(neighbour, fmt.Sprintf("round %d", i)); err != nil {
					t.Fatalf("round %d on the connection opened before the stall: %v", i, err)
				}
				worst = max(worst, time.Since(begin))
				onDisk = max(onDisk, f.Status().OnDisk)
			}
			t.Logf("%d of %d requests and echoes answered beside a stalled client; slowest %s; up to %d bytes on disk", rounds, rounds, worst, onDisk)
			if onDisk == 0 {
				t.Error("the status never showed the stalled client's data on disk")
			}
			if worst > time.Second {
				t.Errorf("slowest request took %s, want under 1s", worst)
			}
			if st := f.Status(); st.Reconnects != 0 || st.State != Active {
				t.Errorf("forward %s after %d reconnects (%s), want the tunnel kept", st.State, st.Reconnects, st.LastError)
			}
			waitFor(t, 10*time.Second, "the stalled connection's warning", func() bool {
				return strings.Contains(log.String(), "the client is not reading")
			})
			line := lineWith(log.String(), "the client is not reading")
			for _, want := range []string{"forward=web", "client=" + client, "nothing read for 3s"} {
				if !strings.Contains(line, want) {
					t.Errorf("warning %q does not say %q", line, want)
				}
			}
			waitFor(t, 5*time.Second, "the stalled connection released", func() bool { return f.Status().Active == 1 })
			waitFor(t, 5*time.Second, "its disk given back", func() bool { return f.Status().OnDisk == 0 })
		})
	}
}

// 1. A client that falls behind while the forward may keep nothing on
// disk (diskBuffer 0) still gets every byte: the tunnel's reading waits
// for it, as kubectl's does, and new connections go to a new tunnel, so
// they are answered meanwhile; the held tunnel is not taken for dead.
func TestClientBehindHoldsTunnel(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			k := newFakeKubelet(t)
			pods := newFakePods(k.addPod("a", t0, map[string]int32{"http": 80, "bytes": 7100}))
			s := spec(":http", ":bytes")
			s.Transport = tr
			s.Health = config.Health{Interval: 300 * time.Millisecond, Timeout: 300 * time.Millisecond}
			s.ClientBuffer = 64 << 10
			s.DiskBuffer = 0
			s.StallTimeout = time.Minute
			log := &testLog{}
			f, _ := start(t, s, k.env(pods, log))
			st := waitState(t, f, Active)
			web, bytesAddr := st.Addresses[0], st.Addresses[1]

			c := connect(t, bytesAddr)
			c.(*net.TCPConn).SetReadBuffer(32 << 10)
			const n, rate = 16 << 20, 2 << 20 // about 8s, well past what the sockets hold
			if err := download(c, n); err != nil {
				t.Fatal(err)
			}
			read := make(chan error, 1)
			go func() {
				c.SetDeadline(time.Now().Add(time.Minute))
				read <- checkPattern(&testutil.PacedReader{R: c, Rate: rate}, n)
			}()
			answered := 0
			for done := false; !done; {
				select {
				case err := <-read:
					if err != nil {
						t.Fatalf("the slow reader: %v", err)
					}
					done = true
				case <-time.After(250 * time.Millisecond):
					if pod := mustGet(t, web); pod != "a" {
						t.Fatalf("answered by %q", pod)
					}
					answered++
				}
			}
			t.Logf("%d bytes read intact at %d KiB/s; %d requests answered meanwhile", n, rate>>10, answered)
			if !strings.Contains(log.String(), "opening another tunnel for new connections") {
				t.Errorf("no tunnel opened for new connections while one waited for its client; log:\n%s", log)
			}
			if st := f.Status(); st.Reconnects != 0 {
				t.Errorf("%d reconnects (%s), want none: a held tunnel is not dead", st.Reconnects, st.LastError)
			}
		})
	}
}

func lineWith(log, s string) string {
	for line := range strings.Lines(log) {
		if strings.Contains(line, s) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// 1. A client slower than the pod but steady gets every byte, in order:
// what it has not read yet waits in its connection's buffer.
func TestSlowSteadyReader(t *testing.T) {
	t.Parallel()
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"bytes": 7100}))
	s := spec(":bytes")
	f, _ := start(t, s, k.env(pods, &testLog{}))
	waitState(t, f, Active)

	c := connect(t, f.Status().Addresses[0])
	c.(*net.TCPConn).SetReadBuffer(32 << 10) // keep the kernel from holding it all
	const n, rate = 2 << 20, 200 << 10       // 2 MiB at 200 KiB/s: about 10s
	if err := download(c, n); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	begin := time.Now()
	if err := checkPattern(&testutil.PacedReader{R: c, Rate: rate}, n); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes read at %d KiB/s, intact, in %s", n, rate>>10, time.Since(begin).Round(time.Millisecond))
}

// 2. Health checks leave nothing for the kubelet to report: no stream
// pair waits for its other half, nothing connects to the application.
// (The fake kubelet reports an incomplete pair after 2s, as the kubelet
// does after 30s.)
func TestHealthCheckQuiet(t *testing.T) {
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			k := newFakeKubelet(t)
			pods := newFakePods(k.addPod("a", t0, map[string]int32{"http": 80}))
			s := spec(":http")
			s.Transport = tr
			s.Health = config.Health{Interval: 10 * time.Millisecond, Timeout: time.Second}
			before := kubeletErrorCount()
			f, _ := start(t, s, k.env(pods, &testLog{}))
			waitFor(t, 10*time.Second, "100 health checks", func() bool { return f.Status().HealthChecks >= 100 })
			time.Sleep(streamCreationTimeout + 500*time.Millisecond) // what the kubelet would report is due by now
			if errs := kubeletErrorsSince(before); len(errs) > 0 {
				t.Fatalf("the kubelet reported %d errors during %d health checks, first: %s", len(errs), f.Status().HealthChecks, errs[0])
			}
			if st := f.Status(); st.Reconnects != 0 || st.HealthRTT <= 0 {
				t.Fatalf("%d reconnects, last round trip %s; want a live tunnel", st.Reconnects, st.HealthRTT)
			}
		})
	}
}

// 4. A thousand connections at once through one forward: each carried on
// its own stream pair, every echo right, and nothing left when they end.
func TestThousandConnections(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"echo": 7000}))
	s := spec(":echo")
	s.ConnectTimeout = 30 * time.Second
	s.Health = config.DefaultHealth // a burst of 1,000 opens, with the product's health settings
	log := &testLog{}
	f, _ := start(t, s, k.env(pods, log))
	waitState(t, f, Active)
	addr := f.Status().Addresses[0]
	defer func() {
		if t.Failed() {
			t.Logf("forward's log:\n%s", log)
		}
	}()

	const n = 1000
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		conns[i] = c
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 3 {
				if err := echo(c, fmt.Sprintf("connection %d round %d", i, round)); err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if active := f.Status().Active; active != n {
		t.Fatalf("%d connections active, want %d", active, n)
	}
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, 10*time.Second, "every connection released", func() bool { return f.Status().Active == 0 })
	f.mu.Lock()
	up := f.tun.up
	f.mu.Unlock()
	waitFor(t, 5*time.Second, "no stream left", func() bool { return up.Streams() == 0 })
}

// 4. A local client that vanishes, with a reset or by closing with data
// unread, releases its streams, goroutines and active count at once, not
// when the pod next writes.
func TestVanishedClientReleasedAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		port string
		gone func(t *testing.T, c net.Conn)
	}{
		{"reset", ":reply", func(t *testing.T, c net.Conn) {
			io.WriteString(c, "the pod waits for more") // and never writes
			c.(*net.TCPConn).SetLinger(0)               // close with RST
			c.Close()
		}},
		{"closed with unread data", ":bytes", func(t *testing.T, c net.Conn) {
			download(c, 1<<30)
			if _, err := io.ReadFull(c, make([]byte, 1000)); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKubelet(t)
			pods := newFakePods(k.addPod("a", t0, map[string]int32{"reply": 7200, "bytes": 7100}))
			f, _ := start(t, spec(tc.port), k.env(pods, &testLog{}))
			waitState(t, f, Active)
			c, err := net.Dial("tcp", f.Status().Addresses[0])
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "the connection counted", func() bool { return f.Status().Active == 1 })
			f.mu.Lock()
			up := f.tun.up
			f.mu.Unlock()
			waitFor(t, 5*time.Second, "its stream pair", func() bool { return up.Streams() == 2 })

			gone := time.Now()
			tc.gone(t, c)
			waitFor(t, 2*time.Second, "the connection released", func() bool {
				return f.Status().Active == 0 && up.Streams() == 0
			})
			t.Logf("released %s after the client went", time.Since(gone).Round(time.Millisecond))
			if up.Err() != nil {
				t.Fatalf("the tunnel died with the client: %v", up.Err())
			}
		})
	}
}

// Connections opened at the same moment all get their stream pairs: the
// kubelet refuses a stream ID lower than one it has seen, so IDs must
// reach the wire in increasing order however the openers interleave.
func TestConcurrentOpensKeepStreamOrder(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"echo": 7000}))
	f, _ := start(t, spec(":echo"), k.env(pods, &testLog{}))
	waitState(t, f, Active)
	addr := f.Status().Addresses[0]
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := echo(c, fmt.Sprint("opener ", i)); err != nil {
				errs <- fmt.Errorf("opener %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := f.Status(); st.Reconnects != 0 {
		t.Fatalf("%d reconnects: %s", st.Reconnects, st.LastError)
	}
}

// 4. A local client that resets its connection, whatever it did before,
// releases its stream pair, its goroutines and its active count at once,
// though the pod stays silent; and stopping the forward then does not wait
// for it.
func TestResetClientReleasedWhilePodSilent(t *testing.T) {
	for _, tr := range transports {
		for _, tc := range []struct {
			name   string
			before func(c *net.TCPConn)
		}{
			{"reset at once", func(c *net.TCPConn) {}},
			{"reset after sending", func(c *net.TCPConn) { io.WriteString(c, "the pod reads this and says nothing") }},
			{"reset after a half-close", func(c *net.TCPConn) {
				io.WriteString(c, "all I had to say")
				c.CloseWrite()
			}},
		} {
			t.Run(string(tr)+"/"+tc.name, func(t *testing.T) {
				k := newFakeKubelet(t)
				pods := newFakePods(k.addPod("a", t0, map[string]int32{"silent": 7300}))
				s := spec(":silent")
				s.Transport = tr
				f, stop := start(t, s, k.env(pods, &testLog{}))
				waitState(t, f, Active)
				c, err := net.Dial("tcp", f.Status().Addresses[0])
				if err != nil {
					t.Fatal(err)
				}
				tcp := c.(*net.TCPConn)
				f.mu.Lock()
				up := f.tun.up
				f.mu.Unlock()
				waitFor(t, 5*time.Second, "its stream pair", func() bool { return f.Status().Active == 1 && up.Streams() == 2 })
				tc.before(tcp)
				time.Sleep(50 * time.Millisecond) // what it sent reaches the forward first
				tcp.SetLinger(0)
				tcp.Close()
				gone := time.Now()
				waitFor(t, 2*time.Second, "the connection released", func() bool {
					return f.Status().Active == 0 && up.Streams() == 0
				})
				t.Logf("released %s after the reset", time.Since(gone).Round(time.Millisecond))
				if up.Err() != nil {
					t.Fatalf("the tunnel died with the client: %v", up.Err())
				}
				if took := stop(); took > time.Second {
					t.Fatalf("Run took %s to return after the client had gone", took)
				}
			})
		}
	}
}
