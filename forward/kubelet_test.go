package forward

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/kforward/kforward/forward/internal/fakekubelet"
	"github.com/kforward/kforward/internal/testutil"
)

// fakeKubelet is a stand-in for the API server and kubelet on the
// port-forward path: the upstream kubelet streaming server
// (ServePortForward) behind an httptest server, for both transports,
// WebSocket unwrapped as the API server does it. It runs in a process of
// its own (internal/fakekubelet/cmd/fakekubelet, built without the race
// detector by the first test that needs one), driven over a pipe; each
// pod's ports are real TCP backends on loopback, in this process.
//
// Why a process: spdystream's server session (the kubelet's side, not
// kforward's) has a data race: its RST_STREAM handler marks a stream
// replied without the lock under which the stream's writers read that.
// kforward reaches it legitimately. It does not wait for the error
// stream's reply (a pair opens in one round trip), so it may reset a pair
// whose error stream the kubelet has not replied to yet; when that reply
// then fails (the connection closing at a test's end), the reset marks
// the stream replied while the kubelet's handler closes it. Under -race
// that failed TestVanishedClientReleasedAtOnce/closed_with_unread_data in
// each of 3 runs of 150. In-process, the server's goroutines also had to
// be kept out of the leak checks.
type fakeKubelet struct {
	t       *testing.T
	url     string
	cmd     *exec.Cmd
	in      io.WriteCloser
	replies *json.Decoder
	stderr  *testutil.Buffer

	mu      sync.Mutex      // one command at a time, and the fields below
	noWS    bool            // answer WebSocket upgrades like an API server without them
	fail    bool            // answer every upgrade with 500
	gone    map[string]bool // pods answering 404
	unreach map[string]bool // pods answering 500 "error dialing backend": their node cannot be reached
	stall   bool            // answer every upgrade with 503 and a body that never ends
	errSeen int             // errors of the process already in kubeletErrors
	closed  bool
}

type request struct {
	at        time.Time
	pod       string
	websocket bool
}

// fakeKubeletBinary is built once per test process, into a directory
// removed when the tests end (TestMain).
var fakeKubeletBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func buildFakeKubelet() (string, error) {
	b := &fakeKubeletBinary
	b.once.Do(func() {
		b.dir, b.err = os.MkdirTemp("", "kforward-fakekubelet-")
		if b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "fakekubelet")
		cmd := exec.Command("go", "build", "-o", b.path, "github.com/kforward/kforward/forward/internal/fakekubelet/cmd/fakekubelet")
		// Without -race, whatever GOFLAGS says: the point of the process.
		var flags []string
		for _, f := range strings.Fields(os.Getenv("GOFLAGS")) {
			if f != "-race" && f != "--race" && f != "-race=true" {
				flags = append(flags, f)
			}
		}
		cmd.Env = append(os.Environ(), "GOFLAGS="+strings.Join(flags, " "))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build the fake kubelet: %w\n%s", err, out)
		}
	})
	return b.path, b.err
}

func removeFakeKubelet() {
	if dir := fakeKubeletBinary.dir; dir != "" {
		os.RemoveAll(dir)
	}
}

func newFakeKubelet(t *testing.T) *fakeKubelet {
	path, err := buildFakeKubelet()
	if err != nil {
		t.Fatal(err)
	}
	replies, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKubelet{t: t, gone: map[string]bool{}, unreach: map[string]bool{}, stderr: &testutil.Buffer{}, replies: json.NewDecoder(replies)}
	k.cmd = exec.Command(path)
	k.cmd.ExtraFiles = []*os.File{w} // its file descriptor 3
	k.cmd.Stdout, k.cmd.Stderr = k.stderr, k.stderr
	if k.in, err = k.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	err = k.cmd.Start()
	w.Close() // the child's now
	if err != nil {
		replies.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		k.close()
		replies.Close()
	})
	var first fakekubelet.Reply
	if err := k.replies.Decode(&first); err != nil {
		t.Fatalf("the fake kubelet did not start: %v\n%s", err, k.stderr)
	}
	k.url = first.URL
	liveKubelets.Lock()
	liveKubelets.set[k] = true
	liveKubelets.Unlock()
	return k
}

// do sends one command and returns its reply; k.mu is held.
func (k *fakeKubelet) do(cmd fakekubelet.Command) fakekubelet.Reply {
	k.t.Helper()
	line, err := json.Marshal(cmd)
	if err != nil {
		k.t.Fatal(err)
	}
	var reply fakekubelet.Reply
	if _, err := k.in.Write(append(line, '\n')); err == nil {
		err = k.replies.Decode(&reply)
	}
	if err != nil {
		k.t.Fatalf("fake kubelet, %s: %v\n%s", cmd.Op, err, k.stderr)
	}
	if reply.Error != "" {
		k.t.Fatalf("fake kubelet, %s: %s", cmd.Op, reply.Error)
	}
	return reply
}

