// Package forward runs one supervised port-forward: it binds its local
// listeners once, follows the target's pods (Ready ones first), keeps one upgraded
// connection (package upstream, which carries every local connection over
// its own stream pair) to the chosen pod, pings it every health interval
// and redials with backoff.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/forward/upstream"
)

// Env is what a forward needs from outside: a connection to the API server
// for its context, the resolved namespace, and optionally a shared pod watch.
type Env struct {
	Config    *rest.Config
	Client    kubernetes.Interface
	Namespace string
	Pods      Pods    // nil: the forward watches the namespace's pods itself
	Targets   Targets // nil: the forward asks the API server for its service or workload
	Log       *slog.Logger
	// AfterSilence, if set, is called when a tunnel has been dialled after
	// the last one went silent (see silent), with the time the silence
	// was found: the API server answers again, but Client's connections
	// opened before then may be as dead as that tunnel was, and client-go
	// finds a connection that died without a word only after 45s (30s
	// without a frame, 15s for a ping), while the pod watch on it sees
	// nothing. The runner closes them.
	AfterSilence func(silentAt time.Time)
}

// Forward is one forward from the file. Create it with New, run it with Run.
type Forward struct {
	spec config.Forward
	env  Env
	log  *slog.Logger
	c    counters
	// listenTCP is net.Listen; tests bind through it to occupy ports
	// in an order they choose.
	listenTCP func(network, address string) (net.Listener, error)
	overflow  *upstream.Overflow // the disk budget of all its tunnels
	// watchPods is WatchPods; tests make it fail.
	watchPods func(ctx context.Context, client kubernetes.Interface, namespace string) (*PodWatch, error)

	mu         sync.Mutex
	state      State
	lns        []listener
	draining   bool // StopAccepting was called
	addrs      []string
	chosen     []int // local port per mapping, once bound
	tun        *tunnel
	tunChanged chan struct{} // closed when tun changes
	podReady   bool          // tun's pod is Ready
	warnedPod  types.UID     // the pod not Ready that the fallback warning named last
	reconnects int
	lastErr    string
	lastErrAt  time.Time
	rtt        time.Duration
	checks     int64
	aliveAt    time.Time // wall clock, no monotonic reading: when the tunnel last proved alive
	transport  config.Transport
	retryAt    time.Time
	dial       Histogram
	health     Histogram
	connErrs   map[string]int64 // by reason: ErrNoPod, ...
}

// New returns a forward for spec; nothing happens until Run.
func New(spec config.Forward, env Env) *Forward {
	log := env.Log
	if log == nil {
		log = slog.Default()
	}
	return &Forward{
		spec: spec, env: env, state: Starting, tunChanged: make(chan struct{}),
		dial: newHistogram(dialBounds), health: newHistogram(healthBounds), connErrs: map[string]int64{},
		log: log.With("forward", spec.Name), listenTCP: net.Listen, watchPods: WatchPods,
		overflow: upstream.NewOverflow("", spec.DiskBuffer),
	}
}

// Run keeps the forward working until ctx ends, then closes its listeners,
// its upstream and its open connections, and returns once every goroutine it
// started has finished. If it fails first (its pod watch cannot start), it
// stops them itself and returns the error.
func (f *Forward) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var watchDone <-chan struct{} // the forward's own pod watch, once started
	// Cancel first, then wait: whatever ends Run, its goroutines are told
	// to stop and have stopped when it returns.
	defer func() {
		cancel()
		wg.Wait()
		if watchDone != nil {
			<-watchDone
		}
		f.mu.Lock()
		f.state = Stopped
		f.mu.Unlock()
	}()

	lns, err := f.listen(ctx)
	if err != nil {
		return err // ctx ended while ports were busy
	}
	f.mu.Lock()
	f.lns = lns
	if f.draining {
		closeAll(lns)
	}
	f.mu.Unlock()
	conns := newConnSet()
	for _, l := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.accept(ctx, l, conns, &wg)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		closeAll(lns)
		conns.closeAll()
	}()

	pods := f.env.Pods
	if pods == nil {
		w, err := f.watchPods(ctx, f.env.Client, f.env.Namespace)
		if err != nil {
			return err
		}
		watchDone = w.Done()
		pods = w
	}
	f.supervise(ctx, pods)
	return nil
}

