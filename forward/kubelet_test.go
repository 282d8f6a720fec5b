package forward

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clientportforward "k8s.io/client-go/tools/portforward"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/klog/v2"
)

// fakeKubelet is an in-process stand-in for the API server and kubelet on
// the port-forward path: the upstream kubelet streaming server
// (ServePortForward) behind httptest, for both transports. WebSocket
// requests are unwrapped the way the API server does it (the SPDY
// connection runs inside binary WebSocket messages). Each pod's ports are
// real TCP backends on loopback.
type fakeKubelet struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	pods      map[string]*corev1.Pod
	backends  map[string]map[int32]string // pod → container port → backend address
	gone      map[string]bool             // pods answering 404
	noWS      bool                        // answer WebSocket upgrades like an API server without them
	fail      bool                        // answer every upgrade with 500
	requests  []request
	conns     map[*gateConn]bool
	frozen    chan struct{} // non-nil while frozen: reads on existing connections block
	frozenSet map[*gateConn]bool
}

type request struct {
	at        time.Time
	pod       string
	websocket bool
}

func newFakeKubelet(t *testing.T) *fakeKubelet {
	k := &fakeKubelet{t: t, pods: map[string]*corev1.Pod{}, backends: map[string]map[int32]string{}, gone: map[string]bool{}, conns: map[*gateConn]bool{}}
	k.srv = httptest.NewUnstartedServer(http.HandlerFunc(k.serve))
	k.srv.Listener = &gateListener{Listener: k.srv.Listener, k: k}
	k.srv.Start()
	t.Cleanup(k.close)
	return k
}

// env returns what a forward needs to talk to this kubelet.
func (k *fakeKubelet) env(pods Pods, log *testLog) Env {
	cfg := &rest.Config{Host: k.srv.URL}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		k.t.Fatal(err)
	}
	return Env{Config: cfg, Client: client, Namespace: "ns", Pods: pods, Log: log.logger()}
}

// addPod starts one backend per port: "echo" echoes, "http" answers any
// request with the pod's name, "reply" reads to EOF, then answers how many
// bytes it got and closes, "bytes" reads a decimal count N and a newline,
// then sends N bytes (byte i is i%251) and closes, "silent" reads and
// never writes nor closes. It returns the pod, Running and Ready.
func (k *fakeKubelet) addPod(name string, created time.Time, ports map[string]int32) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID(name + "-" + strconv.FormatInt(created.UnixNano(), 10)),
			Labels: map[string]string{"app": "web"}, CreationTimestamp: metav1.NewTime(created)},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	var cps []corev1.ContainerPort
	k.mu.Lock()
	defer k.mu.Unlock()
	k.backends[name] = map[int32]string{}
	for kind, port := range ports {
		cps = append(cps, corev1.ContainerPort{Name: kind, ContainerPort: port})
		k.backends[name][port] = k.backend(name, kind)
	}
	pod.Spec.Containers = []corev1.Container{{Name: "app", Ports: cps}}
	k.pods[name] = pod
	return pod
}

