package forward

import (
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// flakyListener fails its next fails Accepts with err, as a listener
// does when the process is out of file descriptors.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
	err   error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", l.err)}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

func (l *flakyListener) failNext(n int) {
	l.mu.Lock()
	l.fails = n
	l.mu.Unlock()
}

// An accept that fails for want of resources (EMFILE, ENFILE, ENOBUFS,
// ECONNABORTED) is retried after a pause, as net/http's server does: the
// listener keeps serving once the resources are back, the forward stays
// active, and the log says so once per episode, not once per error.
func TestAcceptErrorsRetried(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ECONNABORTED} {
		t.Run(errno.Error(), func(t *testing.T) {
			k := newFakeKubelet(t)
			pods := newFakePods(k.addPod("a", t0, map[string]int32{"echo": 7000}))
			log := &testLog{}
			f := New(spec(":echo"), k.env(pods, log))
			var fl *flakyListener
			f.listenTCP = func(network, address string) (net.Listener, error) {
				ln, err := net.Listen(network, address)
				if err != nil {
					return nil, err
				}
				fl = &flakyListener{Listener: ln, fails: 5, err: errno} // from the first accept on
				return fl, nil
			}
			run(t, f)
			st := waitState(t, f, Active)
			if err := echo(connect(t, st.Addresses[0]), "after 5 failed accepts"); err != nil {
				t.Fatalf("a connection after the accepts failed: %v", err)
			}
			// A second episode: the accept after the next connection fails 3 times.
			fl.failNext(3)
			if err := echo(connect(t, st.Addresses[0]), "before the second episode"); err != nil {
				t.Fatal(err)
			}
			if err := echo(connect(t, st.Addresses[0]), "after the second episode"); err != nil {
				t.Fatalf("a connection after the second episode: %v", err)
			}
			if st := f.Status(); st.State != Active || st.Reconnects != 0 {
				t.Fatalf("forward %s with %d reconnects after failed accepts, want active and 0", st.State, st.Reconnects)
			}
			lines := strings.Count(log.String(), "cannot accept connections")
			again := strings.Count(log.String(), "accepting connections again")
			if lines != 2 || again != 2 || !strings.Contains(log.String(), errno.Error()) {
				t.Fatalf("%d warnings and %d recoveries for 2 episodes of 8 failed accepts, want 2 and 2, with %q:\n%s",
					lines, again, errno.Error(), log.String())
			}
		})
	}
}