// StopAccepting closes the forward's listeners; open connections carry on
// until Run's context ends. A graceful shutdown calls it first.
func (f *Forward) StopAccepting() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.draining = true
	closeAll(f.lns)
}

// retryIn records when the next attempt is due, for the status, and returns d.
func (f *Forward) retryIn(d time.Duration) time.Duration {
	f.mu.Lock()
	f.retryAt = time.Now().Add(d)
	f.mu.Unlock()
	return d
}

// connFailed counts a local connection that ended in error, by reason.
func (f *Forward) connFailed(reason string) {
	f.mu.Lock()
	f.connErrs[reason]++
	f.mu.Unlock()
}

func (f *Forward) newBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = f.spec.Reconnect.Initial
	b.MaxInterval = f.spec.Reconnect.Max
	b.MaxElapsedTime = 0 // never give up
	b.RandomizationFactor = 0.5
	b.Reset()
	return b
}

// An accept that fails for want of resources is tried again after a
// pause, from acceptRetryFirst doubling up to acceptRetryMax, as net/http's
// Server does: a burst of clients that exhausts the file descriptors must
// not end the listener for good (the port stays bound, and clients would
// connect into its backlog and hang).
const (
	acceptRetryFirst = 5 * time.Millisecond
	acceptRetryMax   = time.Second
)

