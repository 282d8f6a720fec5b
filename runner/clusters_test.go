package runner

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/internal/testutil"
)

// Tests of the clients and pod watches forwards share, with real forwards
// against a fake API server that the test can stall.

// fakeAPI is an API server with namespaces, no pods and in each namespace
// a StatefulSet db: enough for the access check, a pod watch and target
// look-ups. Tests stall it at the access check (hold) or at the watch
// (stallWatch), as an API server that stops answering, or forbid listing
// StatefulSets.
type fakeAPI struct {
	t          *testing.T
	srv        *httptest.Server
	kubeconfig string
	quit       chan struct{} // closed at cleanup: every stalled request returns

	mu         sync.Mutex
	checks     map[string]int // access checks begun, by namespace
	watches    map[string]int // watch requests open, by namespace
	hold       chan struct{}  // if not nil, access checks wait until it is closed
	stallWatch bool           // watch requests never answer
	forbidList bool           // listing (and watching) StatefulSets is forbidden
	stsGets    int            // GETs of a StatefulSet
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	a := &fakeAPI{t: t, quit: make(chan struct{}), checks: map[string]int{}, watches: map[string]int{}}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(func() {
		close(a.quit)
		a.srv.CloseClientConnections()
		a.srv.Close()
	})
	a.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	content := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q}}]
