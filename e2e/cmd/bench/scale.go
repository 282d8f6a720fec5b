package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kforward/kforward/e2e/cluster"
)

const scaleApp = "scale"

// scaleAndIdle: o.scale pods, each with an echo port and an HTTP port.
// kforward runs one forward per pod in one process; kubectl runs
// o.scaleKubectl processes, one forward each, and its totals are
// extrapolated to o.scale. Records the time until every forward answered,
// RSS and CPU while idle, per idle forward CPU and API-server requests,
// and RSS again once every forward has carried a download (what a
// forwarder keeps of a burst is what it costs once its forwards are used). The scenario runs once per
// forwarder (its figures are about size, not noise) and after a baseline
// window with no forwarder, right before its own, which the API request
// figure is net of: the control plane's own requests (leases, status
// updates) drift, so each forwarder gets the adjacent baseline.
func (b *bench) scaleAndIdle(ctx context.Context) error {
	rows := []string{"scale.active", "scale.rss", "scale.cpu", "idle.cpu", "idle.api", "scale.rssUsed"}
	names, err := b.createScalePods(ctx)
	defer b.deleteScalePods()
	if err != nil {
		return err
	}
	// Creating the pods sets off a wave of requests (status updates,
	// events) that takes a while to die down; a baseline taken in it is
	// too high, and the figure net of it comes out negative. Let it pass.
	b.logf("scale: %d pods Ready; letting the control plane settle for %s", len(names), b.o.idle)
	select {
	case <-time.After(b.o.idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	for _, f := range b.fs {
		if f.kind == direct {
			continue
		}
		b.logf("scale: %s: baseline window of %s, then %d forwards", f.Name, b.o.idle, len(names))
		err := b.scaleOnce(ctx, f, names)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			b.fail(rows, f, 1, err)
		}
	}
	return nil
}

func (b *bench) createScalePods(ctx context.Context) ([]string, error) {
	names := make([]string, b.o.scale)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%03d", scaleApp, i)
	}
	tmpl := podTemplate(scaleApp, []corev1.ContainerPort{{Name: "once", ContainerPort: oncePort}, {Name: "http", ContainerPort: httpPort}})
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8) // a few creates at a time, not 200
	for i, name := range names {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: b.ns, Labels: tmpl.Labels}, Spec: tmpl.Spec}
			_, errs[i] = b.c.Client.CoreV1().Pods(b.ns).Create(ctx, pod, metav1.CreateOptions{})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("create scale pods: %w", err)
	}
	return names, b.waitReady(ctx, "app="+scaleApp, len(names), 5*time.Minute)
}

// deleteScalePods removes the scale pods so that later scenarios do not
// share the node with them; it does not wait for them to go.
func (b *bench) deleteScalePods() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := b.c.Client.CoreV1().Pods(b.ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{LabelSelector: "app=" + scaleApp})
	if err != nil {
		b.logf("delete scale pods: %v", err)
	}
}