func (f *Forward) accept(ctx context.Context, l listener, conns *connSet, wg *sync.WaitGroup) {
	var pause time.Duration // accepting fails for want of resources: the next wait
	failed := 0             // accepts failed in this episode
	for {
		c, err := l.ln.Accept()
		if err != nil && ctx.Err() == nil && acceptAgain(err) {
			if pause == 0 {
				pause = acceptRetryFirst
				f.log.Warn("cannot accept connections, retrying", "address", l.ln.Addr().String(), "err", err)
			} else {
				pause = min(2*pause, acceptRetryMax)
			}
			failed++
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		if err != nil {
			f.mu.Lock()
			draining := f.draining
			f.mu.Unlock()
			if ctx.Err() == nil && !draining {
				f.fail(Failed, fmt.Errorf("accept on %s: %w", l.ln.Addr(), err))
			}
			return
		}
		if pause != 0 {
			f.log.Info("accepting connections again", "address", l.ln.Addr().String(), "failed", failed)
			pause, failed = 0, 0
		}
		if !conns.add(c) {
			c.Close()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conns.remove(c)
			f.serve(ctx, c, l.port)
		}()
	}
}

// serve carries one local connection: it waits up to connectTimeout for a
// tunnel, and if a tunnel turns out dead, tries the next one.
func (f *Forward) serve(ctx context.Context, c net.Conn, port config.Port) {
	defer c.Close()
	f.c.active.Add(1)
	f.c.total.Add(1)
	defer f.c.active.Add(-1)
	deadline := time.Now().Add(f.spec.ConnectTimeout)
	for {
		t := f.waitTunnel(ctx, deadline)
		if t == nil {
			if ctx.Err() == nil {
				f.connFailed(ErrNoPod)
				f.log.Warn("closing connection: no ready pod", "client", c.RemoteAddr().String(), "waited", f.spec.ConnectTimeout.String())
			}
			return
		}
		remote, err := t.target.remotePort(port, t.pod)
		if err != nil {
			t.release()
			f.connFailed(ErrRemotePort)
			f.log.Warn("closing connection", "client", c.RemoteAddr().String(), "err", err)
			return
		}
		err = t.up.Forward(c, remote, f.spec.Health.Timeout, &f.c.bytes)
		t.release()
		switch {
		case err == nil || ctx.Err() != nil:
		case errors.Is(err, upstream.ErrNoStream) && time.Now().Before(deadline):
			continue // the tunnel died under us: the supervisor redials
		case errors.Is(err, upstream.ErrClientStalled):
			f.connFailed(ErrClientStalled)
			f.log.Warn("closing connection: the client is not reading", "client", c.RemoteAddr().String(), "pod", t.pod.Name, "port", remote, "err", err)
		default:
			f.connFailed(ErrStream)
			f.log.Warn("connection closed with error", "client", c.RemoteAddr().String(), "pod", t.pod.Name, "port", remote, "err", err)
		}
		return
	}
}

// waitTunnel returns the current tunnel, acquired, waiting for one until
// deadline; nil when there is none by then or ctx ends.
func (f *Forward) waitTunnel(ctx context.Context, deadline time.Time) *tunnel {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		f.mu.Lock()
		t, changed := f.tun, f.tunChanged
		f.mu.Unlock()
		if t != nil && t.acquire() {
			return t
		}
		select {
		case <-changed:
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

func (f *Forward) setTunnel(t *tunnel) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tun = t
	close(f.tunChanged)
	f.tunChanged = make(chan struct{})
}

// supervise keeps a tunnel to a usable pod until ctx ends.
func (f *Forward) supervise(ctx context.Context, pods Pods) {
	b := f.newBackoff()
	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(f.retryIn(d)):
			return true
		}
	}
	var current types.UID        // the last tunnel's pod, by UID: a name can come back
	gone := map[types.UID]bool{} // pods the API server answered 404 for
	unreachable := aside{}       // pods whose dial failed, each on its own backoff
	var retired []*tunnel        // still carrying connections to a pod no longer chosen
	var silentAt time.Time       // when the last tunnel was found silent, until the next is up
	var checks sync.WaitGroup    // checkRetired, one per retired tunnel still open
	defer func() {
		for _, t := range retired {
			t.closeWait(context.Canceled)
		}
		checks.Wait()
	}()
	for ctx.Err() == nil {
		tgt, err := resolve(ctx, f.env.Client, f.env.Targets, f.env.Namespace, f.spec.Target)
		if err != nil {
			f.fail(WaitingForPod, err)
			if !wait(b.NextBackOff()) {
				return
			}
			continue
		}
		pod := f.waitPod(ctx, pods, tgt, current, gone, unreachable, func(list []*corev1.Pod) {
			retired = reap(retired, list)
		})
		if pod == nil {
			return
		}
		t, err := f.connect(ctx, pod, tgt)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if f.podGone(ctx, pod, err) {
				f.fail(Reconnecting, fmt.Errorf("connect to pod %s: %w", pod.Name, err))
				gone[pod.UID] = true // the pod just went away: take the next one at once
				continue
			}
			if podFault(ctx, err) {
				// This pod cannot be reached: the next one is tried at
				// once (waitPod), this one again after its backoff.
				d := unreachable.failed(pod, f.newBackoff)
				f.record(Reconnecting, fmt.Errorf("connect to pod %s: %w; set aside for %s", pod.Name, err, d.Round(time.Millisecond)))
				f.log.Warn("pod set aside: its port-forward failed", "pod", pod.Name, "retryIn", d.Round(time.Millisecond).String(), "err", err)
				continue
			}
			f.fail(Reconnecting, fmt.Errorf("connect to pod %s: %w", pod.Name, err))
			if !wait(b.NextBackOff()) {
				return
			}
			continue
		}
		delete(unreachable, pod.UID)
		current = pod.UID
		if !silentAt.IsZero() && f.env.AfterSilence != nil {
			f.env.AfterSilence(silentAt)
		}
		silentAt = time.Time{}
		f.setTunnel(t)
		f.mu.Lock()
		f.state, f.transport, f.aliveAt = Active, t.up.Protocol(), time.Now().Round(0)
		f.mu.Unlock()
		f.log.Info("connected", "pod", pod.Name, "ready", ready(pod), "transport", string(t.up.Protocol()))
		f.notePod(pod, tgt)
		up := time.Now()
		reason := f.hold(ctx, t, pods, tgt, unreachable, func(list []*corev1.Pod) {
			retired = reap(retired, list)
		})
		f.setTunnel(nil)
		switch {
		case ctx.Err() != nil:
			t.closeWait(context.Canceled)
			return
		case reason == nil || errors.Is(reason, upstream.ErrGoingAway) || errors.Is(reason, upstream.ErrClientsBehind):
			// Pod no longer chosen, or the tunnel takes no new streams (the
			// server said so, or a slow client holds its reading): open
			// connections finish on it, new ones go to the next tunnel,
			// without delay.
			switch {
			case errors.Is(reason, upstream.ErrClientsBehind):
				// Memory and disk are full (or the disk failed): the
				// tunnel's reading waits for its slowest client.
				args := []any{"pod", t.pod.Name, "reason", reason, "onDisk", f.overflow.Used(), "diskBuffer", f.spec.DiskBuffer}
				if err := f.overflow.Err(); err != nil {
					args = append(args, "diskErr", err)
				}
				f.log.Warn("opening another tunnel for new connections", args...)
			case reason != nil:
				f.log.Info("opening another tunnel for new connections", "pod", t.pod.Name, "reason", reason)
			}
			t.retire()
			if !t.isDead() {
				checks.Go(func() { f.checkRetired(ctx, t) })
			}
			retired = reap(append(retired, t), pods.List(tgt.selector))
			current = ""
			continue
		}
		if silent(t.up) {
			silentAt = time.Now()
		}
		t.closeWait(reason)
		// A tunnel that lasted as long as the longest delay was healthy:
		// the next failure starts the backoff again from its beginning.
		if time.Since(up) >= f.spec.Reconnect.Max {
			b.Reset()
		}
		f.mu.Lock()
		f.reconnects++
		f.mu.Unlock()
		f.fail(Reconnecting, reason)
		if !wait(b.NextBackOff()) {
			return
		}
	}
}

