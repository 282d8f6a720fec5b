// Package fakekubelet is the stand-in for the API server and kubelet on
// the port-forward path that package forward's tests run against: the
// upstream kubelet streaming server (cri-streaming's ServePortForward)
// behind an httptest server on loopback, for both transports. WebSocket
// requests are unwrapped the way the API server does it (the SPDY
// connection runs inside binary WebSocket messages).
//
// It runs as a process of its own, built without the race detector, so
// that the server side's code (spdystream, cri-streaming: not kforward's)
// is neither instrumented nor counted in the tests' leak checks: a data
// race inside spdystream's server session failed forward's tests under
// -race (see forward/kubelet_test.go).
//
// The test process runs command fakekubelet (cmd/fakekubelet, which calls
// Run) and drives it with one JSON Command per line on stdin, reading one
// JSON Reply per line on file descriptor 3; the first reply is the
// server's URL. It ends when told to close, or when stdin ends (its test
// process died).
package fakekubelet

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientportforward "k8s.io/client-go/tools/portforward"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/klog/v2"
)

// Command is one line on stdin.
type Command struct {
	Op string `json:"op"` // pod, state, requests, errors, freeze, thaw, drop, reset, close

	// pod: a pod the API server knows, and where each of its ports is
	// served. freeze: only the connections carrying this pod's tunnels.
	Pod      string           `json:"pod,omitempty"`
	UID      string           `json:"uid,omitempty"`
	Backends map[int32]string `json:"backends,omitempty"`

	// state: how upgrades are answered.
	NoWS bool     `json:"noWS,omitempty"` // answer WebSocket upgrades like an API server without them
	Fail bool     `json:"fail,omitempty"` // answer every upgrade with 500
	Gone []string `json:"gone,omitempty"` // pods answering 404
	// pods answering 500 "error dialing backend", as the API server does
	// for a pod whose node's kubelet it cannot reach
	Unreachable []string `json:"unreachable,omitempty"`
	// answer every upgrade with 503 and a Content-Length far beyond the
	// body sent, then send nothing more while the client waits
	Stall bool `json:"stall,omitempty"`

	// errors: those after the first Since.
	Since int `json:"since,omitempty"`
}

// Reply is one line on file descriptor 3.
type Reply struct {
	URL      string    `json:"url,omitempty"`
	Error    string    `json:"error,omitempty"`
	Requests []Request `json:"requests,omitempty"`
	Errors   []string  `json:"errors,omitempty"`
}

// Request is a port-forward upgrade request the server saw.
type Request struct {
	At        time.Time `json:"at"`
	Pod       string    `json:"pod"`
	WebSocket bool      `json:"websocket"`
}

// StreamCreationTimeout is how long the kubelet waits for both streams of
// a pair before it reports an error (30s in the kubelet; short here, so a
// test sees it).
const StreamCreationTimeout = 2 * time.Second

// Run serves until told to close or until commands ends.
func Run(commands io.Reader, replies io.Writer) error {
	enc := json.NewEncoder(replies)
	k := newKubelet()
	klog.SetLogger(logr.New(errorSink{k}))
	defer k.close()
	if err := enc.Encode(Reply{URL: k.srv.URL}); err != nil {
		return err
	}
	in := bufio.NewScanner(commands)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	for in.Scan() {
		var cmd Command
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			return fmt.Errorf("command %q: %w", in.Text(), err)
		}
		reply := k.do(cmd)
		if err := enc.Encode(reply); err != nil {
			return err
		}
		if cmd.Op == "close" {
			return nil
		}
	}
	return in.Err() // the commands ended: the test process is gone
}

type kubelet struct {
	srv *httptest.Server

	mu        sync.Mutex
	pods      map[string]string           // pod → UID
	backends  map[string]map[int32]string // pod → container port → backend address
	gone      map[string]bool
	unreach   map[string]bool
	noWS      bool
	fail      bool
	stall     bool
	requests  []Request
	errors    []string
	conns     map[*gateConn]bool
	frozen    chan struct{} // non-nil while frozen: reads on existing connections block
	frozenSet map[*gateConn]bool
}

func newKubelet() *kubelet {
	k := &kubelet{pods: map[string]string{}, backends: map[string]map[int32]string{}, gone: map[string]bool{}, unreach: map[string]bool{}, conns: map[*gateConn]bool{}}
	k.srv = httptest.NewUnstartedServer(http.HandlerFunc(k.serve))
	// The handler learns its connection, to note which pod it carries.
	k.srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	k.srv.Listener = &gateListener{Listener: k.srv.Listener, k: k}
	k.srv.Start()
	return k
}

