// Package cluster runs a real, local Kubernetes control plane for tests and
// the demo: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
// kwok playing the kubelet of one node. Every pod on that node gets
// in-process backends for its container ports (see backends.go), reachable
// through the API server's port-forward like a real pod's.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Component names a control plane process.
type Component string

const (
	Etcd              Component = "etcd"
	APIServer         Component = "kube-apiserver"
	ControllerManager Component = "kube-controller-manager"
	Scheduler         Component = "kube-scheduler"
	Kwok              Component = "kwok" // the kubelet of the node
)

// NodeName is the name of the cluster's one (kwok) node.
const NodeName = "kwok-node"

// Options configure Start.
type Options struct {
	// Progress receives build and start-up messages. Default: os.Stderr.
	Progress io.Writer
	// Dir holds the cluster's state (certificates, etcd data, logs).
	// Default: a new temporary directory, removed by Stop.
	Dir string
}

// Cluster is a running control plane. Stop it when done.
type Cluster struct {
	Kubeconfig string // admin kubeconfig path (a bearer token)
	// CertKubeconfig is an admin kubeconfig that authenticates with a
	// client certificate and key instead.
	CertKubeconfig string
	Config         *rest.Config
	Client         kubernetes.Interface // over HTTP/1.1 (see Start)
	Dir            string

	removeDir bool
	spawner   *spawner
	stopBack  context.CancelFunc
	backDone  chan struct{}

	mu    sync.Mutex
	procs map[Component]*process
	order []Component
}

// Start builds the binaries if needed (see EnsureBinaries), starts every
// component on free 127.0.0.1 ports and returns once the API is ready, the
// node is Ready and schedulable, and the default ServiceAccount exists. A
// free port can be taken by another process between being chosen and being
// bound: then the cluster is started again on new ports, up to 3 times.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	for attempt := 1; ; attempt++ {
		c, err := start(ctx, opts)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return c, err
		}
		fmt.Fprintf(opts.progress(), "cluster: a port was taken before it was bound; starting again (%v)\n", firstLine(err))
	}
}

func (o Options) progress() io.Writer {
	if o.Progress == nil {
		return os.Stderr
	}
	return o.Progress
}

func firstLine(err error) string {
	line, _, _ := strings.Cut(err.Error(), "\n")
	return line
}