// silent reports whether a dead tunnel may have gone without the network
// saying so, and the client's other connections to the API server with
// it, unknown to client-go: unless it ended with a connection's error
// that is not a timeout (a reset, a refusal, a broken pipe: those reach
// the other connections too). So its health check gave up on it (it has
// no error of its own), a ping went unanswered, a write was never taken.
// A tunnel the server closed counts too, since upstream does not tell its
// EOF apart: that costs the pod watch a needless relist, where missing a
// silence would leave it blind for 45s.
func silent(up *upstream.Conn) bool {
	err := up.Err()
	var opErr *net.OpError
	return err == nil || !errors.As(err, &opErr) || opErr.Timeout()
}

// podGone reports whether a pod that could not be reached has been deleted
// or replaced, which the watch may not have told yet. A refused WebSocket
// upgrade hides the API server's 404 (k8s.io/streaming's
// UpgradeFailureError does not unwrap to it), so ask; but only an API
// server that answered the dial: one that did not (it timed out, or the
// connection failed) cannot answer this either, and a frozen one would
// wake to a request long timed out, which it logs as errors.
func (f *Forward) podGone(ctx context.Context, pod *corev1.Pod, dialErr error) bool {
	if apierrors.IsNotFound(dialErr) {
		return true
	}
	var netErr *net.OpError
	if errors.Is(dialErr, context.DeadlineExceeded) || errors.As(dialErr, &netErr) {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, f.spec.Health.Timeout)
	defer cancel()
	p, err := f.env.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	return apierrors.IsNotFound(err) || (err == nil && p.UID != pod.UID)
}

// waitPod blocks until a usable pod that is neither gone nor set aside
// exists and returns it. While the only usable pods are set aside, it
// waits for the first of them to be due.
func (f *Forward) waitPod(ctx context.Context, pods Pods, tgt target, current types.UID, gone map[types.UID]bool, unreachable aside, changed func([]*corev1.Pod)) *corev1.Pod {
	for {
		next := pods.Changed()
		list := pods.List(tgt.selector)
		changed(list)
		forgetGone(gone, list)
		unreachable.forget(list)
		list = slices.DeleteFunc(list, func(p *corev1.Pod) bool { return gone[p.UID] })
		now := time.Now()
		if p := pick(unreachable.without(list, now), tgt.podName, current); p != nil {
			return p
		}
		at := unreachable.next(list, now)
		f.mu.Lock()
		f.state = WaitingForPod
		if !at.IsZero() {
			// Pods there are, set aside: this is a backoff, not a wait
			// for the watch.
			f.state, f.retryAt = Reconnecting, at
		}
		f.mu.Unlock()
		var due <-chan time.Time // nil: none set aside, wait for the watch
		if !at.IsZero() {
			due = time.After(at.Sub(now)) // collected once unreachable (Go 1.23)
		}
		select {
		case <-next:
		case <-due:
		case <-ctx.Done():
			return nil
		}
	}
}

