package cluster

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Pod backends. kwok forwards a pod's port to whatever address a PortForward
// object names, so for every container port of every pod this controller
// starts a server in this process and points a PortForward at it:
//
//   - a port whose name starts with "http" gets an HTTP server answering
//     GET / with "namespace/name\n" (so a test knows which pod answered),
//     GET /bytes/N with N bytes, POST /sink by reading the body to its
//     end and answering its length (an upload that counts), and POST /sum
//     with the body's length and SHA-256 (an upload that is checked);
//   - a port whose name starts with "refuse" points at a closed port, like a
//     process inside the pod that is not listening (connection refused);
//   - a port whose name starts with "once" echoes what its first read got
//     and closes: the pod ends the conversation. kwok does not pass a
//     client's half-close on to the pod (its tunnel waits for both
//     directions), so a connection to an echo port lives, in kwok and
//     here, until the pod goes; many short connections need this one;
//   - every other port gets a TCP echo server;
//   - unless the pod's annotation TargetAnnotation+NAME names an address
//     (host:port) for the port NAME: then kwok forwards it there, to a
//     server the test runs itself (a real database, say).
//
// The PortForward is created as soon as the pod exists, before it is
// scheduled and made Ready, so a Ready pod always answers. When the pod is
// deleted its servers stop and their connections are closed.

// TargetAnnotation + a container port's name, on a pod, points that port
// at an address of the test's choosing.
const TargetAnnotation = "e2e.kforward.dev/target-"

var portForwardResource = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "portforwards"}

type backends struct {
	client  kubernetes.Interface
	dynamic dynamic.Interface

	mu   sync.Mutex
	pods map[types.UID]*podBackend
}

type podBackend struct {
	servers []io.Closer
}

func newBackends(cfg *rest.Config) (*backends, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &backends{client: client, dynamic: dyn, pods: map[types.UID]*podBackend{}}, nil
}

// run watches pods until ctx ends, then closes every backend. It closes
// synced once it has seen every existing pod.
func (b *backends) run(ctx context.Context, synced chan<- struct{}) {
	factory := informers.NewSharedInformerFactory(b.client, 0)
	inf := factory.Core().V1().Pods().Informer()
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { b.add(ctx, obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { b.add(ctx, obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				b.remove(pod.UID)
			}
		},
	})
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	close(synced)
	<-ctx.Done()
	factory.Shutdown()
	b.mu.Lock()
	defer b.mu.Unlock()
	for uid, pb := range b.pods {
		pb.close()
		delete(b.pods, uid)
	}
}