func (k *fakeKubelet) backend(pod, kind string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		k.t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
		quit  = make(chan struct{})
	)
	k.t.Cleanup(func() {
		ln.Close()
		close(quit)
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				switch kind {
				case "echo":
					io.Copy(c, c)
				case "http":
					http.ReadRequest(bufio.NewReader(c))
					body := pod + "\n"
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
				case "reply":
					n, _ := io.Copy(io.Discard, c)
					fmt.Fprintf(c, "got %d bytes", n)
				case "silent":
					io.Copy(io.Discard, c)
					<-quit // never writes, never closes: only the test's end ends it
				case "bytes":
					var n int64
					if _, err := fmt.Fscanf(bufio.NewReader(c), "%d\n", &n); err == nil {
						writePattern(c, n)
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// writePattern writes n bytes, byte i being i%251, so a reader can check
// every byte and its place.
func writePattern(w io.Writer, n int64) error {
	buf := make([]byte, 251*128)
	for i := range buf {
		buf[i] = byte(i % 251)
	}
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// streamCreationTimeout is how long the fake kubelet waits for both
// streams of a pair before it reports an error, as the kubelet does (30s
// there; short here so a test sees it).
const streamCreationTimeout = 2 * time.Second

// kubeletErrors records the errors logged through klog in this process:
// cri-streaming reports through klog (k8s.io/streaming/pkg/runtime's
// HandleError), so these are the lines a real kubelet would write to its
// log. Errors of the forward's own client-go count too.
var kubeletErrors struct {
	sync.Mutex
	list []string
}

func init() { klog.SetLogger(logr.New(errorSink{})) }

// errorSink is a logr sink that keeps errors and drops the rest.
type errorSink struct{}

func (errorSink) Init(logr.RuntimeInfo)            {}
func (errorSink) Enabled(int) bool                 { return false }
func (errorSink) Info(int, string, ...any)         {}
func (s errorSink) WithValues(...any) logr.LogSink { return s }
func (s errorSink) WithName(string) logr.LogSink   { return s }
func (errorSink) Error(err error, msg string, _ ...any) {
	kubeletErrors.Lock()
	defer kubeletErrors.Unlock()
	kubeletErrors.list = append(kubeletErrors.list, fmt.Sprintf("%s: %v", msg, err))
}

// kubeletErrorCount is how many errors the kubelet side has reported.
func kubeletErrorCount() int {
	kubeletErrors.Lock()
	defer kubeletErrors.Unlock()
	return len(kubeletErrors.list)
}

// kubeletErrorsSince returns the errors reported after the first n.
func kubeletErrorsSince(n int) []string {
	kubeletErrors.Lock()
	defer kubeletErrors.Unlock()
	return append([]string(nil), kubeletErrors.list[n:]...)
}

// PortForward is the kubelet's side: connect the data stream to the pod's port.
func (k *fakeKubelet) PortForward(ctx context.Context, pod, uid string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	k.mu.Lock()
	addr, ok := k.backends[pod][port]
	k.mu.Unlock()
	if !ok {
		return fmt.Errorf("failed to connect to localhost:%d inside namespace %q: connection refused", port, pod)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(stream, c)
		stream.Close() // half-close: the pod's side has ended
	}()
	io.Copy(c, stream)
	c.(*net.TCPConn).CloseWrite()
	<-done
	return nil
}

func (k *fakeKubelet) serve(w http.ResponseWriter, req *http.Request) {
	// /api/v1/namespaces/NS/pods/POD[/portforward]
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	if len(parts) == 6 && parts[4] == "pods" && req.Method == http.MethodGet {
		k.getPod(w, parts[5])
		return
	}
	if len(parts) != 7 || parts[6] != "portforward" {
		http.NotFound(w, req)
		return
	}
	pod, ws := parts[5], websocket.IsWebSocketUpgrade(req)
	k.mu.Lock()
	k.requests = append(k.requests, request{time.Now(), pod, ws})
	gone, noWS, fail := k.gone[pod], k.noWS, k.fail
	k.mu.Unlock()
	switch {
	case gone:
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("pods %q not found", pod))
		return
	case fail:
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, "injected failure")
		return
	case ws && !noWS:
		k.serveWebSocket(w, req, pod)
		return
	}
	// SPDY; or a WebSocket request to a server without the tunnelling
	// subprotocol, which only knows the channel protocol and refuses it.
	var opts *portforward.V4Options
	if ws {
		var err error
		if opts, err = portforward.NewV4Options(req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	portforward.ServePortForward(w, req, k, pod, "", opts, 0, streamCreationTimeout, []string{"portforward.k8s.io"})
}

func (k *fakeKubelet) getPod(w http.ResponseWriter, name string) {
	k.mu.Lock()
	pod, ok := k.pods[name]
	gone := k.gone[name]
	k.mu.Unlock()
	if !ok || gone {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("pods %q not found", name))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"kind":"Pod","apiVersion":"v1","metadata":{"name":%q,"namespace":"ns","uid":%q}}`, pod.Name, pod.UID)
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":%q,"reason":%q,"code":%d}`, msg, reason, code)
}

// serveWebSocket accepts the tunnelling subprotocol and serves SPDY inside it.
func (k *fakeKubelet) serveWebSocket(w http.ResponseWriter, req *http.Request, pod string) {
	up := websocket.Upgrader{Subprotocols: []string{"SPDY/3.1+portforward.k8s.io"}}
	ws, err := up.Upgrade(w, req, nil)
	if err != nil {
		return
	}
	conn := clientportforward.NewTunnelingConnection("server", ws)
	spdyReq := req.Clone(req.Context())
	spdyReq.Header = http.Header{}
	spdyReq.Header.Set("Connection", "Upgrade")
	spdyReq.Header.Set("Upgrade", "SPDY/3.1")
	spdyReq.Header.Set("X-Stream-Protocol-Version", "portforward.k8s.io")
	portforward.ServePortForward(&hijacked{conn: conn}, spdyReq, k, pod, "", nil, 0, streamCreationTimeout, []string{"portforward.k8s.io"})
}

// hijacked hands an already upgraded connection to the SPDY upgrader; the
// 101 it writes stays inside this process, as in the API server's tunnel.
type hijacked struct {
	conn   net.Conn
	header http.Header
}

func (h *hijacked) Header() http.Header {
	if h.header == nil {
		h.header = http.Header{}
	}
	return h.header
}
func (h *hijacked) Write(p []byte) (int, error) { return len(p), nil }
func (h *hijacked) WriteHeader(int)             {}
func (h *hijacked) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReader(h.conn), bufio.NewWriter(h.conn)), nil
}

// upgrades returns the upgrade requests seen so far.
func (k *fakeKubelet) upgrades() []request {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]request(nil), k.requests...)
}