func (k *fakeKubelet) command(op string) fakekubelet.Reply {
	k.t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.do(fakekubelet.Command{Op: op})
}

// env returns what a forward needs to talk to this kubelet.
func (k *fakeKubelet) env(pods Pods, log *testLog) Env {
	cfg := &rest.Config{Host: k.url}
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
	backends := map[int32]string{}
	for kind, port := range ports {
		cps = append(cps, corev1.ContainerPort{Name: kind, ContainerPort: port})
		backends[port] = k.backend(name, kind)
	}
	pod.Spec.Containers = []corev1.Container{{Name: "app", Ports: cps}}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.do(fakekubelet.Command{Op: "pod", Pod: name, UID: string(pod.UID), Backends: backends})
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
const streamCreationTimeout = fakekubelet.StreamCreationTimeout

// kubeletErrors records the errors the fake kubelets have reported:
// cri-streaming reports through klog (k8s.io/streaming/pkg/runtime's
// HandleError), so these are the lines a real kubelet would write to its
// log; each fake kubelet keeps its own, and they are gathered here when
// asked for. Errors logged through klog in this process, the forward's own
// client-go's, count too.
var kubeletErrors struct {
	sync.Mutex
	list []string
}

// liveKubelets are the fake kubelets whose errors are still to gather.
var liveKubelets = struct {
	sync.Mutex
	set map[*fakeKubelet]bool
}{set: map[*fakeKubelet]bool{}}

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

// gatherErrors adds what every live fake kubelet has reported since it
// was last asked: afterwards kubeletErrors holds every error reported
// before the call.
func gatherErrors() {
	liveKubelets.Lock()
	defer liveKubelets.Unlock()
	for k := range liveKubelets.set {
		k.mu.Lock()
		k.gatherErrors()
		k.mu.Unlock()
	}
}

// gatherErrors adds k's new errors to kubeletErrors; k.mu is held.
func (k *fakeKubelet) gatherErrors() {
	errs := k.do(fakekubelet.Command{Op: "errors", Since: k.errSeen}).Errors
	k.errSeen += len(errs)
	kubeletErrors.Lock()
	kubeletErrors.list = append(kubeletErrors.list, errs...)
	kubeletErrors.Unlock()
}

// kubeletErrorCount is how many errors the kubelet side has reported.
func kubeletErrorCount() int {
	gatherErrors()
	kubeletErrors.Lock()
	defer kubeletErrors.Unlock()
	return len(kubeletErrors.list)
}

// kubeletErrorsSince returns the errors reported after the first n.
func kubeletErrorsSince(n int) []string {
	gatherErrors()
	kubeletErrors.Lock()
	defer kubeletErrors.Unlock()
	return append([]string(nil), kubeletErrors.list[n:]...)
}

// upgrades returns the upgrade requests seen so far.
func (k *fakeKubelet) upgrades() []request {
	var out []request
	for _, r := range k.command("requests").Requests {
		out = append(out, request{r.At, r.Pod, r.WebSocket})
	}
	return out
}

// set applies f to how the kubelet answers (noWS, fail, gone, unreach,
// stall), and tells it before returning.
func (k *fakeKubelet) set(f func(k *fakeKubelet)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f(k)
	cmd := fakekubelet.Command{Op: "state", NoWS: k.noWS, Fail: k.fail, Stall: k.stall}
	for pod, gone := range k.gone {
		if gone {
			cmd.Gone = append(cmd.Gone, pod)
		}
	}
	for pod, unreach := range k.unreach {
		if unreach {
			cmd.Unreachable = append(cmd.Unreachable, pod)
		}
	}
	k.do(cmd)
}

// freeze makes every open connection stop reading, like a peer that was
// SIGSTOPped; connections made afterwards work.
func (k *fakeKubelet) freeze() { k.command("freeze") }

// freezePod freezes only the connections carrying pod's tunnels, as if
// its node had gone from the network.
func (k *fakeKubelet) freezePod(pod string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.do(fakekubelet.Command{Op: "freeze", Pod: pod})
}

func (k *fakeKubelet) thaw() { k.command("thaw") }

// drop closes every open connection, as a restarting API server would.
func (k *fakeKubelet) drop() { k.command("drop") }

// reset closes every open connection with a reset (SO_LINGER 0), as a NAT
// or firewall that forgot them would.
func (k *fakeKubelet) reset() { k.command("reset") }

// close gathers the kubelet's last errors, closes it (every connection
// with it) and waits for its process to end.
func (k *fakeKubelet) close() {
	liveKubelets.Lock()
	delete(liveKubelets.set, k)
	liveKubelets.Unlock()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return
	}
	k.closed = true
	k.gatherErrors()
	k.do(fakekubelet.Command{Op: "close"})
	k.in.Close()
	if err := k.cmd.Wait(); err != nil {
		k.t.Errorf("fake kubelet: %v\n%s", err, k.stderr)
	}
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
