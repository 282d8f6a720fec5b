package forward

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/spdystream"
	corev1 "k8s.io/api/core/v1"
)

// errStreamCreate means the tunnel could not open a stream in time: the
// tunnel is dead, and the local connection may try the next one.
var errStreamCreate = errors.New("stream not created in time")

// tunnel is one upgraded connection to one pod, shared by every local
// connection of the forward while that pod is chosen.
type tunnel struct {
	pod    *corev1.Pod
	target target
	up     *upstream

	nextID atomic.Uint64
	dead   chan struct{} // closed by kill
	once   sync.Once
	err    error // why it died; set before dead is closed

	mu      sync.Mutex
	active  int  // local connections using it
	retired bool // no new connections; killed when the last one ends
}

func newTunnel(pod *corev1.Pod, t target, up *upstream) *tunnel {
	return &tunnel{pod: pod, target: t, up: up, dead: make(chan struct{})}
}

// kill marks the tunnel dead and closes its TCP connection, which never
// blocks however dead the peer is; everything blocked on it then fails.
func (t *tunnel) kill(err error) {
	t.once.Do(func() {
		t.err = err
		t.up.raw.Close()
		close(t.dead)
	})
}

// closeWait kills the tunnel and waits until its connection's goroutines
// have ended, which they do at once once the TCP connection is closed.
// (Calling Close on the SPDY connection instead would write a GOAWAY to a
// possibly dead peer and leave a shutdown goroutine behind for a second.)
func (t *tunnel) closeWait(err error) {
	t.kill(err)
	<-t.up.served
}

func (t *tunnel) isDead() bool {
	select {
	case <-t.dead:
		return true
	default:
		return false
	}
}

// acquire registers a local connection; false when the tunnel is retired.
func (t *tunnel) acquire() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.retired || t.isDead() {
		return false
	}
	t.active++
	return true
}

func (t *tunnel) release() {
	t.mu.Lock()
	t.active--
	last := t.retired && t.active == 0
	t.mu.Unlock()
	if last {
		t.kill(errRetired)
	}
}

var errRetired = errors.New("pod no longer chosen")

// retire stops new connections; open ones finish on this tunnel (an old pod
// keeps serving them during a rollout) and the last one closes it.
func (t *tunnel) retire() {
	t.mu.Lock()
	t.retired = true
	idle := t.active == 0
	t.mu.Unlock()
	if idle {
		t.kill(errRetired)
	}
}

// replyPoll is how often a stream waiting for its reply checks whether the
// tunnel died: spdystream wakes a waiting stream on a reply or a reset, not
// when its connection closes.
const replyPoll = 20 * time.Millisecond

// createStream opens one stream, giving up after timeout. A stream that
// cannot be created in time means the tunnel is dead: kill it.
func (t *tunnel) createStream(h http.Header, timeout time.Duration) (*spdystream.Stream, error) {
	deadline := time.Now().Add(timeout)
	type result struct {
		s   *spdystream.Stream
		err error
	}
	// Sending the SYN_STREAM can block behind other writes to a peer that
	// stopped reading; closing the connection (kill) unblocks it.
	sent := make(chan result, 1)
	go func() {
		s, err := t.up.conn.CreateStream(h, nil, false)
		sent <- result{s, err}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var r result
	select {
	case r = <-sent:
	case <-timer.C:
		t.kill(fmt.Errorf("no stream within %s", timeout))
		return nil, fmt.Errorf("%w: no answer within %s", errStreamCreate, timeout)
	case <-t.dead:
		return nil, fmt.Errorf("%w: %v", errStreamCreate, t.err)
	}
	if r.err != nil {
		t.kill(fmt.Errorf("create stream: %w", r.err))
		return nil, fmt.Errorf("%w: %v", errStreamCreate, r.err)
	}
	for {
		err := r.s.WaitTimeout(min(replyPoll, max(time.Until(deadline), time.Millisecond)))
		switch {
		case err == nil:
			return r.s, nil
		case err != spdystream.ErrTimeout:
			r.s.Reset()
			return nil, fmt.Errorf("stream refused: %w", err)
		case t.isDead():
			r.s.Reset()
			return nil, fmt.Errorf("%w: %v", errStreamCreate, t.err)
		case !time.Now().Before(deadline):
			t.kill(fmt.Errorf("no stream within %s", timeout))
			r.s.Reset()
			return nil, fmt.Errorf("%w: no answer within %s", errStreamCreate, timeout)
		}
	}
}

func (t *tunnel) headers(kind string, port int, id string) http.Header {
	h := http.Header{}
	h.Set("streamType", kind)
	h.Set("port", strconv.Itoa(port))
	h.Set("requestID", id)
	return h
}

// probe checks the tunnel end to end: the reply to a new stream comes from
// the kubelet, through the API server. Only an error stream is opened, so
// nothing connects to the application; it is reset at once.
func (t *tunnel) probe(port int, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	id := "probe-" + strconv.FormatUint(t.nextID.Add(1), 10)
	s, err := t.createStream(t.headers("error", port, id), timeout)
	if err != nil {
		return 0, err
	}
	rtt := time.Since(start)
	s.Reset()
	return rtt, nil
}

// counters are the byte and connection counts of a forward.
type counters struct {
	active, total, in, out atomic.Int64
}

// pipe carries one local connection over a new stream pair to port:
// an error stream (half-closed at once, read to its end) and a data stream.
// It returns the error the pod reported, if any.
func (t *tunnel) pipe(local net.Conn, port int, timeout time.Duration, c *counters) error {
	id := strconv.FormatUint(t.nextID.Add(1), 10)
	errStream, err := t.createStream(t.headers("error", port, id), timeout)
	if err != nil {
		return err
	}
	errStream.Close()
	data, err := t.createStream(t.headers("data", port, id), timeout)
	if err != nil {
		errStream.Reset()
		return err
	}
	defer func() {
		data.Reset() // also removes the streams from the connection
		errStream.Reset()
	}()

	remoteErr := make(chan error, 1)
	go func() {
		msg, err := io.ReadAll(errStream)
		switch {
		case len(msg) > 0:
			remoteErr <- fmt.Errorf("pod %s port %d: %s", t.pod.Name, port, strings.TrimSpace(string(msg)))
		case err != nil && !t.isDead():
			remoteErr <- fmt.Errorf("error stream: %w", err)
		default:
			remoteErr <- nil
		}
	}()
	localDone := make(chan struct{})
	go func() {
		defer close(localDone)
		io.Copy(countWriter{data, &c.out}, local)
		data.Close() // propagate the client's half-close
	}()
	remoteDone := make(chan struct{})
	go func() {
		defer close(remoteDone)
		io.Copy(countWriter{local, &c.in}, data)
		if tc, ok := local.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		}
	}()

	// As kubectl does: the connection ends when the pod's side ends, when
	// the pod reports an error, or when the tunnel dies. When the pod's side
	// ends first, its error (say, "connection refused") may still be on its
	// way on the error stream, which the kubelet closes right after.
	var result error
	ended, errs := remoteDone, remoteErr
	var grace <-chan time.Time
wait:
	for {
		select {
		case <-ended:
			if errs == nil {
				break wait
			}
			ended, grace = nil, time.After(timeout)
		case result = <-errs:
			if result != nil || ended == nil {
				break wait
			}
			errs = nil // an empty error stream just means "no error"
		case <-grace:
			break wait
		case <-t.dead:
			result = fmt.Errorf("tunnel closed: %v", t.err)
			break wait
		}
	}
	local.Close()
	data.Reset()
	<-remoteDone
	<-localDone
	return result
}

// countWriter counts bytes written through it.
type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
