package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/internal/testutil"
)

// Fast tests of the runner's lifecycle with stand-in forwards; e2e/ runs
// the same behaviours with real forwards against a real API server.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeForward is a forward that only records what the runner did to it.
type fakeForward struct {
	spec      config.Forward
	started   time.Time
	active    atomic.Int64
	accepting atomic.Bool
	stopped   chan struct{} // closed when Run returns
	stoppedAt time.Time     // set before stopped is closed
	linger    time.Duration // how long Run takes to return once its context ends
	stopping  atomic.Bool   // its context has ended
}

func (f *fakeForward) Run(ctx context.Context) error {
	<-ctx.Done()
	f.stopping.Store(true)
	time.Sleep(f.linger) // a real forward says goodbye to its tunnel
	f.stoppedAt = time.Now()
	close(f.stopped)
	return nil
}

func (f *fakeForward) Status() forward.Status {
	return forward.Status{Name: f.spec.Name, State: forward.Active, Active: f.active.Load(),
		Addresses: []string{fmt.Sprintf("127.0.0.1:%d", f.spec.Ports[0].Local)}}
}

func (f *fakeForward) StopAccepting() { f.accepting.Store(false) }

func (f *fakeForward) isStopped() bool {
	select {
	case <-f.stopped:
		return true
	default:
		return false
	}
}

type harness struct {
	t      *testing.T
	file   string
	log    *testutil.Buffer
	out    *testutil.Buffer
	reload chan struct{}
	r      *Runner
	stop   func() error

	mu      sync.Mutex
	started []*fakeForward
	onStart func(config.Forward) // called at every start attempt, if set
	linger  time.Duration        // the forwards started from now on take this long to stop
}

// run writes content to a new forwards file and runs a runner on it.
// Each of options is applied to the runner before it runs.
func run(t *testing.T, content string, grace time.Duration, options ...func(*Runner)) *harness {
	t.Helper()
	file := filepath.Join(t.TempDir(), "forwards.yaml")
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return runAt(t, file, grace, options...)
}

// runAt runs a runner on an existing forwards file until the test ends,
// with fake forwards; those whose context is "missing" cannot start. It
// returns once the start summary is printed.
func runAt(t *testing.T, file string, grace time.Duration, options ...func(*Runner)) *harness {
	t.Helper()
	content, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, file: file, log: &testutil.Buffer{}, out: &testutil.Buffer{}, reload: make(chan struct{})}
	h.r = New(Options{File: file, Out: h.out, Log: slog.New(slog.NewTextHandler(h.log, nil)), Reload: h.reload, Grace: grace})
	h.r.start = func(ctx, _ context.Context, spec config.Forward) (Forward, func(), error) {
		h.mu.Lock()
		onStart := h.onStart
		h.mu.Unlock()
		if onStart != nil {
			onStart(spec)
		}
		if spec.Context == "missing" {
			return nil, nil, errors.New(`context "missing" does not exist`)
		}
		h.mu.Lock()
		f := &fakeForward{spec: spec, started: time.Now(), stopped: make(chan struct{}), linger: h.linger}
		f.accepting.Store(true)
		h.started = append(h.started, f)
		h.mu.Unlock()
		return f, nil, nil
	}
	for _, o := range options {
		o(h.r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.r.Run(ctx) }()
	var once sync.Once
	h.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return 10s after its context ended")
			}
		})
		return err
	}
	t.Cleanup(func() { h.stop() })
	h.waitFor("the start summary", func() bool { return strings.Count(h.out.String(), "\n") >= strings.Count(string(content), "name:") })
	return h
}

// forwardsFile is a file with a pod forward per name, on the given local port.
func forwardsFile(ports map[string]int, extra ...string) string {
	names := make([]string, 0, len(ports))
	for n := range ports {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("forwards:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  - name: %s\n    pod: %s\n    ports: [\"%d:80\"]\n", n, n, ports[n])
	}
	for _, e := range extra {
		b.WriteString(e)
	}
	return b.String()
}

func (h *harness) write(content string) {
	h.t.Helper()
	if err := os.WriteFile(h.file, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s; log:\n%s", what, h.log.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// current returns the running instance of each forward, by name.
func (h *harness) current() map[string]*fakeForward {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := map[string]*fakeForward{}
	for _, f := range h.started {
		if !f.isStopped() {
			m[f.spec.Name] = f
		}
	}
	return m
}

func (h *harness) startCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.started)
}

func (h *harness) reloads() int { return strings.Count(h.log.String(), "msg=reloaded") }

