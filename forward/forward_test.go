package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/internal/testutil"
)

// Fast tests of one forward against the in-process kubelet of
// kubelet_test.go: the real port-forward protocol, no cluster. The same
// behaviours are tested end to end against a real API server in e2e/.

// TestMain checks that no test leaves a goroutine behind, and removes the
// fake kubelet's binary (kubelet_test.go).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeFakeKubelet()
		os.Exit(code)
	}))
}

var t0 = time.Now()

// spec is a selector forward (app=web) with short, test-friendly timings.
func spec(ports ...string) config.Forward {
	s := config.Forward{
		Name:           "web",
		Target:         config.Target{Kind: config.Selector, Selector: map[string]string{"app": "web"}},
		Addresses:      []string{"127.0.0.1"},
		Transport:      config.Auto,
		Reconnect:      config.Backoff{Initial: 50 * time.Millisecond, Max: time.Second},
		Health:         config.Health{Interval: time.Hour, Timeout: time.Second},
		ConnectTimeout: 5 * time.Second,
	}
	for _, p := range ports {
		port, err := config.ParsePort(p)
		if err != nil {
			panic(err)
		}
		s.Ports = append(s.Ports, port)
	}
	return s
}

// start runs a forward until the test ends; stop ends it early and says
// how long Run took to return.
func start(t *testing.T, s config.Forward, env Env) (f *Forward, stop func() time.Duration) {
	t.Helper()
	f = New(s, env)
	return f, run(t, f)
}

// run runs f until the test ends, like start.
func run(t *testing.T, f *Forward) (stop func() time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Run(ctx)
	}()
	var once sync.Once
	var took time.Duration
	stop = func() time.Duration {
		once.Do(func() {
			begin := time.Now()
			cancel()
			select {
			case <-done:
				took = time.Since(begin)
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return 10s after its context ended")
			}
		})
		return took
	}
	t.Cleanup(func() { stop() })
	return stop
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitState(t *testing.T, f *Forward, want State) Status {
	t.Helper()
	var s Status
	waitFor(t, 10*time.Second, "state "+string(want), func() bool { s = f.Status(); return s.State == want })
	return s
}

// addr returns the forward's first bound address once it is bound.
func addr(t *testing.T, f *Forward) string {
	t.Helper()
	var s Status
	waitFor(t, 5*time.Second, "bound listeners", func() bool { s = f.Status(); return len(s.Addresses) > 0 })
	return s.Addresses[0]
}

// get asks an "http" backend through the forward which pod it is.
func get(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	_, body, ok := strings.Cut(string(b), "\r\n\r\n")
	if !ok {
		return "", fmt.Errorf("no HTTP response: %q", b)
	}
	return strings.TrimSpace(body), nil
}

func mustGet(t *testing.T, addr string) string {
	t.Helper()
	pod, err := get(addr)
	if err != nil {
		t.Fatalf("GET through %s: %v", addr, err)
	}
	return pod
}

// echo sends msg over c and reads it back.
func echo(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo: got %q, want %q", buf, msg)
	}
	return nil
}