// forgetGone drops from gone the pods the watch no longer lists: gone only
// bridges the time until the watch tells of a deletion, and would
// otherwise grow with every pod that ever vanished under the forward.
func forgetGone(gone map[types.UID]bool, list []*corev1.Pod) {
	maps.DeleteFunc(gone, func(uid types.UID, _ bool) bool {
		return !slices.ContainsFunc(list, func(p *corev1.Pod) bool { return p.UID == uid })
	})
}

func (f *Forward) connect(ctx context.Context, pod *corev1.Pod, tgt target) (*tunnel, error) {
	u, err := url.Parse(f.env.Client.CoreV1().RESTClient().Post().
		Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL().String())
	if err != nil {
		return nil, err
	}
	dialCtx, cancel := context.WithTimeout(ctx, max(3*f.spec.Health.Timeout, 5*time.Second))
	defer cancel()
	start := time.Now()
	up, err := upstream.Dial(dialCtx, f.env.Config, u, f.spec.Transport, upstream.Options{
		ClientBuffer: f.spec.ClientBuffer, StallTimeout: f.spec.StallTimeout, Overflow: f.overflow,
	})
	f.mu.Lock()
	f.dial.observe(time.Since(start))
	f.mu.Unlock()
	if apierrors.IsUnauthorized(err) {
		return nil, unauthorized{err}
	}
	if err != nil {
		return nil, err
	}
	return newTunnel(pod, tgt, up), nil
}

// unauthorized is a dial the API server answered 401: the credentials
// expired or were revoked. Said plainly, since either transport's details
// add nothing; the next try reads the kubeconfig's credentials again (see
// internal/kube), so a rotated token is picked up without a restart.
type unauthorized struct{ err error }

func (unauthorized) Error() string {
	return "unauthorized: the API server refused the kubeconfig's credentials (expired or revoked?)"
}

func (u unauthorized) Unwrap() error { return u.err }

// errPodGone closes the connections still open to a pod that was deleted.
var errPodGone = errors.New("pod deleted")

// reap drops retired tunnels that have closed, and closes those whose pod
// is no longer in list: its connections cannot be served any more, and
// closing them tells their clients at once rather than when they time out.
func reap(retired []*tunnel, list []*corev1.Pod) []*tunnel {
	return slices.DeleteFunc(retired, func(t *tunnel) bool {
		if !slices.ContainsFunc(list, func(p *corev1.Pod) bool { return p.UID == t.pod.UID }) {
			t.closeWait(errPodGone)
		}
		return t.isDead()
	})
}

// hold watches a live tunnel: a ping every health interval, and the pod
// set. It returns why the tunnel must go: an error if it died, nil if its
// pod is no longer the one to use (or ctx ended). changed sees the pod
// list at every change.
func (f *Forward) hold(ctx context.Context, t *tunnel, pods Pods, tgt target, unreachable aside, changed func([]*corev1.Pod)) error {
	tick := time.NewTicker(f.spec.Health.Interval)
	defer tick.Stop()
	wake := time.NewTicker(min(wakeCheck, f.spec.Health.Interval))
	defer wake.Stop()
watch:
	for {
		next := pods.Changed()
		list := pods.List(tgt.selector)
		changed(list)
		// A pod recreated under the same name (a StatefulSet's, or a pod
		// target's) is another pod: its UID tells. A pod set aside is not
		// moved to (say, a new revision's, unreachable) until it is due.
		p := pick(unreachable.without(list, time.Now()), tgt.podName, t.pod.UID)
		if p == nil || p.UID != t.pod.UID {
			return nil
		}
		f.notePod(p, tgt)
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.up.Done():
				return t.up.Err()
			case <-t.up.GoingAway():
				return t.up.AwayReason()
			case <-next:
				continue watch
			case <-tick.C:
				break wait
			case <-wake.C:
				// Unheard for too long by the wall clock: kforward was
				// asleep, and after a real suspend the ticker (on the
				// monotonic clock, which stood still) may be an interval
				// away. Ask now.
				f.mu.Lock()
				late := f.overdue(time.Now())
				f.mu.Unlock()
				if late {
					break wait
				}
			}
		}
		rtt, err := f.ping(ctx, t)
		if errors.Is(err, upstream.ErrBusy) {
			// No echo yet, but the tunnel moves data: alive, and its echo
			// waits behind that data on a slow link.
			f.mu.Lock()
			f.aliveAt = time.Now().Round(0)
			f.mu.Unlock()
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("health check: %w", err)
		}
		f.mu.Lock()
		f.rtt = rtt
		f.checks++
		f.health.observe(rtt)
		f.aliveAt = time.Now().Round(0)
		f.mu.Unlock()
	}
}