// 1. Every forward starts; one that cannot start is reported with its
// reason and the others run.
func TestStartIsolatesFailures(t *testing.T) {
	h := run(t, forwardsFile(map[string]int{"a": 9001, "c": 9003},
		"  - name: b\n    pod: b\n    context: missing\n    ports: [\"9002:80\"]\n"), 0)
	if got := h.current(); len(got) != 2 || got["a"] == nil || got["c"] == nil {
		t.Fatalf("running %v, want a and c", got)
	}
	var states []string
	for _, s := range h.r.Statuses() {
		states = append(states, fmt.Sprintf("%s=%s %s", s.Name, s.State, s.LastError))
	}
	want := []string{"a=active ", `b=failed context "missing" does not exist`, "c=active "}
	if strings.Join(states, "|") != strings.Join(want, "|") {
		t.Fatalf("statuses %q, want %q", states, want)
	}
	out := h.out.String()
	for _, line := range []string{"a                    127.0.0.1:9001 -> pod/a", `b                    (not running: context "missing" does not exist) -> pod/b`} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("summary lacks %q:\n%s", line, out)
		}
	}
	if !strings.Contains(h.log.String(), `msg="cannot start forward; retrying" forward=b`) {
		t.Errorf("no log line for b:\n%s", h.log.String())
	}
}

// 3. A reload is a diff by name: added start, removed stop, changed
// restart, unchanged are not touched; then the summary is printed again.
func TestReloadIsADiffByName(t *testing.T) {
	h := run(t, forwardsFile(map[string]int{"same": 9001, "changed": 9002, "removed": 9003}), 0)
	before := h.current()

	h.write(forwardsFile(map[string]int{"same": 9001, "changed": 9012, "added": 9004}))
	h.waitFor("the reload", func() bool { return h.reloads() == 1 && h.startCount() == 5 })
	after := h.current()
	if after["same"] != before["same"] {
		t.Error("the unchanged forward was restarted")
	}
	if !before["changed"].isStopped() || after["changed"] == nil || after["changed"].spec.Ports[0].Local != 9012 {
		t.Error("the changed forward was not restarted with its new spec")
	}
	if !before["removed"].isStopped() || after["removed"] != nil {
		t.Error("the removed forward still runs")
	}
	if after["added"] == nil {
		t.Error("the added forward did not start")
	}
	if h.startCount() != 5 {
		t.Errorf("%d starts, want 5 (3, then changed and added)", h.startCount())
	}
	if !strings.Contains(h.log.String(), `added=added removed=removed restarted=changed unchanged=1`) {
		t.Errorf("reload log line:\n%s", h.log.String())
	}
	h.waitFor("the second summary", func() bool {
		return strings.Contains(h.out.String(), "added                127.0.0.1:9004 -> pod/added")
	})
}