func connect(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reports an error unless the forward closes c within d: EOF,
// or a reset when the forward did not read what the client had sent.
func closedWithin(c net.Conn, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	n, err := c.Read(make([]byte, 1))
	switch {
	case err == nil:
		return fmt.Errorf("read %d bytes, want the connection closed", n)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("still open after %s", d)
	}
	return nil
}

// testLog collects a forward's log for a test to read.
type testLog struct{ testutil.Buffer }

func (l *testLog) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// 1. Listeners are bound once and kept across reconnects and pod changes;
// a free port is chosen once.
func TestListenersKeptAcrossReconnectsAndPodChanges(t *testing.T) {
	k := newFakeKubelet(t)
	a := k.addPod("a", t0, map[string]int32{"http": 80})
	pods := newFakePods(a)
	f, _ := start(t, spec(":http"), k.env(pods, &testLog{}))
	waitState(t, f, Active)
	bound := f.Status().Addresses
	if len(bound) != 1 || strings.HasSuffix(bound[0], ":0") {
		t.Fatalf("bound %v, want one address with a chosen port", bound)
	}
	if pod := mustGet(t, bound[0]); pod != "a" {
		t.Fatalf("answered by %q, want a", pod)
	}

	k.drop() // the upstream connection breaks
	waitFor(t, 5*time.Second, "a reconnect", func() bool { s := f.Status(); return s.Reconnects == 1 && s.State == Active })
	if pod := mustGet(t, bound[0]); pod != "a" {
		t.Fatalf("after reconnect answered by %q, want a", pod)
	}

	pods.put(k.addPod("b", t0.Add(time.Second), map[string]int32{"http": 8080}))
	pods.put(unready(a))
	waitFor(t, 5*time.Second, "pod b", func() bool { return f.Status().Pod == "b" })
	if pod := mustGet(t, bound[0]); pod != "b" {
		t.Fatalf("after pod change answered by %q, want b", pod)
	}
	if now := f.Status().Addresses; !reflect.DeepEqual(now, bound) {
		t.Fatalf("addresses changed from %v to %v", bound, now)
	}
}

// 1. A busy port fails the forward with a clear error, is retried, and is
// never swapped for another port.
func TestPortInUseIsRetriedNotMoved(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"http": 80}))
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := busy.Addr().(*net.TCPAddr).Port
	f, _ := start(t, spec(fmt.Sprintf("%d:http", port)), k.env(pods, &testLog{}))

	s := waitState(t, f, Failed)
	want := fmt.Sprintf("127.0.0.1:%d is already in use", port)
	if s.LastError != want || len(s.Addresses) != 0 {
		t.Fatalf("status %q with addresses %v, want error %q and none bound", s.LastError, s.Addresses, want)
	}
	time.Sleep(200 * time.Millisecond) // several retries
	if s := f.Status(); len(s.Addresses) != 0 {
		t.Fatalf("bound %v while the port was busy", s.Addresses)
	}
	busy.Close()
	waitState(t, f, Active)
	if got := f.Status().Addresses; len(got) != 1 || got[0] != fmt.Sprintf("127.0.0.1:%d", port) {
		t.Fatalf("bound %v, want 127.0.0.1:%d", got, port)
	}
}

// 2. When the pod goes unready, new connections go to the new ready pod
// at once; a connection open on the old pod carries on.
func TestFollowsReadyPod(t *testing.T) {
	k := newFakeKubelet(t)
	a := k.addPod("a", t0, map[string]int32{"http": 80, "echo": 7000})
	pods := newFakePods(a)
	f, _ := start(t, spec(":http", ":echo"), k.env(pods, &testLog{}))
	waitState(t, f, Active)
	web := f.Status().Addresses[0]
	old := connect(t, f.Status().Addresses[1])
	if err := echo(old, "before"); err != nil {
		t.Fatal(err)
	}

	pods.put(k.addPod("b", t0.Add(time.Second), map[string]int32{"http": 8080, "echo": 7001}))
	ready := time.Now()
	pods.put(unready(a))
	for mustGet(t, web) != "b" {
		if time.Since(ready) > time.Second {
			t.Fatalf("connections still not on pod b %s after it was ready", time.Since(ready))
		}
	}
	t.Logf("new connections on pod b %s after it was ready", time.Since(ready))
	if err := echo(old, "after"); err != nil {
		t.Fatalf("connection opened on pod a broke when b took over: %v", err)
	}
}

