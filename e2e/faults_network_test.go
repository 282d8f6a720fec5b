package e2e

// Faults on the way to the pod, as a user of `kforward run` meets them:
// the network to the API server breaks (a proxy the test controls, see
// proxy_test.go: blackholed as by a VPN that dropped, reset, refusing),
// the API server restarts or hangs, the kubelet restarts. Each test runs a
// runner on a forwards file with one forward to a Deployment, measures
// how soon the fault is seen and how soon the forward works again, counts
// the local connections that failed meanwhile (a new one every 250 ms),
// and then checks that the forward's pod watch still follows the
// Deployment through a rollout. The figures are logged; `make soak` runs
// the same tests with longer faults (soak in helpers_test.go).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/e2e/cluster"
	"github.com/kforward/kforward/forward"
)

// faultConnectTimeout is how long a local connection waits for a tunnel
// in these tests: shorter than the faults, so that connections made during
// one fail rather than wait it out.
const faultConnectTimeout = 5 * time.Second

// faultRun is a runner with one forward, web, to the once and http ports
// of the Deployment web in a namespace of its own.
type faultRun struct {
	t          *testing.T
	c          *cluster.Cluster
	ns         string
	rf         *runningFile
	health     config.Health
	reconnect  config.Backoff
	echo, http string // the forward's local addresses: once (echoes a line, then closes) and http
	apiErrors  func() []string
}

// createProbedDeployment creates the Deployment web with one pod whose
// container has, besides the usual ports, a port "once": its backend
// echoes a line and closes. The probes use it rather than the echo port:
// kwok does not pass a client's close on to the pod, so each probe of an
// echo port would leave a stream open on the tunnel until the pod went,
// and a fault would end hundreds of them.
func createProbedDeployment(t testing.TB, c *cluster.Cluster, ns string) {
	t.Helper()
	labels := map[string]string{"app": "web"}
	tmpl := podTemplate(labels)
	tmpl.Spec.Containers[0].Ports = append(slices.Clone(webPorts), corev1.ContainerPort{Name: "once", ContainerPort: 7001})
	replicas := int32(1)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: tmpl,
		},
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// startFaultRun starts the Deployment and a runner that reaches the
// cluster through kubeconfig, and waits until the forward echoes. With
// restarts, the test restarts a component of the cluster or lasts minutes
// (see runFaultFile).
func startFaultRun(t *testing.T, c *cluster.Cluster, kubeconfig string, health config.Health, restarts bool) *faultRun {
	t.Helper()
	fr := &faultRun{t: t, c: c, ns: namespace(t, c), health: health,
		reconnect: config.Backoff{Initial: 50 * time.Millisecond, Max: time.Second}, apiErrors: apiServerLog(t, c)}
	createProbedDeployment(t, c, fr.ns)
	waitReadyPods(t, c.Client, fr.ns, "app=web", 1)
	fr.rf = runFaultFile(t, restarts, fmt.Sprintf(`kubeconfig: %s
defaults:
  namespace: %s
  reconnect: {initial: %s, max: %s}
  health: {interval: %s, timeout: %s}
  connectTimeout: %s
forwards:
  - name: web
    deployment: web
    ports: [":once", ":http"]
`, kubeconfig, fr.ns, fr.reconnect.Initial, fr.reconnect.Max, health.Interval, health.Timeout, faultConnectTimeout))
	s := fr.rf.waitState("web", forward.Active)
	fr.echo, fr.http = s.Addresses[0], s.Addresses[1]
	if got, err := echoOnce(fr.echo, "hello"); err != nil || got != "hello" {
		t.Fatalf("echo through the forward before the fault: %q, %v", got, err)
	}
	return fr
}

// runFaultFile is runFile, whose leak check, with restarts, also passes
// over what a restarted component of the cluster starts in this process:
// its process's waiter, and the watches the cluster's backends and the
// test's own client open again on new connections. A runner that left its
// informers running would still show: their Run, controller and
// processor goroutines are not passed over. A test that lasts minutes
// (make soak) needs restarts too, with no restart of its own: the
// backends' watch is opened again every 5-10 minutes (client-go's watch
// timeout), and an HTTP/2 connection idle for 90s is closed by the API
// server, so the next request opens another.
func runFaultFile(t *testing.T, restarts bool, content string) *runningFile {
	t.Helper()
	if !restarts {
		return runFile(t, content)
	}
	return runFile(t, content,
		goleak.IgnoreAnyFunction("github.com/kforward/kforward/e2e/cluster.(*process).start.func1"),
		goleak.IgnoreAnyFunction("k8s.io/apimachinery/pkg/watch.(*StreamWatcher).receive"),
		goleak.IgnoreAnyFunction("k8s.io/client-go/tools/cache.(*Reflector).startResync"),
		goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*clientStream).doRequest"),
		goleak.IgnoreTopFunction("context.(*cancelCtx).propagateCancel.func2"))
}

