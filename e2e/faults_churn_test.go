package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/forward"
)

// stream is one connection's data: the same bytes for the same seed, so a
// reader can check what comes back without keeping what was sent.
type stream struct{ r *rand.ChaCha8 }

func newStream(seed uint64) *stream {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return &stream{rand.NewChaCha8(s)}
}

func (s *stream) Read(p []byte) (int, error) { return s.r.Read(p) }

// churnOutcome is how one connection through the churn ended.
type churnOutcome int

const (
	completed churnOutcome = iota // every byte came back, and right
	cutClean                      // it ended early, and what came back was right
	corrupt                       // a byte came back wrong
)

// echoStream sends size bytes of seed's stream through addr and checks
// that the echo is the same stream: whole (completed) or a true prefix of
// it (cut); any wrong byte is corrupt.
func echoStream(addr string, seed uint64, size int) (churnOutcome, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return cutClean, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		io.Copy(c, io.LimitReader(newStream(seed), int64(size)))
	}()
	want := newStream(seed)
	got, exp := make([]byte, 32<<10), make([]byte, 32<<10)
	for n := 0; n < size; {
		k, err := c.Read(got[:min(len(got), size-n)])
		io.ReadFull(want, exp[:k])
		if k > 0 && !slices.Equal(got[:k], exp[:k]) {
			return corrupt, fmt.Errorf("wrong bytes at offset %d", n)
		}
		n += k
		if err != nil {
			return cutClean, fmt.Errorf("after %d of %d bytes: %w", n, size, err)
		}
	}
	return completed, nil
}

// TestFaultPodChurn: 4 clients stream checksummed data through a service
// forward while its pods are deleted at random, 20 times (soak: 200).
// Every connection either completes with the right bytes or ends early
// with right bytes so far; none ever gets a wrong byte. After each
// deletion, a new connection succeeds within 1s (a Ready pod always
// exists: the deployment has two, and a deleted one is replaced).
func TestFaultPodChurn(t *testing.T) {
	c := needCluster(t)
	ns := namespace(t, c)
	createDeployment(t, c.Client, ns, "web", 2)
	createService(t, c.Client, ns, "web", map[string]string{"app": "web"})
	waitReadyPods(t, c.Client, ns, "app=web", 2)
	s := spec("churn", ns, config.Target{Kind: config.Service, Name: "web"}, ":raw")
	f := startForward(t, c, s)
	addr := waitActive(t, f).Addresses[0]

	const clients, size = 4, 2 << 20
	deletions := soak(20, 200)
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		mu      sync.Mutex
		counts  = map[churnOutcome]int{}
		errs    []error
		seedGen atomic.Uint64
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				out, err := echoStream(addr, seedGen.Add(1), size)
				mu.Lock()
				counts[out]++
				if out == corrupt || (out == cutClean && len(errs) < 5) {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		}()
	}

	var recovery []time.Duration
	for i := range deletions {
		time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
		pods := waitReadyPods(t, c.Client, ns, "app=web", 2)
		victim := pods[rand.IntN(len(pods))]
		current := f.Status().Pod
		deleted := time.Now()
		if err := c.Client.CoreV1().Pods(ns).Delete(t.Context(), victim.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// A new connection, retried until it echoes: how long after the
		// deletion a client waits, while another Ready pod exists.
		var took time.Duration
		for {
			got, err := echoOnce(addr, fmt.Sprintf("probe %d", i))
			if err == nil && got == fmt.Sprintf("probe %d", i) {
				took = time.Since(deleted)
				break
			}
			if time.Since(deleted) > 10*time.Second {
				t.Fatalf("deletion %d (%s, the forward's pod: %v): no new connection echoed within 10s: %v", i, victim.Name, victim.Name == current, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if victim.Name == current {
			recovery = append(recovery, took)
		}
	}
	stop.Store(true)
	wg.Wait()

	if counts[corrupt] > 0 {
		t.Errorf("%d connections got wrong bytes: %v", counts[corrupt], errs)
	}
	if counts[completed] < clients {
		t.Errorf("only %d connections completed: the churn left no time to stream; proves little", counts[completed])
	}
	for _, err := range errs[:min(len(errs), 3)] {
		t.Logf("for example: %v", err)
	}
	slices.Sort(recovery)
	if len(recovery) == 0 {
		t.Errorf("the forward's own pod was never among the %d deleted: proves little", deletions)
	} else if worst := recovery[len(recovery)-1]; worst > 2*time.Second {
		// The target is 1s; the bound is generous for a loaded machine.
		t.Errorf("a new connection waited %s after the forward's pod was deleted, want within 1s (2s allowed)", worst)
	}
	st := f.Status()
	if st.State != forward.Active {
		t.Errorf("forward %s after the churn: %s", st.State, st.LastError)
	}
	t.Logf("%d deletions (%d of the forward's pod): %d connections of %d MiB completed, %d cut cleanly, %d corrupt; new connection after the forward's pod went: median %s, max %s",
		deletions, len(recovery), counts[completed], size>>20, counts[cutClean], counts[corrupt],
		median(recovery).Round(time.Millisecond), recovery[len(recovery)-1].Round(time.Millisecond))
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[len(d)/2]
}
