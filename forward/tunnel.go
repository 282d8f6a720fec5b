package forward

import (
	"errors"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"

	"github.com/kforward/kforward/forward/upstream"
)

// tunnel is the upgraded connection to the chosen pod, shared by every
// local connection of the forward while that pod is chosen. It counts the
// local connections on it, so that a tunnel to a pod no longer chosen is
// closed when its last connection ends.
type tunnel struct {
	pod    *corev1.Pod
	target target
	up     *upstream.Conn

	mu      sync.Mutex
	active  int  // local connections using it
	retired bool // no new connections; closed when the last one ends
}

func newTunnel(pod *corev1.Pod, t target, up *upstream.Conn) *tunnel {
	return &tunnel{pod: pod, target: t, up: up}
}

// closeWait closes the tunnel for err and waits until its goroutines have
// ended, which they do at once.
func (t *tunnel) closeWait(err error) { t.up.Close(err) }

func (t *tunnel) isDead() bool { return t.up.Err() != nil }

func (t *tunnel) goingAway() bool {
	select {
	case <-t.up.GoingAway():
		return true
	default:
		return false
	}
}

// acquire registers a local connection; false when the tunnel is retired,
// dead, or its server takes no new streams.
func (t *tunnel) acquire() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.retired || t.isDead() || t.goingAway() {
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
		t.up.Close(errRetired)
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
		t.up.Close(errRetired)
	}
}

// counters are the byte and connection counts of a forward.
type counters struct {
	active, total atomic.Int64
	bytes         upstream.Bytes
}