func (fr *faultRun) status() forward.Status { return fr.rf.status("web") }

// waitDown waits until the forward is not active, and returns when it saw
// that.
func (fr *faultRun) waitDown(within time.Duration) time.Time {
	fr.t.Helper()
	waitFor(fr.t, within, "the forward to leave active", func() bool { return fr.status().State != forward.Active })
	return time.Now()
}

// waitUp waits until the forward is active again after at least one
// reconnect more than before, and returns when it saw that.
func (fr *faultRun) waitUp(within time.Duration, before int) time.Time {
	fr.t.Helper()
	waitFor(fr.t, within, "the forward to be active again", func() bool {
		s := fr.status()
		return s.State == forward.Active && s.Reconnects > before
	})
	return time.Now()
}

// staysDown checks, every 20 ms until the deadline, that the forward does
// not say it is active: while the fault lasts nothing can be carried.
func (fr *faultRun) staysDown(until time.Time) {
	fr.t.Helper()
	var states []forward.State
	for time.Now().Before(until) {
		s := fr.status()
		if s.State == forward.Active {
			fr.t.Errorf("the forward is active %s before the fault ends (reconnects %d, last error %q)",
				time.Until(until).Round(time.Millisecond), s.Reconnects, s.LastError)
			return
		}
		if len(states) == 0 || states[len(states)-1] != s.State {
			states = append(states, s.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fr.t.Logf("states while the fault lasted: %v", states)
}

// recoveryBound is how long a forward may take to be active again once
// the fault is gone: a dial begun during the fault may hang until its
// timeout (forward.connect: max(3×health timeout, 5s)), then one backoff
// delay (at most max, with jitter of half), then a dial; 2s of slack for
// a busy machine.
func (fr *faultRun) recoveryBound() time.Duration {
	dial := max(3*fr.health.Timeout, 5*time.Second)
	return dial + fr.reconnect.Max*3/2 + 2*time.Second
}

// echoes checks that a new local connection echoes.
func (fr *faultRun) echoes(what string) {
	fr.t.Helper()
	if got, err := echoOnce(fr.echo, what); err != nil || got != what {
		fr.t.Fatalf("echo %s: %q, %v", what, got, err)
	}
}

// echoesOnceKwokForwards echoes through the forward once a restarted kwok
// forwards again, and returns how many connections it refused before. kwok
// serves port-forwards as soon as it starts, but refuses every port ("no
// forward found for port") until it has loaded its PortForward rules, a
// moment later (a real kubelet has no such moment). So the echo is tried
// again after, and only after, that refusal, as the forward logged it for
// that very connection, for at most 5s.
func (fr *faultRun) echoesOnceKwokForwards(what string) int {
	fr.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for refused := 0; ; refused++ {
		c, err := net.DialTimeout("tcp", fr.echo, 5*time.Second)
		if err != nil {
			fr.t.Fatalf("echo %s: %v", what, err)
		}
		got, err := echoOver(c, what)
		c.Close()
		if err == nil && got == what {
			return refused
		}
		client := "client=" + c.LocalAddr().String() + " "
		byKwok := func() bool {
			for line := range strings.Lines(fr.rf.log.String()) {
				if strings.Contains(line, client) && strings.Contains(line, "no forward found for port") {
					return true
				}
			}
			return false
		}
		for wait := time.Now().Add(time.Second); !byKwok() && time.Now().Before(wait); {
			time.Sleep(10 * time.Millisecond)
		}
		if !byKwok() || time.Now().After(deadline) {
			fr.t.Fatalf("echo %s: %q, %v (%d refused by kwok before it)", what, got, err, refused)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// followsRollout restarts the Deployment and waits until the forward's
// http port answers from the new pod: the pod watch (and the Deployment's)
// still work after the fault. It logs and returns how long after the new
// pod was Ready that was.
func (fr *faultRun) followsRollout(within time.Duration) time.Duration {
	fr.t.Helper()
	t, c := fr.t, fr.c
	old := readyPods(t, c.Client, fr.ns, "app=web")
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	if _, err := c.Client.AppsV1().Deployments(fr.ns).Patch(t.Context(), "web", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var fresh string
	waitFor(t, 60*time.Second, "the rollout's new pod to be Ready", func() bool {
		for _, p := range readyPods(t, c.Client, fr.ns, "app=web") {
			if !slices.ContainsFunc(old, func(o corev1.Pod) bool { return o.UID == p.UID }) {
				fresh = p.Name
				return true
			}
		}
		return false
	})
	readyAt := time.Now()
	want := fr.ns + "/" + fresh
	var last string
	for {
		body, err := get(fr.http, "/")
		last = fmt.Sprintf("%q, %v", strings.TrimSpace(body), err)
		if err == nil && strings.TrimSpace(body) == want {
			break
		}
		if time.Since(readyAt) > within {
			t.Fatalf("the forward did not follow the rollout to %s within %s of its being Ready (the pod watch did not resume?); last answer %s; status %+v",
				fresh, within, last, fr.status())
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(readyAt)
	t.Logf("after the fault, the forward followed a rollout %s after the new pod was Ready", took.Round(time.Millisecond))
	fr.checkAPIServerLog()
	return took
}

// watchRetry bounds how long after a rollout's new pod is Ready the
// forward may take to follow it when, shortly before, the API server was
// out of reach for outage: client-go's reflector retries a failed watch
// after a delay that doubles from 0.8s, with as much again of jitter,
// capped at [30s, 60s); after an outage it may so wait about as long
// again as the outage lasted (at most a minute). 10s on top for the
// relist, the rollout's events and a busy machine.
func watchRetry(outage time.Duration) time.Duration {
	return min(2*outage+2*time.Second, time.Minute) + 10*time.Second
}

// connProbe is one local connection a connProber made: when it began and
// ended, and why it failed (nil: its line came back).
type connProbe struct {
	at, end time.Time
	err     error
}

// connProber opens a new local connection every interval, each on its own
// goroutine, sends a line over it and expects it back.
type connProber struct {
	addr   string
	once   sync.Once
	stop   chan struct{}
	wg     sync.WaitGroup // the ticker's goroutine and every probe's
	mu     sync.Mutex
	probes []connProbe
}

// startProber probes addr until finish, or the end of the test (before
// runFile's leak check).
func startProber(t testing.TB, addr string, every time.Duration) *connProber {
	p := &connProber{addr: addr, stop: make(chan struct{})}
	t.Cleanup(func() { p.finish() })
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			p.wg.Add(1) // the counter is above zero: this goroutine has not ended
			go func() {
				defer p.wg.Done()
				at := time.Now()
				msg := fmt.Sprintf("probe-%d", i)
				got, err := echoOnce(p.addr, msg)
				if err == nil && got != msg {
					err = fmt.Errorf("echoed %q, want %q", got, msg)
				}
				p.mu.Lock()
				p.probes = append(p.probes, connProbe{at, time.Now(), err})
				p.mu.Unlock()
			}()
		}
	}()
	return p
}

// finish stops probing, waits for the probes under way and returns them
// all, in the order they began.
func (p *connProber) finish() []connProbe {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	slices.SortFunc(p.probes, func(a, b connProbe) int { return a.at.Compare(b.at) })
	return p.probes
}

// tally reports the probes of a fault that began at faultAt, with the
// forward active again at upAt: every probe that ended before the fault or
// began once the forward was active again must have echoed; those in
// between are counted (failed, or held until a tunnel came and then
// served), and one that failed must have been closed by the forward in
// time, not left hanging: within connectTimeout, and the two health
// timeouts a stream open may take on a tunnel found dead under it (2s of
// slack for a busy machine).
func (fr *faultRun) tally(probes []connProbe, faultAt, upAt time.Time) {
	fr.t.Helper()
	var before, during, failed, after int
	var firstErr error
	var slowest time.Duration
	closeBound := faultConnectTimeout + 2*fr.health.Timeout + 2*time.Second
	for _, p := range probes {
		switch {
		case p.end.Before(faultAt):
			before++
		case p.at.Before(upAt):
			during++
			if p.err != nil {
				failed++
				if firstErr == nil {
					firstErr = p.err
				}
				took := p.end.Sub(p.at)
				slowest = max(slowest, took)
				if took > closeBound {
					fr.t.Errorf("local connection %s–%s failed after %s, want closed within %s: %v",
						stamp(p.at), stamp(p.end), took.Round(time.Millisecond), closeBound, p.err)
				}
			}
			continue
		default:
			after++
		}
		if p.err != nil {
			fr.t.Errorf("local connection %s–%s failed (fault at %s, active again at %s): %v",
				stamp(p.at), stamp(p.end), stamp(faultAt), stamp(upAt), p.err)
		}
	}
	if after < 4 {
		fr.t.Errorf("only %d local connections after recovery; the test proves nothing", after)
	}
	s := fr.status()
	fr.t.Logf("local connections: %d before the fault (all echoed), %d during it (%d failed, the slowest closed after %s; %d served), %d after recovery (all echoed); first failure: %v",
		before, during, failed, slowest.Round(time.Millisecond), during-failed, after, firstErr)
	fr.t.Logf("forward: %d reconnects, connection errors %v, last error %q", s.Reconnects, s.ConnErrors, s.LastError)
}

func stamp(at time.Time) string { return at.Format("15:04:05.000") }

// apiServerAddr is the host:port the cluster's API server listens on.
func apiServerAddr(t testing.TB, c *cluster.Cluster) string {
	t.Helper()
	u, err := url.Parse(c.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// proxiedFaultRun starts a proxy to the API server and a faultRun that
// reaches the cluster only through it.
func proxiedFaultRun(t *testing.T, health config.Health) (*faultRun, *faultProxy) {
	t.Helper()
	c := needCluster(t)
	proxy := newFaultProxy(t, apiServerAddr(t, c))
	fr := startFaultRun(t, c, proxiedKubeconfig(t, c.Kubeconfig, proxy.Addr()), health, soak(false, true))
	// Cleanups run last first: close the proxy again before the runner
	// stops, so that its connections' goroutines are gone when runFile
	// checks for leaks.
	t.Cleanup(proxy.Close)
	return fr, proxy
}

// TestFaultNetworkBlackhole: the network to the API server goes silent
// (every open connection and every new one passes nothing, as when a VPN
// drops) for a while, then comes back as a new network (the old
// connections stay dead). The dead tunnel is seen within the health
// interval and timeout, the forward does not claim to be active while the
// network is gone, and once it is back the forward recovers on its own:
// new local connections echo, and its pod watch follows a rollout.
func TestFaultNetworkBlackhole(t *testing.T) {
	health := config.Health{Interval: time.Second, Timeout: time.Second}
	fr, proxy := proxiedFaultRun(t, health)
	probes := startProber(t, fr.echo, 250*time.Millisecond)
	time.Sleep(time.Second)

	before := fr.status().Reconnects
	faultAt := time.Now()
	proxy.Blackhole()
	limit := health.Interval + health.Timeout + 2*time.Second
	detected := fr.waitDown(3 * limit).Sub(faultAt)
	if detected > limit {
		t.Errorf("dead tunnel detected after %s, want within interval+timeout (+2s slack) = %s", detected, limit)
	}
	t.Logf("blackhole detected after %s: %s", detected.Round(time.Millisecond), fr.status().LastError)
	outage := soak(10*time.Second, 90*time.Second)
	fr.staysDown(faultAt.Add(outage))

	proxy.Restore()
	restoredAt := time.Now()
	upAt := fr.waitUp(2*fr.recoveryBound(), before)
	recovered := upAt.Sub(restoredAt)
	if recovered > fr.recoveryBound() {
		t.Errorf("active again %s after the network came back, want within %s", recovered, fr.recoveryBound())
	}
	fr.echoes("after the blackhole")
	t.Logf("blackhole of %s: active again %s after the network came back", outage, recovered.Round(time.Millisecond))
	time.Sleep(2 * time.Second) // connections after recovery
	fr.tally(probes.finish(), faultAt, upAt)
	accepted, _ := proxy.Counts()
	t.Logf("proxy: %d connections accepted in all", accepted)
	// The pod watch's connection was blackholed too, and client-go would
	// find it dead only by its HTTP/2 health check (30s without a frame,
	// then 15s for a ping): the runner closes it when the forward's
	// tunnel is back, and the watch starts again at once. A blackhole
	// longer than that health check (soak) has the watch fail, and back
	// off, for the rest of it.
	fr.followsRollout(watchRetry(max(0, outage-45*time.Second)))
}

// TestFaultNetworkReset: every connection to the API server is reset at
// once (a NAT or firewall that forgot them). The forward sees it at once,
// not at its next health check, and recovers on its own; its pod watch
// follows a rollout afterwards.
func TestFaultNetworkReset(t *testing.T) {
	// A long health interval: a reset must be seen without it.
	health := config.Health{Interval: 10 * time.Second, Timeout: time.Second}
	fr, proxy := proxiedFaultRun(t, health)
	probes := startProber(t, fr.echo, 250*time.Millisecond)
	time.Sleep(time.Second)

	var detections, recoveries []time.Duration
	var faultAt, upAt time.Time
	for i := range soak(3, 20) {
		before := fr.status().Reconnects
		at := time.Now() // before: the forward may see the reset before Reset returns
		proxy.Reset()
		if i == 0 {
			faultAt = at
		}
		var seen time.Time
		var s forward.Status
		if err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 3*health.Interval, true, func(context.Context) (bool, error) {
			s = fr.status()
			seen = s.LastErrorAt
			return s.Reconnects > before && !seen.Before(at), nil
		}); err != nil {
			t.Fatalf("reset %d (at %s) not seen: status %+v", i, stamp(at), s)
		}
		upAt = fr.waitUp(fr.recoveryBound(), before)
		detections = append(detections, seen.Sub(at).Round(time.Millisecond))
		recoveries = append(recoveries, upAt.Sub(at).Round(time.Millisecond))
		if d := seen.Sub(at); d > time.Second {
			t.Errorf("reset %d seen after %s, want within 1s (the health interval is %s)", i, d, health.Interval)
		}
		fr.echoes(fmt.Sprintf("after reset %d", i))
		time.Sleep(time.Second)
	}
	t.Logf("resets seen after %v; active again after %v; last error %q", detections, recoveries, fr.status().LastError)
	time.Sleep(2 * time.Second)
	// Connections during a reset's recovery count as during the fault; all
	// of them after the last one must echo.
	fr.tally(probes.finish(), faultAt, upAt)
	fr.followsRollout(watchRetry(0))
}

// TestFaultNetworkRefused: every connection to the API server is reset,
// and new ones are refused for 20s (soak: 2m), as when a load balancer
// has no healthy backend. The forward reports the failure all along, and
// recovers on its own once connections are accepted again; its pod watch
// follows a rollout afterwards.
func TestFaultNetworkRefused(t *testing.T) {
	health := config.Health{Interval: time.Second, Timeout: time.Second}
	fr, proxy := proxiedFaultRun(t, health)
	probes := startProber(t, fr.echo, 250*time.Millisecond)
	time.Sleep(time.Second)

	before := fr.status().Reconnects
	refusal := soak(20*time.Second, 2*time.Minute)
	faultAt := time.Now()
	proxy.Refuse(refusal) // first: nothing reconnects between the reset and the refusal
	proxy.Reset()
	detected := fr.waitDown(5 * time.Second).Sub(faultAt)
	if detected > time.Second {
		t.Errorf("reset detected after %s, want within 1s", detected)
	}
	fr.staysDown(faultAt.Add(refusal - 100*time.Millisecond))
	s := fr.status()
	t.Logf("while refused: state %s, last error %q", s.State, s.LastError)
	if !strings.Contains(s.LastError, "connection reset by peer") && !strings.Contains(s.LastError, "EOF") {
		t.Errorf("last error while refused is %q, want the refused connection's", s.LastError)
	}

	// Refuse ends by itself: from then on, connections are accepted.
	openAt := faultAt.Add(refusal)
	upAt := fr.waitUp(refusal+2*fr.recoveryBound(), before)
	recovered := upAt.Sub(openAt)
	// Only a backoff delay and a dial: no dial can hang on a refusal.
	bound := fr.reconnect.Max*3/2 + 2*time.Second
	if recovered > bound {
		t.Errorf("active again %s after connections were accepted again, want within %s", recovered, bound)
	}
	fr.echoes("after the refusal")
	_, refused := proxy.Counts()
	t.Logf("refused for %s: detected after %s, active again %s after connections were accepted; %d connections refused meanwhile",
		refusal, detected.Round(time.Millisecond), recovered.Round(time.Millisecond), refused)
	time.Sleep(2 * time.Second)
	fr.tally(probes.finish(), faultAt, upAt)
	fr.followsRollout(watchRetry(refusal))
}

// waitClusterHealthy waits until the API server is ready and the node is
// Ready and untainted again: the tests after a control-plane fault share
// the cluster. It has a context of its own, so that it also works while
// a failed test unwinds.
func waitClusterHealthy(t testing.TB, c *cluster.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var state string
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if _, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
			state = "API server not ready: " + err.Error()
			return false, nil
		}
		node, err := c.Client.CoreV1().Nodes().Get(ctx, cluster.NodeName, metav1.GetOptions{})
		if err != nil {
			state = err.Error()
			return false, nil
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status != corev1.ConditionTrue {
				state = "node not Ready: " + cond.Message
				return false, nil
			}
		}
		for _, taint := range node.Spec.Taints {
			if taint.Key == corev1.TaintNodeNotReady || taint.Key == corev1.TaintNodeUnreachable {
				state = "node tainted " + taint.Key
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Errorf("the cluster is not healthy again after the fault: %s", state)
	}
}

// checkAPIServerLog fails the test for an error the API server logged
// about a request in the test's namespace (kforward's: the test's own
// requests succeed), and logs the other errors it wrote since the test
// began: the fault's own (a proxy's reset, a killed kubelet, a restarted
// API server's start), for whoever reads the figures.
func (fr *faultRun) checkAPIServerLog() {
	fr.t.Helper()
	for _, line := range fr.apiErrors() {
		if strings.Contains(line, fr.ns) {
			fr.t.Errorf("API server error about the test's namespace: %s", line)
			continue
		}
		fr.t.Logf("API server (the fault's): %s", line)
	}
}

// apiServerLog returns a func that returns the error lines the API server
// wrote since apiServerLog was called.
func apiServerLog(t testing.TB, c *cluster.Cluster) func() []string {
	t.Helper()
	path := c.LogFile(cluster.APIServer)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	from := info.Size()
	return func() []string {
		f, err := os.Open(path)
		if err != nil {
			t.Error(err)
			return nil
		}
		defer f.Close()
		if _, err := f.Seek(from, io.SeekStart); err != nil {
			t.Error(err)
			return nil
		}
		var errs []string
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "E") {
				errs = append(errs, line)
			}
		}
		return errs
	}
}

// TestFaultAPIServerRestart: the API server is killed and started again
// (soak: five times). Every tunnel goes through it, so the forward sees it
// at once; it is active again within a backoff delay of the API server
// being ready, and its pod watch follows a rollout afterwards.
func TestFaultAPIServerRestart(t *testing.T) {
	c := needCluster(t)
	defer waitClusterHealthy(t, c)
	health := config.Health{Interval: time.Second, Timeout: time.Second}
	fr := startFaultRun(t, c, c.Kubeconfig, health, true)
	probes := startProber(t, fr.echo, 250*time.Millisecond)
	time.Sleep(time.Second)

	var faultAt, upAt time.Time
	for i := range soak(1, 5) {
		before := fr.status().Reconnects
		restarted := make(chan error, 1)
		at := time.Now()
		if i == 0 {
			faultAt = at
		}
		go func() { restarted <- c.Restart(context.Background(), cluster.APIServer) }()
		detected := fr.waitDown(5 * time.Second).Sub(at)
		if detected > time.Second {
			t.Errorf("restart %d: the killed API server seen after %s, want within 1s", i, detected)
		}
		if err := <-restarted; err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		readyAt := time.Now()
		upAt = fr.waitUp(30*time.Second, before)
		// Only a backoff delay and a dial once the API server is ready.
		bound := fr.reconnect.Max*3/2 + 2*time.Second
		recovered := upAt.Sub(readyAt)
		if recovered > bound {
			t.Errorf("restart %d: active again %s after the API server was ready, want within %s", i, recovered, bound)
		}
		t.Logf("restart %d: seen after %s; API server ready %s after the kill; forward active again %s after that",
			i, detected.Round(time.Millisecond), readyAt.Sub(at).Round(time.Millisecond), recovered.Round(time.Millisecond))
		fr.echoes(fmt.Sprintf("after restart %d", i))
		time.Sleep(time.Second)
	}
	time.Sleep(2 * time.Second)
	fr.tally(probes.finish(), faultAt, upAt)
	fr.followsRollout(watchRetry(upAt.Sub(faultAt)))
}

// TestFaultAPIServerPause: the API server stops answering for 30s (soak:
// 90s; SIGSTOP: its sockets stay open). The forward's health check sees
// the silent tunnel within its interval and timeout, it does not claim to
// be active while the API server is frozen, it recovers on its own once it
// answers again, and its pod watch follows a rollout afterwards.
func TestFaultAPIServerPause(t *testing.T) {
	c := needCluster(t)
	defer waitClusterHealthy(t, c)
	health := config.Health{Interval: time.Second, Timeout: time.Second}
	fr := startFaultRun(t, c, c.Kubeconfig, health, true)
	probes := startProber(t, fr.echo, 250*time.Millisecond)
	time.Sleep(time.Second)

	before := fr.status().Reconnects
	pause := soak(30*time.Second, 90*time.Second)
	faultAt := time.Now()
	if err := c.Pause(cluster.APIServer); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			c.Resume(cluster.APIServer)
		}
	}()
	limit := health.Interval + health.Timeout + 2*time.Second
	detected := fr.waitDown(3 * limit).Sub(faultAt)
	if detected > limit {
		t.Errorf("frozen API server detected after %s, want within interval+timeout (+2s slack) = %s", detected, limit)
	}
	fr.staysDown(faultAt.Add(pause))
	if err := c.Resume(cluster.APIServer); err != nil {
		t.Fatal(err)
	}
	resumed = true
	resumedAt := time.Now()
	upAt := fr.waitUp(2*fr.recoveryBound(), before)
	recovered := upAt.Sub(resumedAt)
	if recovered > fr.recoveryBound() {
		t.Errorf("active again %s after the API server was resumed, want within %s", recovered, fr.recoveryBound())
	}
	fr.echoes("after the pause")
	t.Logf("API server paused for %s: detected after %s, active again %s after it was resumed",
		pause, detected.Round(time.Millisecond), recovered.Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	fr.tally(probes.finish(), faultAt, upAt)
	fr.followsRollout(watchRetry(pause))
}

// TestFaultKubeletRestart: the kubelet (kwok) is killed and started again
// (soak: five times). Its end of the tunnel goes with it, and the forward
// sees that within its health interval and timeout; it is active again
// once the kubelet is back, the pod answers through it, and the pod watch
// follows a rollout (which the restarted kubelet runs) afterwards.
func TestFaultKubeletRestart(t *testing.T) {
	c := needCluster(t)
	defer waitClusterHealthy(t, c)
	health := config.Health{Interval: time.Second, Timeout: time.Second}
	fr := startFaultRun(t, c, c.Kubeconfig, health, true)
	probes := startProber(t, fr.echo, 250*time.Millisecond)
	time.Sleep(time.Second)

	var faultAt, upAt time.Time
	limit := health.Interval + health.Timeout + 2*time.Second
	for i := range soak(1, 5) {
		before := fr.status().Reconnects
		at := time.Now()
		if i == 0 {
			faultAt = at
		}
		if err := c.Restart(t.Context(), cluster.Kwok); err != nil {
			t.Fatal(err)
		}
		startedAt := time.Now()
		var seen time.Time
		waitFor(t, 3*limit, "the dead tunnel to be seen", func() bool {
			s := fr.status()
			seen = s.LastErrorAt
			return s.Reconnects > before && !seen.Before(at)
		})
		detected := seen.Sub(at)
		if detected > limit {
			t.Errorf("restart %d: the dead tunnel seen after %s, want within interval+timeout (+2s slack) = %s", i, detected, limit)
		}
		upAt = fr.waitUp(60*time.Second, before)
		t.Logf("restart %d: kwok killed and started in %s; the dead tunnel seen after %s (%s); active again %s after kwok was started",
			i, startedAt.Sub(at).Round(time.Millisecond), detected.Round(time.Millisecond), fr.status().LastError, upAt.Sub(startedAt).Round(time.Millisecond))
		if refused := fr.echoesOnceKwokForwards(fmt.Sprintf("after restart %d", i)); refused > 0 {
			t.Logf("restart %d: %d connections refused by kwok while it loaded its port-forward rules", i, refused)
		}
		if got := who(t, fr.http); !strings.HasPrefix(got, fr.ns+"/web-") {
			t.Errorf("after restart %d answered by %q", i, got)
		}
		time.Sleep(time.Second)
	}
	time.Sleep(2 * time.Second)
	fr.tally(probes.finish(), faultAt, upAt)
	fr.followsRollout(watchRetry(0))
}