// 3. A half-close travels both ways: the pod sees EOF and its answer after
// that still arrives, followed by EOF.
func TestHalfClose(t *testing.T) {
	for _, tr := range []config.Transport{config.WebSocket, config.SPDY} {
		t.Run(string(tr), func(t *testing.T) {
			k := newFakeKubelet(t)
			pods := newFakePods(k.addPod("a", t0, map[string]int32{"reply": 9000}))
			s := spec(":reply")
			s.Transport = tr
			f, _ := start(t, s, k.env(pods, &testLog{}))
			waitState(t, f, Active)
			c := connect(t, f.Status().Addresses[0])
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "hello")
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "got 5 bytes" {
				t.Fatalf("read %q, %v; want the pod's answer to the half-close, then EOF", got, err)
			}
		})
	}
}

// 3. Streams are removed when their connection ends: after 10,000
// connections the upgraded connection tracks no stream.
func TestNoStreamGrowth(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"echo": 7000}))
	f, _ := start(t, spec(":echo"), k.env(pods, &testLog{}))
	waitState(t, f, Active)
	to := f.Status().Addresses[0]

	const n, workers = 10000, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				c, err := net.Dial("tcp", to)
				if err == nil {
					err = echo(c, "x")
					c.Close()
				}
				if err != nil {
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
	waitFor(t, 5*time.Second, "no active connection", func() bool { return f.Status().Active == 0 })
	if total := f.Status().Total; total != n {
		t.Fatalf("forward counted %d connections, want %d", total, n)
	}
	f.mu.Lock()
	conn := f.tun.up
	f.mu.Unlock()
	var left int
	waitFor(t, 5*time.Second, "no stream left", func() bool {
		left = conn.Streams()
		return left == 0
	})
	t.Logf("after %d connections: %d streams left in the session", n, left)
}

// 4. WebSocket first; SPDY when the WebSocket upgrade fails; a pinned
// transport is used alone.
func TestTransportFallback(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pinned   config.Transport
		noWS     bool
		want     config.Transport
		requests string // transports of the upgrade requests, in order
	}{
		{"auto uses websocket", config.Auto, false, config.WebSocket, "ws"},
		{"auto falls back to spdy", config.Auto, true, config.SPDY, "ws spdy"},
		{"pinned spdy", config.SPDY, false, config.SPDY, "spdy"},
		{"pinned websocket", config.WebSocket, false, config.WebSocket, "ws"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKubelet(t)
			k.set(func(k *fakeKubelet) { k.noWS = tc.noWS })
			pods := newFakePods(k.addPod("a", t0, map[string]int32{"http": 80}))
			s := spec(":http")
			s.Transport = tc.pinned
			f, _ := start(t, s, k.env(pods, &testLog{}))
			st := waitState(t, f, Active)
			if st.Transport != tc.want {
				t.Fatalf("transport %q, want %q", st.Transport, tc.want)
			}
			if pod := mustGet(t, st.Addresses[0]); pod != "a" {
				t.Fatalf("answered by %q", pod)
			}
			var seen []string
			for _, r := range k.upgrades() {
				seen = append(seen, map[bool]string{true: "ws", false: "spdy"}[r.websocket])
			}
			if got := strings.Join(seen, " "); got != tc.requests {
				t.Fatalf("upgrade requests %q, want %q", got, tc.requests)
			}
		})
	}
	t.Run("pinned websocket does not fall back", func(t *testing.T) {
		k := newFakeKubelet(t)
		k.set(func(k *fakeKubelet) { k.noWS = true })
		pods := newFakePods(k.addPod("a", t0, map[string]int32{"http": 80}))
		s := spec(":http")
		s.Transport = config.WebSocket
		f, _ := start(t, s, k.env(pods, &testLog{}))
		waitFor(t, 5*time.Second, "a failed dial", func() bool { return len(k.upgrades()) >= 2 })
		for _, r := range k.upgrades() {
			if !r.websocket {
				t.Fatal("a pinned websocket forward tried SPDY")
			}
		}
		if s := f.Status(); s.State != Reconnecting || s.LastError == "" {
			t.Fatalf("status %q %q, want reconnecting with the upgrade error", s.State, s.LastError)
		}
	})
}