// 2. Every way of saving a file is seen: in place, truncate and write, cp
// over it, an editor's rename over it, and a ConfigMap's symlink swap.
func TestReloadOnEverySave(t *testing.T) {
	saves := map[string]func(t *testing.T, path, content string){
		"write in place": func(t *testing.T, path, content string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.WriteString(content) // the new content is longer
		},
		"truncate and write": func(t *testing.T, path, content string) {
			os.WriteFile(path, []byte(content), 0o644)
		},
		"cp over it": func(t *testing.T, path, content string) {
			src := filepath.Join(t.TempDir(), "new.yaml")
			os.WriteFile(src, []byte(content), 0o644)
			if out, err := exec.Command("cp", src, path).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
		},
		"rename over it": func(t *testing.T, path, content string) {
			tmp := path + ".tmp~"
			os.WriteFile(tmp, []byte(content), 0o644)
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, save := range saves {
		t.Run(name, func(t *testing.T) {
			h := run(t, forwardsFile(map[string]int{"a": 9001}), 0)
			begin := time.Now()
			save(t, h.file, forwardsFile(map[string]int{"a": 9001, "b": 9002}))
			h.waitFor("forward b", func() bool { return h.current()["b"] != nil })
			t.Logf("saved to started in %s", h.current()["b"].started.Sub(begin))
		})
	}
	t.Run("configmap symlink swap", func(t *testing.T) {
		// As the kubelet mounts a ConfigMap: forwards.yaml -> ..data/forwards.yaml,
		// ..data -> ..v1; an update writes ..v2 and renames a new ..data link over the old.
		dir := t.TempDir()
		version := func(name, content string) {
			os.MkdirAll(filepath.Join(dir, name), 0o755)
			os.WriteFile(filepath.Join(dir, name, "forwards.yaml"), []byte(content), 0o644)
		}
		version("..v1", forwardsFile(map[string]int{"a": 9001}))
		os.Symlink("..v1", filepath.Join(dir, "..data"))
		os.Symlink("..data/forwards.yaml", filepath.Join(dir, "forwards.yaml"))

		h2 := runAt(t, filepath.Join(dir, "forwards.yaml"), 0)
		version("..v2", forwardsFile(map[string]int{"a": 9001, "b": 9002}))
		os.Symlink("..v2", filepath.Join(dir, "..data_tmp"))
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(filepath.Join(dir, "..v1"))
		h2.waitFor("forward b", func() bool { return h2.current()["b"] != nil })
		if h2.current()["a"].isStopped() || h2.startCount() != 2 {
			t.Error("the unchanged forward was restarted")
		}
	})
}

// 4. An invalid edit changes nothing and says where and what; the next
// change is applied.
func TestBadEditChangesNothing(t *testing.T) {
	h := run(t, forwardsFile(map[string]int{"a": 9001, "b": 9002}), 0)
	before := h.current()
	h.write(forwardsFile(map[string]int{"a": 9001}) + "  - name: c\n    pod: c\n    prots: [\"9003:80\"]\n")
	h.waitFor("the error", func() bool { return strings.Contains(h.log.String(), "invalid forwards file") })
	if !strings.Contains(h.log.String(), h.file+`:7:5: unknown key \"prots\"`) {
		t.Fatalf("the log does not say file:line:col and what:\n%s", h.log.String())
	}
	time.Sleep(100 * time.Millisecond)
	if got := h.current(); len(got) != 2 || got["a"] != before["a"] || got["b"] != before["b"] || h.startCount() != 2 {
		t.Fatalf("a bad edit changed the forwards: %v", got)
	}

	h.write(forwardsFile(map[string]int{"a": 9001, "c": 9003}))
	h.waitFor("the fixed file applied", func() bool { return h.current()["c"] != nil && h.current()["b"] == nil })
	if h.current()["a"] != before["a"] {
		t.Error("the unchanged forward was restarted")
	}
}

// 4. A deleted file keeps everything running and says so; re-creating it
// reloads.
func TestDeletedFileKeepsForwards(t *testing.T) {
	h := run(t, forwardsFile(map[string]int{"a": 9001}), 0)
	a := h.current()["a"]
	if err := os.Remove(h.file); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the warning", func() bool { return strings.Contains(h.log.String(), "the forwards file is gone") })
	time.Sleep(100 * time.Millisecond)
	if a.isStopped() {
		t.Fatal("deleting the file stopped a forward")
	}
	h.write(forwardsFile(map[string]int{"a": 9001, "b": 9002}))
	h.waitFor("forward b", func() bool { return h.current()["b"] != nil })
	if h.current()["a"] != a {
		t.Error("the unchanged forward was restarted")
	}
}

// 1. A cause shared by many forwards (no kubeconfig, an unknown context)
// is logged once, not once per forward; each forward's status still says it.
func TestStartErrorSaidOnce(t *testing.T) {
	var extra strings.Builder
	for i, n := range []string{"b", "c", "d"} {
		fmt.Fprintf(&extra, "  - name: %s\n    pod: %s\n    context: missing\n    ports: [\"%d:80\"]\n", n, n, 9100+i)
	}
	h := run(t, forwardsFile(map[string]int{"a": 9001}, extra.String()), 0)
	h.waitFor("every start to fail", func() bool {
		failed := 0
		for _, s := range h.r.Statuses() {
			if s.State == forward.Failed && s.LastError == `context "missing" does not exist` {
				failed++
			}
		}
		return failed == 3
	})
	if n := strings.Count(h.log.String(), `level=ERROR msg="cannot start forward; retrying"`); n != 1 {
		t.Errorf("%d error lines for one cause shared by 3 forwards, want 1:\n%s", n, h.log.String())
	}
	if n := strings.Count(h.out.String(), "(not running: see the error above)"); n != 3 || strings.Contains(h.out.String(), `"missing"`) {
		t.Errorf("the summary repeats the shared cause (%d lines point to the log, want 3):\n%s", n, h.out.String())
	}
}

// 2. A burst of writes is one reload, of the last content.
func TestReloadDebounced(t *testing.T) {
	// The burst must fit in the quiet period even on a loaded machine,
	// where 20 writes may not fit in the usual 30ms.
	const quiet = 500 * time.Millisecond
	h := run(t, forwardsFile(map[string]int{"a": 9001}), 0, func(r *Runner) { r.debounce = quiet })
	begin := time.Now()
	for i := range 20 {
		h.write(forwardsFile(map[string]int{"a": 9001, "b": 9100 + i}))
	}
	if took := time.Since(begin); took > quiet/2 {
		t.Skipf("20 writes took %s: not one burst within the quiet period %s", took, quiet)
	}
	h.waitFor("the last content", func() bool { f := h.current()["b"]; return f != nil && f.spec.Ports[0].Local == 9119 })
	time.Sleep(2 * quiet) // a second reload would come by now
	if n := h.reloads(); n != 1 {
		t.Fatalf("%d reloads for one burst of 20 writes, want 1:\n%s", n, h.log.String())
	}
	if n := h.startCount(); n != 2 {
		t.Fatalf("%d forwards started, want 2 (a, then b with the last content): an intermediate content was applied", n)
	}
}

// 2. A save made while the one before is still being applied (stopping a
// forward takes as long as its tunnel's goodbye) is read while it is on
// disk: a valid save followed by a bad one, both during the apply, ends
// with the valid one applied and the bad one refused. Read only once the
// apply is done, the valid one would never be seen.
func TestReloadReadsWhileApplying(t *testing.T) {
	h := run(t, forwardsFile(map[string]int{"a": 9001}), 0)
	h.mu.Lock()
	h.linger = time.Second
	h.mu.Unlock()
	h.write(forwardsFile(map[string]int{"b": 9002})) // a stops at once; b will take a second
	h.waitFor("b", func() bool { return h.current()["b"] != nil })
	h.write(forwardsFile(map[string]int{"c": 9003})) // b stops: this apply takes a second
	b := h.current()["b"]
	h.waitFor("b stopping", b.stopping.Load)
	h.write(forwardsFile(map[string]int{"d": 9004})) // during the apply
	time.Sleep(300 * time.Millisecond)               // the debounce, many times over: it is read
	h.write(forwardsFile(map[string]int{"d": 9004}) + "  - name: e\n    pod: e\n    prots: [\"9005:80\"]\n")
	h.waitFor("the refusal", func() bool {
		r := h.r.Snapshot().LastReload
		return !r.Successful && len(r.Errors) == 1
	})
	time.Sleep(1500 * time.Millisecond) // c's stop, if d's file was read
	if d := h.current()["d"]; d == nil || len(h.current()) != 1 {
		t.Fatalf("running %v after a valid save and a bad one during an apply, want d: the valid save was never read; log:\n%s", slices.Collect(maps.Keys(h.current())), h.log.String())
	}
	if s := h.r.Snapshot(); s.LastApply.After(s.LastReload.At) || !strings.Contains(s.LastReload.Errors[0], `unknown key "prots"`) {
		t.Errorf("applied at %s, last reload %+v: want d's file applied, then the bad save refused", s.LastApply, s.LastReload)
	}
}

// 2. A reload signal re-reads the file even if it did not change, which
// retries forwards that could not start.
func TestReloadSignal(t *testing.T) {
	// b fails and, by its backoff, would not try again within the test:
	// only the reload can make it try again.
	h := run(t, forwardsFile(map[string]int{"a": 9001}, "  - name: b\n    pod: b\n    context: missing\n    reconnect: {initial: 1h, max: 1h}\n    ports: [\"9002:80\"]\n"), 0)
	a := h.current()["a"]
	h.waitFor("b to fail", func() bool { return h.r.Snapshot().Forwards[1].State == forward.Failed })
	var mu sync.Mutex
	var tried []string
	h.mu.Lock()
	h.onStart = func(s config.Forward) {
		mu.Lock()
		tried = append(tried, s.Name)
		mu.Unlock()
	}
	h.mu.Unlock()
	triedNow := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(tried)
	}
	time.Sleep(100 * time.Millisecond)
	if got := triedNow(); len(got) != 0 {
		t.Fatalf("start attempts %q before the signal, want none", got)
	}

	select {
	case h.reload <- struct{}{}:
	case <-time.After(5 * time.Second):
		t.Fatal("the runner did not take the reload signal within 5s")
	}
	h.waitFor("b tried again", func() bool { return slices.Contains(triedNow(), "b") })
	last := h.r.Snapshot().LastReload
	if last.Trigger != TriggerSignal || !last.Successful || last.Restarted != 1 || last.Unchanged != 1 {
		t.Fatalf("last reload %+v, want a successful one on signal that restarted b and left a", last)
	}
	if !strings.Contains(h.log.String(), "reloading on signal") {
		t.Fatalf("no log line for the signal:\n%s", h.log.String())
	}
	if got := triedNow(); !slices.Equal(got, []string{"b"}) || h.current()["a"] != a {
		t.Fatalf("start attempts %q, a restarted: %v; want b retried once and a untouched", got, h.current()["a"] != a)
	}
}

// 7. Shutdown stops accepting first, waits for open connections up to the
// grace period, then stops every forward.
func TestShutdownGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	t.Run("connections outlast the grace period", func(t *testing.T) {
		h := run(t, forwardsFile(map[string]int{"a": 9001}), grace)
		a := h.current()["a"]
		a.active.Store(1)
		begin := time.Now()
		if err := h.stop(); err != nil {
			t.Fatal(err)
		}
		took := time.Since(begin)
		if a.accepting.Load() || !a.isStopped() {
			t.Fatal("the forward still accepts or runs")
		}
		if ran := a.stoppedAt.Sub(begin); ran < grace {
			t.Fatalf("the forward was stopped %s after the signal, before the grace period %s ended", ran, grace)
		}
		if took < grace || took > grace+time.Second {
			t.Fatalf("shutdown took %s, want the grace period %s", took, grace)
		}
	})
	t.Run("connections end early", func(t *testing.T) {
		h := run(t, forwardsFile(map[string]int{"a": 9001}), 10*time.Second)
		a := h.current()["a"]
		a.active.Store(1)
		time.AfterFunc(100*time.Millisecond, func() { a.active.Store(0) })
		begin := time.Now()
		h.stop()
		if took := time.Since(begin); took > 2*time.Second {
			t.Fatalf("shutdown took %s after the last connection ended at 100ms", took)
		}
	})
}