func (b *bench) scaleOnce(ctx context.Context, f forwarder, pods []string) error {
	base, err := b.idleWindow(ctx, nil)
	if err != nil {
		return err
	}
	n := len(pods)
	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	var addrs, httpAddrs []string
	start := time.Now()
	switch f.kind {
	case kforwardKind:
		ports, err := cluster.FreePorts(2 * n)
		if err != nil {
			return err
		}
		var y strings.Builder
		for i, pod := range pods {
			fmt.Fprintf(&y, "  - name: %s\n    pod: %s\n    ports: [\"%d:%d\", \"%d:%d\"]\n", pod, pod, ports[2*i], oncePort, ports[2*i+1], httpPort)
			addrs = append(addrs, loopback(ports[2*i]))
			httpAddrs = append(httpAddrs, loopback(ports[2*i+1]))
		}
		start = time.Now()
		p, _, err := b.startKforward(f, "", y.String())
		if err != nil {
			return err
		}
		procs = append(procs, p)
	case kubectlKind:
		k := b.o.scaleKubectl
		ports, err := cluster.FreePorts(2 * k)
		if err != nil {
			return err
		}
		started := make([]*proc, k)
		errs := make([]error, k)
		var wg sync.WaitGroup
		start = time.Now()
		for i := range k { // all at once, as kforward starts its forwards
			wg.Go(func() {
				started[i], errs[i] = b.startKubectl(ctx, f, "pod/"+pods[i], fmt.Sprintf("%d:%d", ports[2*i], oncePort), fmt.Sprintf("%d:%d", ports[2*i+1], httpPort))
			})
			addrs = append(addrs, loopback(ports[2*i]))
			httpAddrs = append(httpAddrs, loopback(ports[2*i+1]))
		}
		wg.Wait()
		for _, p := range started {
			if p != nil {
				procs = append(procs, p)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	if err := b.waitAll(ctx, procs, addrs, b.waitEcho1); err != nil {
		return err
	}
	active := time.Since(start)
	rss, err := total(procs, (*proc).rss)
	if err != nil {
		return err
	}
	idle, err := b.idleWindow(ctx, procs)
	if err != nil {
		return err
	}
	// Used: a download through every forward, then a pause for what a
	// burst leaves to be collected (Go's collector and scavenger run on
	// their own, and both tools are Go).
	if err := b.waitAll(ctx, procs, httpAddrs, func(ctx context.Context, addr string) error {
		return download(ctx, addr, usedDownload)
	}); err != nil {
		return err
	}
	select {
	case <-time.After(usedSettle):
	case <-ctx.Done():
		return ctx.Err()
	}
	rssUsed, err := total(procs, (*proc).rss)
	if err != nil {
		return err
	}
	// kubectl's totals are for o.scaleKubectl processes: scale them to
	// o.scale forwards. Per-forward figures need no scaling.
	factor := float64(n) / float64(len(addrs))
	total := func(row string, v float64) {
		v *= factor
		b.res.add(sample{Row: row, Forwarder: f.Name, Round: 1, Value: &v, Extrapolated: factor != 1})
	}
	total("scale.active", active.Seconds())
	total("scale.rss", float64(rss)/(1<<20))
	total("scale.rssUsed", float64(rssUsed)/(1<<20))
	total("scale.cpu", 100*idle.cpu.Seconds()/b.o.idle.Seconds())
	perMin := b.o.idle.Minutes()
	b.res.value("idle.cpu", f, 1, float64(idle.cpu.Milliseconds())/perMin/float64(len(addrs)))
	b.res.value("idle.api", f, 1, (idle.apiPerMin-base.apiPerMin)/float64(len(addrs)))
	return nil
}

// usedDownload is what every forward carries before the scale scenario's
// second RSS reading, and usedSettle the pause before it.
const (
	usedDownload = 1 << 20
	usedSettle   = 5 * time.Second
)

// total sums what figure reads of each of procs (its RSS, its CPU time).
func total[T int64 | time.Duration](procs []*proc, figure func(*proc) (T, error)) (T, error) {
	var sum T
	for _, p := range procs {
		v, err := figure(p)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

func (b *bench) waitEcho1(ctx context.Context, addr string) error {
	return b.waitEcho(ctx, nil, addr, 3*time.Minute)
}

// waitAll runs try on every address, a few addresses at a time, until each
// has succeeded once or one has failed.
func (b *bench) waitAll(ctx context.Context, procs []*proc, addrs []string, try func(context.Context, string) error) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	jobs := make(chan string)
	var mu sync.Mutex
	var first error // the failure that cancelled the others
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() { // ends when jobs is closed
			for addr := range jobs {
				if err := try(ctx, addr); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					cancel()
				}
			}
		})
	}
	for _, addr := range addrs {
		select {
		case jobs <- addr:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	for _, p := range procs {
		if p.exited() {
			return p.failure("exited")
		}
	}
	return first
}

type idleFigures struct {
	cpu       time.Duration // of procs, over the window
	apiPerMin float64       // API-server requests per minute, in all
}

// idleWindow waits o.idle without sending any traffic and returns the CPU
// time procs used and the API server's request rate over that time.
func (b *bench) idleWindow(ctx context.Context, procs []*proc) (idleFigures, error) {
	cpu := func() (time.Duration, error) { return total(procs, (*proc).cpu) }
	cpu0, err := cpu()
	if err != nil {
		return idleFigures{}, err
	}
	req0, err := b.apiRequests(ctx)
	if err != nil {
		return idleFigures{}, err
	}
	start := time.Now()
	select {
	case <-time.After(b.o.idle):
	case <-ctx.Done():
		return idleFigures{}, ctx.Err()
	}
	req1, err := b.apiRequests(ctx)
	if err != nil {
		return idleFigures{}, err
	}
	took := time.Since(start)
	cpu1, err := cpu()
	if err != nil {
		return idleFigures{}, err
	}
	return idleFigures{cpu: cpu1 - cpu0, apiPerMin: (req1 - req0) / took.Minutes()}, nil
}

// apiRequests returns the sum of kube-apiserver's apiserver_request_total
// counters: every request it has finished, of every verb and resource.
func (b *bench) apiRequests(ctx context.Context) (float64, error) {
	data, err := b.c.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("read kube-apiserver metrics: %w", err)
	}
	var sum float64
	found := false
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("parse %q: %w", line, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		return 0, errors.New("kube-apiserver metrics have no apiserver_request_total")
	}
	return sum, nil
}