func (k *fakeKubelet) set(f func(k *fakeKubelet)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f(k)
}

// freeze makes every open connection stop reading, like a peer that was
// SIGSTOPped; connections made afterwards work.
func (k *fakeKubelet) freeze() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.frozen = make(chan struct{})
	k.frozenSet = map[*gateConn]bool{}
	for c := range k.conns {
		k.frozenSet[c] = true
	}
}

func (k *fakeKubelet) thaw() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.frozen != nil {
		close(k.frozen)
		k.frozen, k.frozenSet = nil, nil
	}
}

// drop closes every open connection, as a restarting API server would.
func (k *fakeKubelet) drop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for c := range k.conns {
		c.Conn.Close()
	}
}

func (k *fakeKubelet) close() {
	k.thaw()
	k.drop()
	k.srv.Close()
}

// gateListener tracks the server's connections so tests can freeze or drop them.
type gateListener struct {
	net.Listener
	k *fakeKubelet
}

func (l *gateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	g := &gateConn{Conn: c, k: l.k}
	l.k.mu.Lock()
	l.k.conns[g] = true
	l.k.mu.Unlock()
	return g, nil
}

type gateConn struct {
	net.Conn
	k *fakeKubelet
}

// Read holds what it read while the connection is frozen, also when the
// read began before the freeze, as a stopped process would.
func (c *gateConn) Read(p []byte) (int, error) {
	c.wait()
	n, err := c.Conn.Read(p)
	c.wait()
	return n, err
}

func (c *gateConn) wait() {
	c.k.mu.Lock()
	gate := c.k.frozen
	if !c.k.frozenSet[c] {
		gate = nil
	}
	c.k.mu.Unlock()
	if gate != nil {
		<-gate
	}
}

func (c *gateConn) Close() error {
	c.k.mu.Lock()
	delete(c.k.conns, c)
	c.k.mu.Unlock()
	return c.Conn.Close()
}

// fakePods is a Pods the test edits directly.
type fakePods struct {
	mu      sync.Mutex
	pods    map[string]*corev1.Pod
	changed chan struct{}
}

func newFakePods(pods ...*corev1.Pod) *fakePods {
	p := &fakePods{pods: map[string]*corev1.Pod{}, changed: make(chan struct{})}
	for _, pod := range pods {
		p.pods[pod.Name] = pod
	}
	return p
}

func (p *fakePods) List(sel labels.Selector) []*corev1.Pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*corev1.Pod
	for _, pod := range p.pods {
		if sel.Matches(labels.Set(pod.Labels)) {
			out = append(out, pod)
		}
	}
	return out
}

func (p *fakePods) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// update applies f to the pod set and tells the forward.
func (p *fakePods) update(f func(pods map[string]*corev1.Pod)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p.pods)
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *fakePods) put(pod *corev1.Pod) {
	p.update(func(pods map[string]*corev1.Pod) { pods[pod.Name] = pod })
}

// unready returns a copy of pod that is no longer Ready.
func unready(pod *corev1.Pod) *corev1.Pod {
	c := pod.DeepCopy()
	c.Status.Conditions[0].Status = corev1.ConditionFalse
	return c
}