func start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Progress == nil {
		opts.Progress = os.Stderr
	}
	bins, err := EnsureBinaries(ctx, opts.Progress)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: opts.Dir, procs: map[Component]*process{}, spawner: newSpawner()}
	if c.Dir == "" {
		removeStaleDirs()
		if c.Dir, err = os.MkdirTemp("", "kforward-cluster-"); err != nil {
			return nil, err
		}
		c.removeDir = true
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	p, err := writePKI(c.Dir)
	if err != nil {
		return nil, err
	}
	ports, err := FreePorts(6)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort, cmPort, schedPort, kwokPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, fmt.Sprintf("https://127.0.0.1:%d", apiPort), p); err != nil {
		return nil, err
	}
	c.CertKubeconfig = filepath.Join(c.Dir, "kubeconfig-cert")
	if err := writeCertKubeconfig(c.CertKubeconfig, fmt.Sprintf("https://127.0.0.1:%d", apiPort), p); err != nil {
		return nil, err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return nil, err
	}
	c.Config.QPS, c.Config.Burst = 200, 400
	// The tests' own client speaks HTTP/1.1. The API server closes an
	// HTTP/2 connection idle for 90s, and the next request opens another,
	// whose read loop a test's leak check would blame on kforward (whose
	// clients speak HTTP/2 and are checked); HTTP/1.1's idle connections
	// are client-go's keep-alive pool, which the checks pass over.
	h1 := rest.CopyConfig(c.Config)
	h1.NextProtos = []string{"http/1.1"}
	if c.Client, err = kubernetes.NewForConfig(h1); err != nil {
		return nil, err
	}

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	c.add(Etcd, bins.Etcd,
		"--name=default", "--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL, "--unsafe-no-fsync", "--log-level=warn")
	c.add(APIServer, bins.APIServer,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		"--tls-cert-file="+p.serveCert, "--tls-private-key-file="+p.serveKey, "--client-ca-file="+p.caCert,
		"--cert-dir="+filepath.Join(c.Dir, "certs"),
		"--token-auth-file="+p.tokens,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.saPub, "--service-account-signing-key-file="+p.saKey,
		"--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range=10.96.0.0/16",
		// kwok's node may lose its Hostname address (DESIGN: kwok quirk c).
		"--kubelet-preferred-address-types=InternalIP",
		// Endpoints reject loopback addresses, so do not publish ourselves.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false")
	kubeconfigFlags := []string{"--kubeconfig=" + c.Kubeconfig, "--authentication-kubeconfig=" + c.Kubeconfig,
		"--authorization-kubeconfig=" + c.Kubeconfig, "--bind-address=127.0.0.1", "--leader-elect=false", "--profiling=false"}
	c.add(ControllerManager, bins.ControllerManager, append(kubeconfigFlags,
		"--secure-port="+strconv.Itoa(cmPort),
		"--service-account-private-key-file="+p.saKey, "--root-ca-file="+p.caCert,
		"--use-service-account-credentials=false")...)
	c.add(Scheduler, bins.Scheduler, append(kubeconfigFlags, "--secure-port="+strconv.Itoa(schedPort))...)
	kwokConfig := filepath.Join(c.Dir, "kwok.yaml")
	if err := writeKwokConfig(kwokConfig, bins.KwokDir); err != nil {
		return nil, err
	}
	c.add(Kwok, bins.Kwok,
		"--kubeconfig="+c.Kubeconfig, "--config="+kwokConfig,
		"--manage-single-node="+NodeName, "--node-name="+NodeName, "--node-ip=127.0.0.1",
		"--node-port="+strconv.Itoa(kwokPort), "--server-address="+fmt.Sprintf("127.0.0.1:%d", kwokPort),
		"--node-lease-duration-seconds=40",
		"--enable-crds=PortForward,ClusterPortForward")

	// Start in dependency order, waiting only where the next one needs it.
	for _, name := range []Component{Etcd, APIServer, ControllerManager, Scheduler} {
		if err := c.startProcess(name); err != nil {
			return nil, err
		}
		if name == APIServer {
			if err := c.waitReady(ctx, 90*time.Second); err != nil {
				return nil, err
			}
		}
	}
	if err := applyCRDs(ctx, c.Config, bins.KwokDir, "portforwards", "clusterportforwards"); err != nil {
		return nil, err
	}
	if err := c.createNode(ctx); err != nil {
		return nil, err
	}
	if err := c.startProcess(Kwok); err != nil {
		return nil, err
	}
	if err := c.waitNodeAndServiceAccount(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	backCtx, cancel := context.WithCancel(context.Background())
	c.stopBack, c.backDone = cancel, make(chan struct{})
	b, err := newBackends(c.Config)
	if err != nil {
		return nil, err
	}
	synced := make(chan struct{})
	go func() {
		defer close(c.backDone)
		b.run(backCtx, synced)
	}()
	select {
	case <-synced:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return c, nil
}

func (c *Cluster) add(name Component, path string, args ...string) {
	c.procs[name] = &process{name: string(name), path: path, args: args, log: filepath.Join(c.Dir, string(name)+".log")}
	c.order = append(c.order, name)
}

func (c *Cluster) startProcess(name Component) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[name].start(c.spawner)
}

// Stop kills every component, stops the backends and removes the state
// directory if Start created it. It is safe to call more than once.
func (c *Cluster) Stop() {
	if c.stopBack != nil {
		c.stopBack()
		<-c.backDone
		c.stopBack = nil
	}
	c.mu.Lock()
	for i := len(c.order) - 1; i >= 0; i-- {
		c.procs[c.order[i]].kill()
	}
	c.mu.Unlock()
	c.spawner.close()
	if c.removeDir {
		os.RemoveAll(c.Dir)
	}
}

// PIDs returns the process IDs of the running components.
func (c *Cluster) PIDs() map[Component]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	pids := map[Component]int{}
	for name, p := range c.procs {
		if p.cmd != nil && !p.exited() {
			pids[name] = p.cmd.Process.Pid
		}
	}
	return pids
}

// Restart kills a component and starts it again with the same flags and
// ports; for the API server it also waits until it is ready again, for
// kwok it releases the node's lease so that the new process runs the
// node's pods at once. A restarted kwok serves port-forwards at once but
// refuses every port ("no forward found for port") until it has loaded
// its PortForward rules, a moment later; its readyz does not wait for
// them.
func (c *Cluster) Restart(ctx context.Context, name Component) error {
	c.mu.Lock()
	p, ok := c.procs[name]
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("unknown component %q", name)
	}
	p.kill()
	if name == Kwok {
		// kwok holds the node's lease under an identity new with each
		// process (hostname and a UUID): started again, it would wait for
		// the dead process's lease to expire (40s) before it ran the
		// node's pods again. A kubelet holds it under the node's name and
		// takes over at once; so does kwok once the lease is released.
		err := c.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Delete(ctx, NodeName, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("release the node's lease: %w", err)
		}
	}
	if err := c.startProcess(name); err != nil {
		return err
	}
	if name == APIServer {
		return c.waitReady(ctx, 90*time.Second)
	}
	return nil
}

// Pause freezes a component with SIGSTOP: its sockets stay open but nothing
// answers, like a hung process or a black-holed network path.
func (c *Cluster) Pause(name Component) error { return c.signal(name, syscall.SIGSTOP) }

// Resume continues a paused component with SIGCONT.
func (c *Cluster) Resume(name Component) error { return c.signal(name, syscall.SIGCONT) }

func (c *Cluster) signal(name Component, sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.procs[name]
	if !ok {
		return fmt.Errorf("unknown component %q", name)
	}
	return p.signal(sig)
}

// LogFile is the path of a component's log.
func (c *Cluster) LogFile(name Component) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[name].log
}