// 5. An error from the pod closes that connection only, and is logged with
// the forward's name.
func TestErrorIsolation(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"echo": 7000}))
	log := &testLog{}
	f, _ := start(t, spec(":echo", ":7999"), k.env(pods, log))
	waitState(t, f, Active)
	good := connect(t, f.Status().Addresses[0])
	if err := echo(good, "one"); err != nil {
		t.Fatal(err)
	}

	bad := connect(t, f.Status().Addresses[1])
	io.WriteString(bad, "anyone?")
	if err := closedWithin(bad, 5*time.Second); err != nil {
		t.Fatalf("refused connection: %v", err)
	}
	waitFor(t, 2*time.Second, "the log line", func() bool {
		return strings.Contains(log.String(), "connection refused")
	})
	line := lineWith(log.String(), "connection refused")
	for _, want := range []string{"level=WARN", `msg="connection closed with error"`, "forward=web", "client=" + bad.LocalAddr().String(), "pod=a", "port=7999"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q does not say %q", line, want)
		}
	}
	if err := echo(good, "two"); err != nil {
		t.Fatalf("other connection broke: %v", err)
	}
	if s := f.Status(); s.State != Active || s.Reconnects != 0 {
		t.Fatalf("forward %s with %d reconnects after one refused connection", s.State, s.Reconnects)
	}
}

// 6. A tunnel that stops answering is found by the next health check within
// its timeout, dropped, and redialed once the peer answers again.
func TestDeadTunnelDetected(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"http": 80}))
	s := spec(":http")
	s.Health = config.Health{Interval: 200 * time.Millisecond, Timeout: 300 * time.Millisecond}
	f, _ := start(t, s, k.env(pods, &testLog{}))
	waitState(t, f, Active)

	frozen := time.Now()
	k.set(func(k *fakeKubelet) { k.fail = true }) // the peer is down for new dials too
	k.freeze()
	waitFor(t, 5*time.Second, "the dead tunnel to be dropped", func() bool { return f.Status().Reconnects == 1 })
	took := time.Since(frozen)
	t.Logf("dead tunnel dropped %s after the peer froze (interval %s, timeout %s)", took, s.Health.Interval, s.Health.Timeout)
	if bound := s.Health.Interval + s.Health.Timeout + time.Second; took > bound {
		t.Fatalf("took %s, want under %s", took, bound)
	}
	if st := f.Status(); !strings.Contains(st.LastError, "health check") {
		t.Fatalf("last error %q, want the failed health check", st.LastError)
	}

	k.set(func(k *fakeKubelet) { k.fail = false })
	k.thaw()
	st := waitState(t, f, Active)
	if pod := mustGet(t, st.Addresses[0]); pod != "a" {
		t.Fatalf("answered by %q", pod)
	}
}

// 6. A stream that cannot be created in time means the tunnel is dead: the
// connection is carried by the next tunnel instead of hanging.
func TestStreamTimeoutRedials(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"echo": 7000}))
	s := spec(":echo")
	s.Health.Timeout = 300 * time.Millisecond // health.interval is an hour: no probe will notice
	f, _ := start(t, s, k.env(pods, &testLog{}))
	waitState(t, f, Active)

	k.freeze()
	c := connect(t, f.Status().Addresses[0])
	if err := echo(c, "through the next tunnel"); err != nil {
		t.Fatalf("connection made while the tunnel was dead: %v", err)
	}
	if s := f.Status(); s.Reconnects != 1 || !strings.Contains(s.LastError, "no stream within") {
		t.Fatalf("%d reconnects, last error %q; want the dead tunnel dropped", s.Reconnects, s.LastError)
	}
}

