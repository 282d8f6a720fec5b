package forward

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
)

// Run owns what it starts: when it fails while its parent context is
// still live (here its pod watch cannot start), it stops its listeners'
// goroutines itself and returns the error; nothing is left running (the
// package's leak check).
func TestRunReturnsErrorWhileParentLive(t *testing.T) {
	log := &testLog{}
	f := New(spec(":echo"), Env{Namespace: "ns", Log: log.logger()})
	refused := errors.New("pod watch refused")
	f.watchPods = func(context.Context, kubernetes.Interface, string) (*PodWatch, error) { return nil, refused }
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, refused) {
			t.Fatalf("Run returned %v, want %v", err, refused)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run has not returned 10s after its pod watch failed (its parent context still live)")
	}
	st := f.Status()
	if st.State != Stopped || len(st.Addresses) == 0 {
		t.Fatalf("state %s, addresses %v after Run returned", st.State, st.Addresses)
	}
	if c, err := net.DialTimeout("tcp", st.Addresses[0], time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts after Run returned", st.Addresses[0])
	}
}