func (k *kubelet) do(cmd Command) Reply {
	switch cmd.Op {
	case "pod":
		k.mu.Lock()
		k.pods[cmd.Pod] = cmd.UID
		k.backends[cmd.Pod] = cmd.Backends
		k.mu.Unlock()
	case "state":
		k.mu.Lock()
		k.noWS, k.fail, k.stall, k.gone, k.unreach = cmd.NoWS, cmd.Fail, cmd.Stall, map[string]bool{}, map[string]bool{}
		for _, pod := range cmd.Gone {
			k.gone[pod] = true
		}
		for _, pod := range cmd.Unreachable {
			k.unreach[pod] = true
		}
		k.mu.Unlock()
	case "requests":
		k.mu.Lock()
		defer k.mu.Unlock()
		return Reply{Requests: append([]Request(nil), k.requests...)}
	case "errors":
		k.mu.Lock()
		defer k.mu.Unlock()
		if cmd.Since > len(k.errors) {
			return Reply{Error: fmt.Sprintf("%d errors asked past, %d recorded", cmd.Since, len(k.errors))}
		}
		return Reply{Errors: append([]string{}, k.errors[cmd.Since:]...)}
	case "freeze":
		k.freeze(cmd.Pod)
	case "thaw":
		k.thaw()
	case "drop":
		k.drop(false)
	case "reset":
		k.drop(true)
	case "close": // run closes the server once this is answered
	default:
		return Reply{Error: fmt.Sprintf("unknown command %q", cmd.Op)}
	}
	return Reply{}
}

// errorSink is a logr sink that keeps errors and drops the rest:
// cri-streaming reports through klog (k8s.io/streaming/pkg/runtime's
// HandleError), so these are the lines a real kubelet would write to its
// log.
type errorSink struct{ k *kubelet }

func (errorSink) Init(logr.RuntimeInfo)            {}
func (errorSink) Enabled(int) bool                 { return false }
func (errorSink) Info(int, string, ...any)         {}
func (s errorSink) WithValues(...any) logr.LogSink { return s }
func (s errorSink) WithName(string) logr.LogSink   { return s }
func (s errorSink) Error(err error, msg string, _ ...any) {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	s.k.errors = append(s.k.errors, fmt.Sprintf("%s: %v", msg, err))
}

// PortForward is the kubelet's side: connect the data stream to the pod's port.
func (k *kubelet) PortForward(ctx context.Context, pod, uid string, port int32, stream io.ReadWriteCloser) error {
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

func (k *kubelet) serve(w http.ResponseWriter, req *http.Request) {
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
	k.requests = append(k.requests, Request{time.Now(), pod, ws})
	gone, unreach, noWS, fail, stall := k.gone[pod], k.unreach[pod], k.noWS, k.fail, k.stall
	if g, ok := req.Context().Value(connKey{}).(*gateConn); ok {
		g.pod = pod
	}
	k.mu.Unlock()
	switch {
	case gone:
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("pods %q not found", pod))
		return
	case fail:
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, "injected failure")
		return
	case unreach:
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError,
			"error dialing backend: dial tcp 127.0.0.2:10250: connect: connection refused")
		return
	case stall:
		// A body promised and never sent: the client must give up on its
		// own (its context), not wait for the rest.
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "1000000")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "service unavailable, and more to come")
		w.(http.Flusher).Flush()
		<-req.Context().Done() // the client has gone, or the server closes
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
	portforward.ServePortForward(w, req, k, pod, "", opts, 0, StreamCreationTimeout, []string{"portforward.k8s.io"})
}

func (k *kubelet) getPod(w http.ResponseWriter, name string) {
	k.mu.Lock()
	uid, ok := k.pods[name]
	gone := k.gone[name]
	k.mu.Unlock()
	if !ok || gone {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("pods %q not found", name))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"kind":"Pod","apiVersion":"v1","metadata":{"name":%q,"namespace":"ns","uid":%q}}`, name, uid)
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":%q,"reason":%q,"code":%d}`, msg, reason, code)
}

// serveWebSocket accepts the tunnelling subprotocol and serves SPDY inside it.
func (k *kubelet) serveWebSocket(w http.ResponseWriter, req *http.Request, pod string) {
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
	portforward.ServePortForward(&hijacked{conn: conn}, spdyReq, k, pod, "", nil, 0, StreamCreationTimeout, []string{"portforward.k8s.io"})
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

// freeze makes every open connection stop reading, like a peer that was
// SIGSTOPped; with a pod, only those carrying that pod's tunnels, like
// its node gone from the network. Connections made afterwards work.
func (k *kubelet) freeze(pod string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.frozen = make(chan struct{})
	k.frozenSet = map[*gateConn]bool{}
	for c := range k.conns {
		if pod == "" || c.pod == pod {
			k.frozenSet[c] = true
		}
	}
}

func (k *kubelet) thaw() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.frozen != nil {
		close(k.frozen)
		k.frozen, k.frozenSet = nil, nil
	}
}

// drop closes every open connection, as a restarting API server would;
// with reset, with a reset (SO_LINGER 0), as a NAT or firewall that forgot
// them would.
func (k *kubelet) drop(reset bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for c := range k.conns {
		if tcp, ok := c.Conn.(*net.TCPConn); ok && reset {
			tcp.SetLinger(0)
		}
		c.Conn.Close()
	}
}

func (k *kubelet) close() {
	k.thaw()
	k.drop(false)
	k.srv.Close()
}

// gateListener tracks the server's connections so tests can freeze or drop them.
type gateListener struct {
	net.Listener
	k *kubelet
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
	k   *kubelet
	pod string // the pod whose port-forward it carries, once upgraded; under k.mu
}

type connKey struct{}

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