// 7. Redials back off exponentially with jitter up to reconnect.max, and
// start again from reconnect.initial after a healthy period.
func TestBackoff(t *testing.T) {
	k := newFakeKubelet(t)
	k.set(func(k *fakeKubelet) { k.fail = true })
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"http": 80}))
	s := spec(":http")
	s.Transport = config.SPDY // one request per attempt
	s.Reconnect = config.Backoff{Initial: 40 * time.Millisecond, Max: 320 * time.Millisecond}
	f, _ := start(t, s, k.env(pods, &testLog{}))
	waitFor(t, 10*time.Second, "12 attempts", func() bool { return len(k.upgrades()) >= 12 })

	reqs := k.upgrades()
	var gaps []time.Duration
	for i := 1; i < len(reqs); i++ {
		gaps = append(gaps, reqs[i].at.Sub(reqs[i-1].at))
	}
	t.Logf("delays between attempts: %v", gaps)
	slack := 60 * time.Millisecond
	if gaps[0] < s.Reconnect.Initial/2 || gaps[0] > s.Reconnect.Initial*3/2+slack {
		t.Errorf("first delay %s, want initial %s ± 50%%", gaps[0], s.Reconnect.Initial)
	}
	longest, distinct := time.Duration(0), map[time.Duration]bool{}
	for _, g := range gaps {
		longest = max(longest, g)
		distinct[g.Round(5*time.Millisecond)] = true
		if g > s.Reconnect.Max*3/2+slack {
			t.Errorf("delay %s beyond max %s + 50%% jitter", g, s.Reconnect.Max)
		}
	}
	if longest < s.Reconnect.Max/2 {
		t.Errorf("longest delay %s: the backoff did not grow towards %s", longest, s.Reconnect.Max)
	}
	if len(distinct) < len(gaps)/2 {
		t.Errorf("delays %v show no jitter", gaps)
	}

	k.set(func(k *fakeKubelet) { k.fail = false })
	waitState(t, f, Active)
	time.Sleep(s.Reconnect.Max + 50*time.Millisecond) // healthy for reconnect.max
	n := len(k.upgrades())
	dropped := time.Now()
	k.drop()
	waitFor(t, 5*time.Second, "a redial", func() bool { return len(k.upgrades()) > n })
	if d := k.upgrades()[n].at.Sub(dropped); d > s.Reconnect.Initial*3/2+slack {
		t.Fatalf("redial %s after a healthy tunnel broke, want the backoff reset to %s", d, s.Reconnect.Initial)
	}
}

// 7. A pod that answers 404 has just gone: the next ready pod is used at
// once, without backing off, and the gone pod is not asked again.
func TestVanishedPodSkippedAtOnce(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(
		k.addPod("old", t0, map[string]int32{"http": 80}),
		k.addPod("new", t0.Add(time.Second), map[string]int32{"http": 80}))
	k.set(func(k *fakeKubelet) { k.gone["new"] = true })
	s := spec(":http")
	s.Transport = config.SPDY
	s.Reconnect.Initial, s.Reconnect.Max = 5*time.Second, 10*time.Second
	begin := time.Now()
	log := &testLog{}
	f, _ := start(t, s, k.env(pods, log))
	st := waitState(t, f, Active)
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("active after %s: the 404 was backed off (initial %s)", took, s.Reconnect.Initial)
	}
	if pod := mustGet(t, st.Addresses[0]); pod != "old" {
		t.Fatalf("answered by %q, want old", pod)
	}
	var asked []string
	for _, r := range k.upgrades() {
		asked = append(asked, r.pod)
	}
	if got := strings.Join(asked, " "); got != "new old" {
		t.Fatalf("upgrade requests for %q, want \"new old\"", got)
	}
}

