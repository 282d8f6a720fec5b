package runner

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// conns dials a shared client's connections to its API server and keeps
// them, so that those opened before the path to it went silent can be
// closed at once (forward.Env.AfterSilence). client-go finds a connection
// that died without a word only by its HTTP/2 health check, 30s without a
// frame and then 15s for a ping; until then the pod watches on it see
// nothing, and a forward whose tunnel is back (a VPN reconnected, another
// network joined) follows its pods as they were before: a rollout
// meanwhile goes unseen, and new connections go to a pod that is gone.
type conns struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu     sync.Mutex
	open   map[*trackedConn]struct{}
	closed bool // the client was released: it dials no more
}

// newConns dials with dial, or if it is nil as client-go does.
func newConns(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *conns {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	return &conns{dial: dial, open: map[*trackedConn]struct{}{}}
}

// DialContext is a rest.Config's Dial.
func (cs *conns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := cs.dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, opened: time.Now(), owner: cs}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		c.Close()
		return nil, errClientReleased
	}
	cs.open[tc] = struct{}{}
	return tc, nil
}

var errClientReleased = errors.New("the API client was released")

// close closes every connection and refuses new ones: the client is no
// longer used. Its transport is its own (a rest.Config with Dial is not
// shared through client-go's cache), so without this its idle connections,
// and their goroutines, would outlive it.
func (cs *conns) close() {
	cs.mu.Lock()
	cs.closed = true
	cs.mu.Unlock()
	cs.closeBefore(time.Now().Add(time.Hour))
}

// closeBefore closes the connections opened before t, and returns how
// many it closed. Requests and watches on them fail at once, and client-go
// retries them on new connections.
func (cs *conns) closeBefore(t time.Time) int {
	cs.mu.Lock()
	var old []*trackedConn
	for c := range cs.open {
		if c.opened.Before(t) {
			old = append(old, c)
		}
	}
	cs.mu.Unlock()
	for _, c := range old {
		c.Close()
	}
	return len(old)
}

// count is how many connections are open.
func (cs *conns) count() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.open)
}

// trackedConn is a connection that leaves its conns when it is closed.
type trackedConn struct {
	net.Conn
	opened time.Time
	owner  *conns
}

func (c *trackedConn) Close() error {
	c.owner.mu.Lock()
	delete(c.owner.open, c)
	c.owner.mu.Unlock()
	return c.Conn.Close()
}