// Logs returns the tail of a component's log.
func (c *Cluster) Logs(name Component) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[name].tail()
}

func (c *Cluster) waitReady(ctx context.Context, timeout time.Duration) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if p := c.procs[APIServer]; p.exited() {
			return false, fmt.Errorf("kube-apiserver exited:\n%s", p.tail())
		}
		if p := c.procs[Etcd]; p.exited() {
			return false, fmt.Errorf("etcd exited:\n%s", p.tail())
		}
		_, last = c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("kube-apiserver not ready: %w (last: %v)\n%s", err, last, c.procs[APIServer].tail())
	}
	return nil
}

func (c *Cluster) createNode(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: NodeName,
		Labels: map[string]string{
			"kubernetes.io/hostname": NodeName, "kubernetes.io/os": "linux",
			"kubernetes.io/arch": "amd64", "type": "kwok",
		},
		Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
	}}
	_, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func (c *Cluster) waitNodeAndServiceAccount(ctx context.Context, timeout time.Duration) error {
	var state string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		for _, name := range []Component{Kwok, ControllerManager, Scheduler} {
			if p := c.procs[name]; p.exited() {
				return false, fmt.Errorf("%s exited:\n%s", name, p.tail())
			}
		}
		node, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			state = err.Error()
			return false, nil
		}
		if !nodeReady(node) {
			state = "node not Ready"
			return false, nil
		}
		for _, t := range node.Spec.Taints {
			if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
				state = "node still tainted " + t.Key
				return false, nil
			}
		}
		if _, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			state = "default ServiceAccount: " + err.Error()
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("cluster not ready: %w (%s)\nkwok log:\n%s", err, state, c.procs[Kwok].tail())
	}
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

func writeKubeconfig(path, server string, p *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kforward-e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: []byte(p.caCertPEM)}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: p.token}
	cfg.Contexts["kforward-e2e"] = &clientcmdapi.Context{Cluster: "kforward-e2e", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "kforward-e2e"
	return clientcmd.WriteToFile(*cfg, path)
}

func writeCertKubeconfig(path, server string, p *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kforward-e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: []byte(p.caCertPEM)}
	cfg.AuthInfos["admin-cert"] = &clientcmdapi.AuthInfo{ClientCertificateData: p.clientCert, ClientKeyData: p.clientKey}
	cfg.Contexts["kforward-e2e"] = &clientcmdapi.Context{Cluster: "kforward-e2e", AuthInfo: "admin-cert", Namespace: "default"}
	cfg.CurrentContext = "kforward-e2e"
	return clientcmd.WriteToFile(*cfg, path)
}

// writeKwokConfig writes kwok's configuration and the stage documents it
// needs (v0.8 has no built-in stages), read from the kwok module.
func writeKwokConfig(path, kwokDir string) error {
	var b strings.Builder
	b.WriteString(`apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  enableDebuggingHandlers: true
  podPlayStageParallelism: 8
  nodePlayStageParallelism: 2
  nodeLeaseParallelism: 2
  nodeLeaseDurationSeconds: 40
`)
	stages := []string{
		"node/fast/node-initialize.yaml",
		"node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
		"pod/fast/pod-ready.yaml",
		"pod/fast/pod-complete.yaml",
		"pod/fast/pod-delete.yaml",
	}
	for _, s := range stages {
		data, err := os.ReadFile(filepath.Join(kwokDir, "kustomize", "stage", s))
		if err != nil {
			return err
		}
		b.WriteString("---\n")
		b.Write(data)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// applyCRDs creates kwok's CRDs from its module and waits until they serve.
func applyCRDs(ctx context.Context, cfg *rest.Config, kwokDir string, names ...string) error {
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for _, name := range names {
		f, err := os.Open(filepath.Join(kwokDir, "kustomize", "crd", "bases", "kwok.x-k8s.io_"+name+".yaml"))
		if err != nil {
			return err
		}
		var obj unstructured.Unstructured
		err = yaml.NewYAMLOrJSONDecoder(f, 4096).Decode(&obj.Object)
		f.Close()
		if err != nil {
			return fmt.Errorf("decode CRD %s: %w", name, err)
		}
		if _, err := client.Resource(crdResource).Create(ctx, &obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s: %w", name, err)
		}
	}
	// Wait until a PortForward can be written. A dry-run create also warms
	// the API server's per-CRD write path, which takes seconds the first
	// time and would otherwise delay the first pod's backend.
	warm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "PortForward",
		"metadata": map[string]any{"name": "warm-up", "namespace": "default"},
		"spec":     map[string]any{"forwards": []any{}},
	}}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := client.Resource(portForwardResource).Namespace("default").Create(ctx, warm, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil, nil
	})
}

// FreePorts returns n distinct free loopback ports. They are free when
// returned; whoever binds them does so a moment later.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// removeStaleDirs deletes state directories of earlier clusters whose owner
// process is gone (a test binary killed before it could call Stop).
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "kforward-cluster-*"))
	for _, d := range dirs {
		data, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(string(data))
		if err != nil {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}