// 8. While no pod is ready, a connection waits up to connectTimeout; it is
// served if a pod becomes ready in time, else closed with a log line.
func TestConnectionWaitsForPod(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods()
	log := &testLog{}
	s := spec(":echo")
	s.ConnectTimeout = 300 * time.Millisecond
	f, _ := start(t, s, k.env(pods, log))
	waitState(t, f, WaitingForPod)

	c := connect(t, addr(t, f))
	begin := time.Now()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read %d, %v; want EOF after connectTimeout", n, err)
	}
	if waited := time.Since(begin); waited < s.ConnectTimeout || waited > s.ConnectTimeout+time.Second {
		t.Fatalf("closed after %s, want connectTimeout %s", waited, s.ConnectTimeout)
	}
	waitFor(t, time.Second, "the log line", func() bool { return strings.Contains(log.String(), "no ready pod") })

	k2 := newFakeKubelet(t)
	s.ConnectTimeout = 5 * time.Second
	later := newFakePods()
	f2, _ := start(t, s, k2.env(later, &testLog{}))
	c2 := connect(t, addr(t, f2))
	time.Sleep(300 * time.Millisecond)
	later.put(k2.addPod("a", t0, map[string]int32{"echo": 7000}))
	if err := echo(c2, "waited"); err != nil {
		t.Fatalf("connection that waited for the pod: %v", err)
	}
}

// 9. Stop returns at once even with a frozen peer and a connection open on
// it, and leaves no goroutine behind.
func TestStopWithFrozenPeer(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"echo": 7000}))
	before := goleak.IgnoreCurrent() // the fake kubelet's own listeners
	f, stop := start(t, spec(":echo"), k.env(pods, &testLog{}))
	waitState(t, f, Active)
	c := connect(t, f.Status().Addresses[0])
	if err := echo(c, "hi"); err != nil {
		t.Fatal(err)
	}
	k.freeze()
	io.WriteString(c, "into the void")
	took := stop()
	t.Logf("Run returned %s after stop", took)
	if took > time.Second {
		t.Fatalf("Run took %s to return with a frozen peer", took)
	}
	if err := closedWithin(c, time.Second); err != nil {
		t.Fatalf("open connection after stop: %v", err)
	}
	k.close()
	goleak.VerifyNone(t, before)
}

// 10. Status reports what the forward is doing.
func TestStatus(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"echo": 7000}))
	s := spec(":echo")
	s.Health.Interval = 50 * time.Millisecond
	f, stop := start(t, s, k.env(pods, &testLog{}))
	if st := f.Status(); st.Name != "web" || (st.State != Starting && st.State != WaitingForPod && st.State != Active) {
		t.Fatalf("initial status %+v", st)
	}
	waitState(t, f, Active)
	c := connect(t, f.Status().Addresses[0])
	if err := echo(c, "12345"); err != nil {
		t.Fatal(err)
	}
	c2 := connect(t, f.Status().Addresses[0])
	if err := echo(c2, "123"); err != nil {
		t.Fatal(err)
	}
	c2.Close()
	waitFor(t, 2*time.Second, "a health check", func() bool { return f.Status().HealthRTT > 0 })
	waitFor(t, 2*time.Second, "one active connection", func() bool { return f.Status().Active == 1 })

	st := f.Status()
	port := st.Ports[0].Local
	want := Status{Name: "web", Target: "selector/app=web", Namespace: "ns", State: Active,
		Ports:     []PortStatus{{Local: port, Remote: "echo"}},
		Addresses: []string{fmt.Sprintf("127.0.0.1:%d", port)}, Pod: "a", PodReady: true, Transport: config.WebSocket,
		Active: 1, Total: 2, BytesIn: 8, BytesOut: 8, HealthRTT: st.HealthRTT, HealthChecks: st.HealthChecks,
		HealthyAt: st.HealthyAt, DialSeconds: st.DialSeconds, HealthSeconds: st.HealthSeconds}
	if time.Since(st.HealthyAt) > 5*time.Second {
		t.Errorf("healthy at %s, before the health check that just passed", st.HealthyAt)
	}
	if st.HealthChecks < 1 {
		t.Fatalf("%d health checks counted after one passed", st.HealthChecks)
	}
	if port == 0 {
		t.Fatal("the chosen local port is not in the status")
	}
	if h := st.DialSeconds; h.Count != 1 || h.Sum <= 0 || h.Counts[len(h.Counts)-1] != 1 {
		t.Errorf("dial histogram after one dial: %+v", h)
	}
	if h := st.HealthSeconds; h.Count != uint64(st.HealthChecks) || h.Sum < st.HealthRTT.Seconds() {
		t.Errorf("health histogram after %d checks (last %s): %+v", st.HealthChecks, st.HealthRTT, h)
	}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("status\n %+v\nwant\n %+v", st, want)
	}
	if len(st.Addresses) != 1 || !strings.HasPrefix(st.Addresses[0], "127.0.0.1:") {
		t.Fatalf("addresses %v", st.Addresses)
	}

	before := time.Now()
	k.drop()
	waitFor(t, 5*time.Second, "a reconnect", func() bool { s := f.Status(); return s.Reconnects == 1 && s.State == Active })
	st = f.Status()
	if st.LastError == "" || st.LastErrorAt.Before(before) {
		t.Fatalf("last error %q at %s, want the dropped tunnel after %s", st.LastError, st.LastErrorAt, before)
	}
	if st.DialSeconds.Count != 2 {
		t.Errorf("%d dials in the histogram after a reconnect, want 2", st.DialSeconds.Count)
	}
	if st.ConnErrors[ErrStream] != 1 {
		t.Errorf("connection errors %v after the open connection's tunnel dropped, want stream: 1", st.ConnErrors)
	}
	stop()
	if st := f.Status(); st.State != Stopped {
		t.Errorf("state %s after Run returned, want %s", st.State, Stopped)
	}
}