users: [{name: fake, user: {token: fake}}]
contexts: [{name: fake, context: {cluster: fake, user: fake, namespace: default}}]
current-context: fake
`, a.srv.URL)
	if err := os.WriteFile(a.kubeconfig, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	// The user's own kubeconfig, which the files name: no approval needed
	// (trust_test.go tests those that do).
	t.Setenv("KUBECONFIG", a.kubeconfig)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	return a
}

func (a *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if strings.HasPrefix(r.URL.Path, "/apis/apps/v1/") {
		a.serveApps(w, r)
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // api v1 namespaces NS [pods]
	if r.Method != http.MethodGet || len(parts) < 4 || parts[0] != "api" || parts[2] != "namespaces" {
		http.NotFound(w, r)
		return
	}
	ns, q := parts[3], r.URL.Query()
	switch {
	case len(parts) == 4:
		fmt.Fprintf(w, `{"kind":"Namespace","apiVersion":"v1","metadata":{"name":%q}}`, ns)
	case parts[4] != "pods":
		http.NotFound(w, r)
	case q.Get("watch") == "true" || q.Get("watch") == "1":
		a.mu.Lock()
		a.watches[ns]++
		stall := a.stallWatch
		a.mu.Unlock()
		defer func() {
			a.mu.Lock()
			a.watches[ns]--
			a.mu.Unlock()
		}()
		if !stall && q.Get("sendInitialEvents") == "true" {
			// No pods: the initial events end at once.
			fmt.Fprintln(w, `{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"1","annotations":{"k8s.io/initial-events-end":"true"}}}}`)
		}
		w.(http.Flusher).Flush()
		a.wait(r, nil)
	default: // a list: the access check asks for one pod
		if q.Get("limit") == "1" {
			a.mu.Lock()
			a.checks[ns]++
			hold := a.hold
			a.mu.Unlock()
			if hold != nil && !a.wait(r, hold) {
				return
			}
		}
		fmt.Fprint(w, `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}`)
	}
}

// serveApps serves the StatefulSet db of every namespace.
func (a *fakeAPI) serveApps(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // apis apps v1 namespaces NS statefulsets [NAME]
	if r.Method != http.MethodGet || len(parts) < 6 || parts[3] != "namespaces" || parts[5] != "statefulsets" {
		http.NotFound(w, r)
		return
	}
	ns, q := parts[4], r.URL.Query()
	sts := fmt.Sprintf(`{"kind":"StatefulSet","apiVersion":"apps/v1","metadata":{"name":"db","namespace":%q,"resourceVersion":"1"},"spec":{"selector":{"matchLabels":{"app":"db"}}}}`, ns)
	a.mu.Lock()
	forbid := a.forbidList
	if len(parts) == 7 {
		a.stsGets++
	}
	a.mu.Unlock()
	switch {
	case len(parts) == 7 && parts[6] == "db":
		fmt.Fprint(w, sts)
	case len(parts) == 7:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"statefulsets.apps %q not found"}`, parts[6])
	case forbid:
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"statefulsets.apps is forbidden"}`)
	case q.Get("watch") == "true" || q.Get("watch") == "1":
		if q.Get("sendInitialEvents") == "true" {
			fmt.Fprintf(w, `{"type":"ADDED","object":%s}`+"\n", sts)
			fmt.Fprintln(w, `{"type":"BOOKMARK","object":{"kind":"StatefulSet","apiVersion":"apps/v1","metadata":{"resourceVersion":"1","annotations":{"k8s.io/initial-events-end":"true"}}}}`)
		}
		w.(http.Flusher).Flush()
		a.wait(r, nil)
	default:
		fmt.Fprintf(w, `{"kind":"StatefulSetList","apiVersion":"apps/v1","metadata":{"resourceVersion":"1"},"items":[%s]}`, sts)
	}
}

// wait waits until release is closed (true), or the request or the server
// ends (false).
func (a *fakeAPI) wait(r *http.Request, release <-chan struct{}) bool {
	select {
	case <-release:
		return true
	case <-r.Context().Done():
	case <-a.quit:
	}
	return false
}

func (a *fakeAPI) count(m map[string]int, ns string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return m[ns]
}

// file is a forwards file on the fake API server: a pod forward per name,
// in the namespace given.
func (a *fakeAPI) file(forwards map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kubeconfig: %s\ndefaults:\n  reconnect: {initial: 20ms, max: 100ms}\nforwards:\n", a.kubeconfig)
	for name, ns := range forwards {
		fmt.Fprintf(&b, "  - name: %s\n    pod: %s\n    namespace: %s\n    ports: [\":80\"]\n", name, name, ns)
	}
	return b.String()
}

func (a *fakeAPI) statefulSetGets() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stsGets
}

// runReal runs a runner with real forwards on content until the test ends,
// or until stop; stop fails the test if Run does not return within 10s.
func runReal(t *testing.T, content string) (r *Runner, log *testutil.Buffer, write func(string), stop func()) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "forwards.yaml")
	write = func(content string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(content)
	log = &testutil.Buffer{}
	r = New(Options{File: file, Log: slog.New(slog.NewTextHandler(log, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("Run did not return within 10s of its context's end; goroutines:\n%s", stacks())
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-r.Loaded():
	case <-time.After(10 * time.Second):
		t.Fatal("the file was not loaded within 10s")
	}
	return r, log, write, stop
}

// started reports whether the named forward has been built and runs.
func started(r *Runner, name string) bool {
	r.mu.Lock()
	rf := r.forwards[name]
	r.mu.Unlock()
	if rf == nil {
		return false
	}
	f, _ := rf.state()
	return f != nil
}

func stacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// informerGoroutines counts the goroutines of client-go's informers.
func informerGoroutines() int {
	n := 0
	for _, g := range strings.Split(stacks(), "\n\n") {
		if strings.Contains(g, "k8s.io/client-go/tools/cache.") {
			n++
		}
	}
	return n
}

// 4. An API server that answers the access check and then never the
// watch holds the namespace's pod watch in its first sync: shutdown still
// returns at once, and leaves nothing running.
func TestShutdownWithStalledPodWatch(t *testing.T) {
	api := newFakeAPI(t)
	api.stallWatch = true
	before := goleak.IgnoreCurrent()
	r, _, _, stop := runReal(t, api.file(map[string]string{"a": "web", "b": "web"}))
	testutil.Eventually(t, 10*time.Second, "the pod watch's first request", func() bool { return api.count(api.watches, "web") > 0 })
	time.Sleep(200 * time.Millisecond) // both forwards wait on the watch by now
	for _, s := range r.Statuses() {
		if s.State == forward.Failed {
			t.Fatalf("forward %s failed while its pod watch syncs: %s", s.Name, s.LastError)
		}
	}
	begin := time.Now()
	stop()
	took := time.Since(begin)
	t.Logf("shutdown took %s", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("shutdown took %s with the pod watch stalled", took)
	}
	if n := api.count(api.watches, "web"); n != 0 {
		t.Errorf("%d watches still open on the API server after shutdown", n)
	}
	goleak.VerifyNone(t, before, goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"), goleak.IgnoreAnyFunction("net/http.(*conn).serve"))
}

// 4. The first forward on a namespace begins its pod watch; when it stops
// before the watch is ready, a forward waiting for the same watch is not
// failed with its context's end, and gets the watch once it is ready.
func TestStoppedForwardFailsNoOneWaitingOnItsWatch(t *testing.T) {
	api := newFakeAPI(t)
	hold := make(chan struct{})
	api.hold = hold
	r, log, write, _ := runReal(t, api.file(map[string]string{"first": "web"}))
	testutil.Eventually(t, 10*time.Second, "first's access check", func() bool { return api.count(api.checks, "web") == 1 })

	write(api.file(map[string]string{"first": "web", "second": "web"}))
	testutil.Eventually(t, 10*time.Second, "second to be added", func() bool { return len(r.Statuses()) == 2 })
	time.Sleep(200 * time.Millisecond) // second waits on the watch by now
	write(api.file(map[string]string{"second": "web"}))
	testutil.Eventually(t, 10*time.Second, "first to be removed", func() bool { return len(r.Statuses()) == 1 })
	time.Sleep(300 * time.Millisecond) // an error would be second's status by now
	if s := r.Statuses()[0]; s.State == forward.Failed || strings.Contains(log.String(), "context canceled") {
		t.Fatalf("second is %s (%q) after first stopped while both waited on the watch; log:\n%s", s.State, s.LastError, log.String())
	}
	close(hold)
	testutil.Eventually(t, 10*time.Second, "second's forward to start", func() bool { return started(r, "second") })
	if n := api.count(api.checks, "web"); n != 1 {
		t.Errorf("%d access checks, want 1: the watch was begun again", n)
	}
}

// 8. When its last forward stops, a namespace's pod watch stops: its
// informer's goroutines end and the API server sees the watch closed.
func TestLastForwardStopsPodWatch(t *testing.T) {
	api := newFakeAPI(t)
	// A forward that cannot start keeps the file valid without a watch.
	keep := "  - name: keep\n    pod: keep\n    context: missing\n    ports: [\":80\"]\n"
	r, _, write, _ := runReal(t, api.file(map[string]string{"a": "web", "b": "web", "c": "db"})+keep)
	testutil.Eventually(t, 10*time.Second, "a watch on web and on db", func() bool {
		return api.count(api.watches, "web") == 1 && api.count(api.watches, "db") == 1
	})
	if n := informerGoroutines(); n == 0 {
		t.Fatal("no informer goroutines while two pod watches run")
	}

	write(api.file(map[string]string{"b": "web", "c": "db"}) + keep)
	testutil.Eventually(t, 10*time.Second, "a removed", func() bool { return len(r.Statuses()) == 3 })
	time.Sleep(200 * time.Millisecond)
	if api.count(api.watches, "web") != 1 {
		t.Fatal("web's pod watch stopped while b still uses it")
	}

	write(api.file(map[string]string{"c": "db"}) + keep)
	testutil.Eventually(t, 10*time.Second, "web's watch closed on the API server", func() bool { return api.count(api.watches, "web") == 0 })
	write("forwards:\n" + keep)
	testutil.Eventually(t, 10*time.Second, "db's watch closed on the API server", func() bool { return api.count(api.watches, "db") == 0 })
	testutil.Eventually(t, 10*time.Second, "the informers' goroutines to end", func() bool { return informerGoroutines() == 0 })
	// The forward lets go of its watch, then of its client: the watch may
	// be seen closed a moment before the client is let go.
	testutil.Eventually(t, 10*time.Second, "no pod watch, client or target cache kept with no forward using it", func() bool {
		r.clusters.mu.Lock()
		defer r.clusters.mu.Unlock()
		return len(r.clusters.watches) == 0 && len(r.clusters.clients) == 0 && len(r.clusters.targets) == 0
	})
}

// stsFile is a forwards file of n forwards to the StatefulSet db in
// namespace web.
func (a *fakeAPI) stsFile(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kubeconfig: %s\nforwards:\n", a.kubeconfig)
	for i := range n {
		fmt.Fprintf(&b, "  - name: f%02d\n    statefulset: db\n    namespace: web\n    ports: [\":80\"]\n", i)
	}
	return b.String()
}

// waitResolved waits until all n forwards have looked their StatefulSet
// up, and wait for a pod (the fake API server has none) without an error.
func waitResolved(t *testing.T, r *Runner, n int) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("%d forwards waiting for a pod", n), func() bool {
		waiting := 0
		for _, s := range r.Statuses() {
			if s.State == forward.WaitingForPod && s.LastError == "" {
				waiting++
			}
		}
		return waiting == n
	})
}

// 9. Forwards look their workload up in one cache per namespace and kind,
// not with a GET each, at start and on every reconnect; the cache stops
// with its last forward.
func TestTargetLookupsFromOneCache(t *testing.T) {
	api := newFakeAPI(t)
	r, _, write, _ := runReal(t, api.stsFile(20))
	waitResolved(t, r, 20)
	if n := api.statefulSetGets(); n != 0 {
		t.Fatalf("%d GETs of the StatefulSet by 20 forwards, want 0: they share a cache", n)
	}
	targets := func() int {
		r.clusters.mu.Lock()
		defer r.clusters.mu.Unlock()
		return len(r.clusters.targets)
	}
	if n := targets(); n != 1 {
		t.Fatalf("%d target caches for one kind in one namespace, want 1", n)
	}
	write(api.file(map[string]string{"web": "web"}))
	testutil.Eventually(t, 10*time.Second, "the cache to stop with its last forward", func() bool { return targets() == 0 })
}

// 9. One who may get a StatefulSet but not list StatefulSets keeps
// forwarding to it: each forward gets its own.
func TestTargetLookupsWithoutListing(t *testing.T) {
	api := newFakeAPI(t)
	api.forbidList = true
	r, _, _, _ := runReal(t, api.stsFile(3))
	waitResolved(t, r, 3)
	if n := api.statefulSetGets(); n < 3 {
		t.Fatalf("%d GETs of the StatefulSet by 3 forwards not allowed to list, want one each at least", n)
	}
}