func (b *backends) add(ctx context.Context, pod *corev1.Pod) {
	if pod.DeletionTimestamp != nil || (pod.Spec.NodeName != "" && pod.Spec.NodeName != NodeName) {
		return
	}
	b.mu.Lock()
	if _, ok := b.pods[pod.UID]; ok {
		b.mu.Unlock()
		return
	}
	pb := &podBackend{}
	b.pods[pod.UID] = pb
	b.mu.Unlock()

	var forwards []any
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if target, ok := pod.Annotations[TargetAnnotation+p.Name]; ok {
				host, port, err := net.SplitHostPort(target)
				n, perr := strconv.ParseInt(port, 10, 32)
				if err != nil || perr != nil {
					log.Printf("cluster: %s/%s: bad %s%s %q", pod.Namespace, pod.Name, TargetAnnotation, p.Name, target)
					continue
				}
				forwards = append(forwards, map[string]any{
					"ports":  []any{int64(p.ContainerPort)},
					"target": map[string]any{"address": host, "port": n},
				})
				continue
			}
			addr, closer, err := serve(pod, p)
			if err != nil {
				log.Printf("cluster: backend for %s/%s port %d: %v", pod.Namespace, pod.Name, p.ContainerPort, err)
				continue
			}
			if closer != nil {
				pb.servers = append(pb.servers, closer)
			}
			forwards = append(forwards, map[string]any{
				"ports":  []any{int64(p.ContainerPort)},
				"target": map[string]any{"address": "127.0.0.1", "port": int64(addr.Port)},
			})
		}
	}
	if len(forwards) == 0 {
		return
	}
	if err := b.applyPortForward(ctx, pod, forwards); err != nil && ctx.Err() == nil {
		log.Printf("cluster: PortForward for %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

func (b *backends) remove(uid types.UID) {
	b.mu.Lock()
	pb, ok := b.pods[uid]
	delete(b.pods, uid)
	b.mu.Unlock()
	if ok {
		pb.close()
	}
}

func (pb *podBackend) close() {
	for _, s := range pb.servers {
		s.Close()
	}
}

// applyPortForward creates or updates the pod's PortForward, owned by the
// pod so the garbage collector removes it with the pod. A pod recreated
// under the same name (a StatefulSet's) takes over the old object.
func (b *backends) applyPortForward(ctx context.Context, pod *corev1.Pod, forwards []any) error {
	pf := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1",
		"kind":       "PortForward",
		"metadata": map[string]any{
			"name":      pod.Name,
			"namespace": pod.Namespace,
			"ownerReferences": []any{map[string]any{
				"apiVersion": "v1", "kind": "Pod", "name": pod.Name, "uid": string(pod.UID),
			}},
		},
		"spec": map[string]any{"forwards": forwards},
	}}
	client := b.dynamic.Resource(portForwardResource).Namespace(pod.Namespace)
	var err error
	for range 20 {
		var existing *unstructured.Unstructured
		existing, err = client.Get(ctx, pod.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			// A pod recreated under the same name: an earlier try may have
			// seen its predecessor's object, which is gone now.
			pf.SetResourceVersion("")
			_, err = client.Create(ctx, pf, metav1.CreateOptions{})
		case err == nil:
			pf.SetResourceVersion(existing.GetResourceVersion())
			_, err = client.Update(ctx, pf, metav1.UpdateOptions{})
		}
		if err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

// serve starts the backend for one container port and returns its address.
func serve(pod *corev1.Pod, p corev1.ContainerPort) (*net.TCPAddr, io.Closer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	addr := l.Addr().(*net.TCPAddr)
	switch {
	case strings.HasPrefix(p.Name, "refuse"):
		l.Close() // nothing listens there now: connection refused
		return addr, nil, nil
	case strings.HasPrefix(p.Name, "once"):
		e := &echoServer{l: l, conns: map[net.Conn]struct{}{}, once: true}
		go e.serve()
		return addr, e, nil
	case strings.HasPrefix(p.Name, "http"):
		srv := &http.Server{Handler: httpBackend(pod.Namespace + "/" + pod.Name), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(l)
		return addr, srv, nil
	default:
		e := &echoServer{l: l, conns: map[net.Conn]struct{}{}}
		go e.serve()
		return addr, e, nil
	}
}

func httpBackend(who string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, who+"\n")
	})
	mux.HandleFunc("GET /bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bad length", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		buf := make([]byte, 64<<10)
		for i := range buf {
			buf[i] = byte(i)
		}
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := w.Write(buf[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	mux.HandleFunc("POST /sum", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x\n", n, h.Sum(nil))
	})
	mux.HandleFunc("POST /sink", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, strconv.FormatInt(n, 10)+"\n")
	})
	return mux
}

// BackendAddr returns the address of the in-process backend that serves a
// pod's container port, as the pod's PortForward names it: the far end of
// every port-forward to that port, which a benchmark dials directly to
// measure what the tunnel costs. The pod must exist; its PortForward is
// written as soon as it does, so a Ready pod always has one.
func (c *Cluster) BackendAddr(ctx context.Context, namespace, pod string, port int32) (string, error) {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return "", err
	}
	pf, err := dyn.Resource(portForwardResource).Namespace(namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("portforward of pod %s/%s: %w", namespace, pod, err)
	}
	forwards, _, _ := unstructured.NestedSlice(pf.Object, "spec", "forwards")
	for _, f := range forwards {
		f, _ := f.(map[string]any)
		ports, _, _ := unstructured.NestedSlice(f, "ports")
		for _, p := range ports {
			if p, ok := p.(int64); !ok || p != int64(port) {
				continue
			}
			host, _, _ := unstructured.NestedString(f, "target", "address")
			target, _, _ := unstructured.NestedInt64(f, "target", "port")
			return net.JoinHostPort(host, strconv.FormatInt(target, 10)), nil
		}
	}
	return "", fmt.Errorf("pod %s/%s has no backend for port %d", namespace, pod, port)
}

// echoServer writes back everything it reads; when the client half-closes,
// it finishes writing and half-closes too. With once, it writes back only
// what its first read got, then closes.
type echoServer struct {
	l     net.Listener
	once  bool
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (e *echoServer) serve() {
	for {
		c, err := e.l.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		e.conns[c] = struct{}{}
		e.mu.Unlock()
		go func() {
			defer func() {
				e.mu.Lock()
				delete(e.conns, c)
				e.mu.Unlock()
				c.Close()
			}()
			if e.once {
				buf := make([]byte, 64<<10)
				if n, _ := c.Read(buf); n > 0 {
					c.Write(buf[:n])
				}
				return
			}
			io.Copy(c, c)
			c.(*net.TCPConn).CloseWrite()
		}()
	}
}

func (e *echoServer) Close() error {
	err := e.l.Close()
	e.mu.Lock()
	defer e.mu.Unlock()
	for c := range e.conns {
		c.Close()
	}
	return err
}