// wakeCheck is how often a held tunnel's last answer is compared with the
// wall clock (Forward.overdue), so that one left unheard while kforward
// was not running (a laptop asleep) is checked within this long of waking
// up, whoever looks at the status. A constant: a comparison under a lock
// each second per forward costs nothing worth a setting.
const wakeCheck = time.Second

// ping checks a tunnel once, within the health timeout.
func (f *Forward) ping(ctx context.Context, t *tunnel) (time.Duration, error) {
	begin := time.Now()
	rtt, err := t.up.Ping(ctx, f.spec.Health.Timeout)
	if err != nil && ctx.Err() == nil && t.up.Err() == nil && time.Since(begin) > 2*f.spec.Health.Timeout {
		// The ping's time ran out while kforward itself was not
		// running (a stopped process wakes to its timers before it
		// reads the answer waiting in its socket): that says nothing
		// about the tunnel, and redialing would cut every open
		// connection on it. Ask again.
		rtt, err = t.up.Ping(ctx, f.spec.Health.Timeout)
	}
	return rtt, err
}

// checkRetired pings a retired tunnel every health interval for as long as
// it carries connections, and closes it when a ping fails: its connections
// then fail alone, where they would hang until its pod was deleted (a
// node gone from the network leaves its pods listed for minutes). It
// returns when the tunnel has closed or ctx ends.
func (f *Forward) checkRetired(ctx context.Context, t *tunnel) {
	tick := time.NewTicker(f.spec.Health.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.up.Done():
			return
		case <-tick.C:
		}
		if _, err := f.ping(ctx, t); err != nil && !errors.Is(err, upstream.ErrBusy) {
			if ctx.Err() != nil || t.isDead() {
				return // stopped, or closed by its last connection meanwhile
			}
			f.log.Warn("closing a retired tunnel: health check failed", "pod", t.pod.Name, "err", err)
			t.closeWait(fmt.Errorf("retired tunnel: health check: %w", err))
			return
		}
	}
}

// notePod records whether the pod in use is Ready, for the status, and
// when it is not, says once (until it is Ready again) that it is used only
// because the target has no Ready pod. A pod target needs no excuse: it is
// used Ready or not, as kubectl does.
func (f *Forward) notePod(p *corev1.Pod, tgt target) {
	r := ready(p)
	f.mu.Lock()
	f.podReady = r
	warn := !r && tgt.podName == "" && f.warnedPod != p.UID
	switch {
	case r:
		f.warnedPod = ""
	case warn:
		f.warnedPod = p.UID
	}
	f.mu.Unlock()
	if warn {
		f.log.Warn("no ready pod; using running pod "+p.Name+", not ready", "pod", p.Name)
	}
}

func (f *Forward) fail(s State, err error) {
	f.record(s, err)
	f.log.Warn(string(s), "err", err)
}

// record is fail without the log line, for a caller that says it its own way.
func (f *Forward) record(s State, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = s
	f.lastErr = err.Error()
	f.lastErrAt = time.Now()
}

// connSet tracks open local connections so Run can close them on exit.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func newConnSet() *connSet { return &connSet{conns: map[net.Conn]struct{}{}} }

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
}