// A graceful stop: StopAccepting closes the listeners, and open
// connections carry on until Run's context ends.
func TestStopAcceptingKeepsOpenConnections(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"echo": 7000}))
	log := &testLog{}
	f, stop := start(t, spec(":echo"), k.env(pods, log))
	waitState(t, f, Active)
	to := f.Status().Addresses[0]
	c := connect(t, to)
	if err := echo(c, "before"); err != nil {
		t.Fatal(err)
	}
	f.StopAccepting()
	if c2, err := net.Dial("tcp", to); err == nil {
		c2.Close()
		t.Fatal("a new connection was accepted after StopAccepting")
	}
	if err := echo(c, "after"); err != nil {
		t.Fatalf("the open connection broke: %v", err)
	}
	stop()
	if strings.Contains(log.String(), "accept on") {
		t.Fatalf("closing the listeners was logged as a failure:\n%s", log.String())
	}
}

// 2. A rollout: new connections go to the new revision's pod as soon as it
// is Ready; connections open on the old pod carry on until that pod is
// deleted, and are closed then rather than left to hang.
func TestRolloutHandover(t *testing.T) {
	k := newFakeKubelet(t)
	old := k.addPod("old", t0, map[string]int32{"http": 80, "echo": 7000})
	old.Labels["pod-template-hash"] = "v1"
	pods := newFakePods(old)
	f, _ := start(t, spec(":http", ":echo"), k.env(pods, &testLog{}))
	waitState(t, f, Active)
	web := f.Status().Addresses[0]
	open := connect(t, f.Status().Addresses[1])
	if err := echo(open, "on old"); err != nil {
		t.Fatal(err)
	}

	fresh := k.addPod("new", t0.Add(time.Second), map[string]int32{"http": 80, "echo": 7000})
	fresh.Labels["pod-template-hash"] = "v2"
	pods.put(fresh) // Ready; the old pod is still Ready too
	ready := time.Now()
	for mustGet(t, web) != "new" {
		if time.Since(ready) > time.Second {
			t.Fatal("new connections still on the old pod 1s after the new revision was Ready")
		}
	}
	if err := echo(open, "still on old"); err != nil {
		t.Fatalf("the open connection broke at the handover: %v", err)
	}

	pods.update(func(m map[string]*corev1.Pod) { delete(m, "old") })
	if err := closedWithin(open, 2*time.Second); err != nil {
		t.Fatalf("connection to the deleted pod: %v", err)
	}
}
