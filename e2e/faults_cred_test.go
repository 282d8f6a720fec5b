package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kforward/kforward/e2e/cluster"
	"github.com/kforward/kforward/forward"
)

// serviceAccountToken creates a service account with the namespace's
// admin role and returns a token for it. Deleting the account revokes
// the token.
func serviceAccountToken(t *testing.T, c *cluster.Cluster, ns, name string) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := c.Client.CoreV1().ServiceAccounts(ns).Create(t.Context(), sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "admin"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
	}
	if _, err := c.Client.RbacV1().RoleBindings(ns).Create(t.Context(), binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), name, &authv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Status.Token
}

// writeTokenKubeconfig writes the cluster's kubeconfig with its current
// context's user replaced by token.
func writeTokenKubeconfig(t *testing.T, c *cluster.Cluster, path, token string) {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	cfg.AuthInfos = map[string]*clientcmdapi.AuthInfo{"rotating": {Token: token}}
	cfg.Contexts = map[string]*clientcmdapi.Context{"rotating": {Cluster: ctx.Cluster, AuthInfo: "rotating"}}
	cfg.CurrentContext = "rotating"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
}

// TestFaultCredentialsRotate: the kubeconfig's token changes on disk and
// the old one is revoked. A dial with the revoked token is shown as
// "unauthorized", not as a generic dial error; the next try after the
// kubeconfig is rewritten uses the new token, without restarting kforward.
func TestFaultCredentialsRotate(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "p")
	oldToken := serviceAccountToken(t, c, ns, "old")
	newToken := serviceAccountToken(t, c, ns, "new")
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	writeTokenKubeconfig(t, c, kubeconfig, oldToken)

	rf := runFile(t, header(c, kubeconfig, ns)+`  - name: p
    pod: p
    ports: [":echo"]
`)
	addr := rf.waitState("p", forward.Active).Addresses[0]
	if got, err := echoOnce(addr, "before"); err != nil || got != "before" {
		t.Fatalf("echo with the first token: %q, %v", got, err)
	}

	// Revoke the old token: its service account goes.
	if err := c.Client.CoreV1().ServiceAccounts(ns).Delete(t.Context(), "old", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(&rest.Config{Host: c.Config.Host, BearerToken: oldToken, TLSClientConfig: c.Config.TLSClientConfig})
	if err != nil {
		t.Fatal(err)
	}
	defer utilnet.CloseIdleConnectionsFor(hc.Transport) // this client's, not kforward's: the leak check is kforward's
	oldClient, err := kubernetes.NewForConfigAndClient(&rest.Config{Host: c.Config.Host}, hc)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the old token to be refused", func() bool {
		_, err := oldClient.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
		return apierrors.IsUnauthorized(err)
	})

	// A new pod under the same name makes the forward dial again, still
	// with the revoked token.
	if err := c.Client.CoreV1().Pods(ns).Delete(t.Context(), "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "pod p gone", func() bool {
		_, err := c.Client.CoreV1().Pods(ns).Get(t.Context(), "p", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	createPod(t, c.Client, ns, "p")
	waitReadyPods(t, c.Client, ns, "app=p", 1)
	var st forward.Status
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st = rf.status("p")
		if st.State != forward.Active && strings.Contains(st.LastError, "unauthorized") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the recreated pod was Ready the forward is %s (pod %s, last error %q), not unauthorized; log:\n%s", st.State, st.Pod, st.LastError, rf.log.String())
		}
	}
	t.Logf("with the revoked token: %s: %s", st.State, st.LastError)
	if want := "connect to pod p: unauthorized: the API server refused the kubeconfig's credentials (expired or revoked?)"; st.LastError != want {
		t.Errorf("last error %q, want %q", st.LastError, want)
	}

	// Rotate: the kubeconfig now holds the new token.
	rotated := time.Now()
	writeTokenKubeconfig(t, c, kubeconfig, newToken)
	st = rf.waitState("p", forward.Active)
	took := time.Since(rotated)
	if got, err := echoOnce(addr, "after"); err != nil || got != "after" {
		t.Fatalf("echo with the rotated token: %q, %v", got, err)
	}
	if st.Addresses[0] != addr {
		t.Errorf("the forward moved from %s to %s: it was restarted", addr, st.Addresses[0])
	}
	if limit := time.Second + 3*time.Second; took > limit { // reconnect.max, and slack for a loaded machine
		t.Errorf("active %s after the rotation, want within %s (reconnect.max 1s and slack)", took, limit)
	}
	for _, tok := range []string{oldToken, newToken} {
		if strings.Contains(rf.log.String(), tok[len(tok)-16:]) || strings.Contains(rf.out.String(), tok[len(tok)-16:]) {
			t.Errorf("a token appears in kforward's output")
		}
	}
	t.Logf("rotated token in use %s after the kubeconfig was rewritten (reconnects: %d)", took.Round(time.Millisecond), st.Reconnects)
}
