package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kforward/kforward/e2e/cluster"
)

// recovery: a rollout restart of the 2-replica deployment while a client
// opens a connection every 50 ms through a forward to the deployment.
// Records the time from the first new pod being Ready (as a watch sees it)
// to the first answer from a new pod; a forwarder that exits instead is
// recorded as "exits". Not measured direct: there is no single backend.
func (b *bench) recovery(ctx context.Context) error {
	if err := b.waitRollout(ctx); err != nil {
		return err
	}
	for round := 1; round <= b.o.rounds; round++ {
		for _, f := range b.fs {
			if f.kind == direct {
				continue
			}
			err := b.recoverOnce(ctx, f, round)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				b.fail([]string{"recovery"}, f, round, err)
			}
			// Every round starts from a finished rollout: two Ready pods.
			if err := b.waitRollout(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *bench) recoverOnce(ctx context.Context, f forwarder, round int) error {
	s, err := b.open(ctx, f, "deployment/"+rolloutApp, "")
	if err != nil {
		return err
	}
	defer s.close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	pods := b.c.Client.CoreV1().Pods(b.ns)
	sel := metav1.ListOptions{LabelSelector: "app=" + rolloutApp}
	list, err := pods.List(ctx, sel)
	if err != nil {
		return err
	}
	old := map[string]bool{}
	for _, p := range list.Items {
		old[p.Name] = true
	}
	sel.ResourceVersion = list.ResourceVersion
	w, err := pods.Watch(ctx, sel)
	if err != nil {
		return err
	}
	readyAt := make(chan time.Time, 1)
	var wg sync.WaitGroup
	defer wg.Wait() // after the watch has stopped (deferred below)
	defer w.Stop()
	wg.Go(func() { // ends with the watch
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && !old[p.Name] && p.DeletionTimestamp == nil && podReady(p) {
				readyAt <- time.Now()
				return
			}
		}
	})

	restart := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	if _, err := b.c.Client.AppsV1().Deployments(b.ns).Patch(ctx, rolloutApp, types.StrategicMergePatchType, []byte(restart), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("rollout restart: %w", err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.proc.exited() {
			b.res.note("recovery", f, round, "exits")
			return nil
		}
		reqCtx, cancelReq := context.WithTimeout(ctx, time.Second)
		body, _, err := request(reqCtx, s.http, "GET", "/", 0, nil)
		cancelReq()
		answered := time.Now()
		if pod, ok := strings.CutPrefix(strings.TrimSpace(body), b.ns+"/"); err == nil && ok && !old[pod] {
			select {
			case at := <-readyAt:
				b.res.value("recovery", f, round, ms(answered.Sub(at)))
				return nil
			case <-time.After(5 * time.Second):
				return fmt.Errorf("pod %s answered, but the watch saw no new pod Ready", pod)
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			if s.proc.exited() {
				continue
			}
			return errors.New("no answer from a new pod within a minute of the restart")
		}
	}
}

// waitRollout waits until the deployment has finished rolling out: two
// Ready pods of its current template and nothing else.
func (b *bench) waitRollout(ctx context.Context) error {
	return b.poll(ctx, 2*time.Minute, "the rollout to finish", func(ctx context.Context) (bool, error) {
		d, err := b.c.Client.AppsV1().Deployments(b.ns).Get(ctx, rolloutApp, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		st := d.Status
		if st.ObservedGeneration != d.Generation || st.UpdatedReplicas != 2 || st.ReadyReplicas != 2 || st.Replicas != 2 {
			return false, nil
		}
		ready, all, err := b.readyPods(ctx, "app="+rolloutApp)
		return err == nil && len(ready) == 2 && all == 2, nil
	})
}

// reload: kforward runs a forward ("steady") with connections held open
// on it; each reload rewrites the file with a new forward added (and the
// previous one removed). Records, per reload, the time from the write to
// the added forward's first echo, and per round, how many held
// connections were dropped across all reloads. kubectl cannot reload.
func (b *bench) reload(ctx context.Context) error {
	rows := []string{"reload.ms", "reload.dropped"}
	for round := 1; round <= b.o.rounds; round++ {
		for _, f := range b.fs {
			if f.kind != kforwardKind {
				continue
			}
			err := b.reloadOnce(ctx, f, round)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				b.fail(rows, f, round, err)
			}
		}
	}
	return nil
}

func (b *bench) reloadOnce(ctx context.Context, f forwarder, round int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(b.o.reloads)*15*time.Second)
	defer cancel()
	port, err := cluster.FreePorts(2)
	if err != nil {
		return err
	}
	steadyAddr := loopback(port[0])
	steady := fmt.Sprintf("  - name: steady\n    pod: %s\n    ports: [\"%d:%d\", \"%d:%d\"]\n", benchPod, port[0], echoPort, port[1], oncePort)
	p, file, err := b.startKforward(f, "", steady)
	if err != nil {
		return err
	}
	defer p.stop()
	if err := b.waitEcho(ctx, p, loopback(port[1]), 30*time.Second); err != nil {
		return err
	}

	const held = 4
	conns := make([]net.Conn, held)
	closers := make([]func(), held)
	defer func() {
		for _, c := range closers {
			if c != nil {
				c()
			}
		}
	}()
	for i := range conns {
		if conns[i], closers[i], err = dial(ctx, steadyAddr); err != nil {
			return err
		}
	}
	msg, buf := []byte("still there?"), make([]byte, 12)
	dropped := 0
	for i := 1; i <= b.o.reloads; i++ {
		port, err := cluster.FreePorts(1)
		if err != nil {
			return err
		}
		added := fmt.Sprintf("  - name: added-%d\n    pod: %s\n    ports: [\"%d:%d\"]\n", i, benchPod, port[0], oncePort)
		start := time.Now()
		if err := b.kforwardFile(file, f, "", steady+added); err != nil {
			return err
		}
		if err := b.waitEcho(ctx, p, loopback(port[0]), 10*time.Second); err != nil {
			return fmt.Errorf("reload %d: %w", i, err)
		}
		b.res.value("reload.ms", f, round, ms(time.Since(start)))
		for j, c := range conns {
			c.SetDeadline(time.Now().Add(5 * time.Second)) // a stuck connection counts as dropped
			if exchange(c, msg, buf) == nil {
				continue
			}
			dropped++
			closers[j]()
			if conns[j], closers[j], err = dial(ctx, steadyAddr); err != nil {
				closers[j] = nil
				return fmt.Errorf("reconnect to the steady forward: %w", err)
			}
		}
	}
	b.res.value("reload.dropped", f, round, float64(dropped))
	return nil
}

// waitEcho polls addr, a "once" port, until an echo comes back through it.
func (b *bench) waitEcho(ctx context.Context, p *proc, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if p != nil && p.exited() {
			return p.failure("exited")
		}
		probe, cancelProbe := context.WithTimeout(ctx, 2*time.Second)
		last = echoOnce(probe, addr, 1)
		cancelProbe()
		if last == nil {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("no echo through %s within %s: %w", addr, timeout, last)
		}
	}
}