// An invalid file at start is an error with every problem, and starts nothing.
func TestInvalidFileAtStart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "forwards.yaml")
	os.WriteFile(file, []byte("forwards:\n  - pod: a\n    ports: [\"x\"]\n"), 0o644)
	r := New(Options{File: file})
	r.start = func(context.Context, context.Context, config.Forward) (Forward, func(), error) {
		t.Fatal("started a forward from an invalid file")
		return nil, nil, nil
	}
	err := r.Run(context.Background())
	if errs := config.Errors(err); len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), file+":3:13: ") {
		t.Fatalf("error %v", err)
	}
}

// 1. A forward that cannot start is retried by itself, says why once, and
// starts when the cause goes away.
func TestFailedStartRetried(t *testing.T) {
	file := filepath.Join(t.TempDir(), "forwards.yaml")
	os.WriteFile(file, []byte(forwardsFile(map[string]int{"a": 9001}, "defaults:\n  reconnect: {initial: 10ms, max: 20ms}\n")), 0o644)
	log := &testutil.Buffer{}
	r := New(Options{File: file, Log: slog.New(slog.NewTextHandler(log, nil))})
	var tries atomic.Int32
	r.start = func(ctx, _ context.Context, spec config.Forward) (Forward, func(), error) {
		if tries.Add(1) < 5 {
			return nil, nil, errors.New("dial tcp 10.0.0.1:6443: i/o timeout")
		}
		f := &fakeForward{spec: spec, stopped: make(chan struct{})}
		return f, nil, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	h := &harness{t: t, log: log}
	h.waitFor("the forward to start", func() bool { s := r.Statuses(); return len(s) == 1 && s[0].State == forward.Active })
	if n := strings.Count(log.String(), "i/o timeout"); n != 1 {
		t.Errorf("the same start error logged %d times, want once:\n%s", n, log.String())
	}
	if !strings.Contains(log.String(), "msg=\"forward started\" forward=a") {
		t.Errorf("no line saying it started after all:\n%s", log.String())
	}
}

// Reload answers with what it did, stamped and named; once Run has
// returned it fails at once instead of waiting for a reader.
func TestReloadResult(t *testing.T) {
	h := run(t, forwardsFile(map[string]int{"a": 9001}), 0)
	h.write(forwardsFile(map[string]int{"a": 9001, "b": 9002}))
	h.waitFor("b", func() bool { return h.current()["b"] != nil })
	before := time.Now()
	res, err := h.r.Reload(context.Background())
	if err != nil || !res.Successful || res.At.Before(before) || res.Unchanged != 2 || res.Trigger != TriggerRequest {
		t.Errorf("Reload = %+v, %v", res, err)
	}
	if last := h.r.Snapshot().LastReload; !last.At.Equal(res.At) {
		t.Errorf("the snapshot's last reload at %s, Reload said %s", last.At, res.At)
	}
	h.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.r.Reload(ctx); !errors.Is(err, errStopped) {
		t.Errorf("Reload after Run returned: %v, want %v", err, errStopped)
	}
}
