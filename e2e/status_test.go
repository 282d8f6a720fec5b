package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kforward/kforward/forward"
	kfstatus "github.com/kforward/kforward/internal/status"
	"github.com/kforward/kforward/runner"
)

// statusGet fetches path from a status endpoint.
func statusGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// readPortsFile reads an env file into a map.
func readPortsFile(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	m := map[string]string{}
	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, "#") { // the marker: kforward wrote it
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			t.Fatalf("ports file line %q is not NAME=VALUE", line)
		}
		m[k] = v
	}
	return m
}

// metricValue is the value of the one series of name with the given labels.
func metricValue(t *testing.T, families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	mf := families[name]
	if mf == nil {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range mf.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range labels {
			match = match && have[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// The status endpoint, the ports file and `kforward status`, against a
// kforward run on a real cluster, after real traffic.
func TestStatusEndpoint(t *testing.T) {
	c := needCluster(t)
	ns := namespace(t, c)
	createDeployment(t, c.Client, ns, "web", 1)
	createPod(t, c.Client, ns, "solo")
	waitReadyPods(t, c.Client, ns, "app=web", 1)
	waitReadyPods(t, c.Client, ns, "app=solo", 1)

	dir := t.TempDir()
	file := filepath.Join(dir, "forwards.yaml")
	portsFile := filepath.Join(dir, "ports.env")
	base := header(c, "", ns) +
		"  - name: web\n    deployment: web\n    ports: [\":http\"]\n" +
		"  - name: solo\n    pod: solo\n    ports: [\":echo\"]\n"
	os.WriteFile(file, []byte(base), 0o644)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	began := time.Now()
	k := startRun(t, file, "--status-addr", addr, "--ports-file", portsFile)
	for range 2 { // plain mode: stdout is a pipe
		if line := k.line(t); strings.ContainsRune(line, 0x1b) || !strings.Contains(line, " -> ") {
			t.Errorf("summary line %q: want plain text, no escape codes", line)
		}
	}

	waitFor(t, 30*time.Second, "/readyz 200", func() bool { code, _ := statusGet(t, addr, "/readyz"); return code == 200 })
	var ports map[string]string
	waitFor(t, 5*time.Second, "the ports file", func() bool { ports = readPortsFile(t, portsFile); return len(ports) == 4 })
	webAddr := "127.0.0.1:" + ports["WEB_PORT"]
	if ports["WEB_PORT_HTTP"] != ports["WEB_PORT"] || ports["SOLO_PORT_ECHO"] != ports["SOLO_PORT"] {
		t.Fatalf("ports file %v: want WEB_PORT, WEB_PORT_HTTP, SOLO_PORT, SOLO_PORT_ECHO", ports)
	}
	pod := ""
	for range 5 {
		_, pod, _ = strings.Cut(who(t, webAddr), "/") // the backend says namespace/pod
	}

	// /status: the snapshot, after 5 requests.
	var snap runner.Snapshot
	waitFor(t, 5*time.Second, "5 connections in /status", func() bool {
		_, body := statusGet(t, addr, "/status")
		if err := json.Unmarshal([]byte(body), &snap); err != nil {
			t.Fatalf("/status is not a snapshot: %v\n%s", err, body)
		}
		return len(snap.Forwards) == 2 && snap.Forwards[1].Total == 5
	})
	web := snap.Forwards[1]
	if web.Name != "web" || web.State != forward.Active || web.Pod != pod || web.Target != "deployment/web" ||
		web.Namespace != ns || strconv.Itoa(web.Ports[0].Local) != ports["WEB_PORT"] || web.Ports[0].Remote != "http" ||
		web.BytesIn == 0 || web.BytesOut == 0 {
		t.Errorf("/status for web: %+v", web)
	}
	if snap.File != file || !snap.LastReload.Successful || snap.LastReload.Trigger != runner.TriggerStart || snap.Started.Before(began) {
		t.Errorf("/status file and reload: %q %+v started %s", snap.File, snap.LastReload, snap.Started)
	}

	// /metrics, parsed as Prometheus does, agrees with it.
	_, body := statusGet(t, addr, "/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	webLabel := map[string]string{"forward": "web"}
	for name, want := range map[string]float64{
		"kforward_forward_up":                    1,
		"kforward_connections_total":             5,
		"kforward_reconnects_total":              0,
		"kforward_config_last_reload_successful": 1,
	} {
		labels := webLabel
		if strings.HasPrefix(name, "kforward_config") {
			labels = nil
		}
		if got := metricValue(t, families, name, labels); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if in := metricValue(t, families, "kforward_bytes_total", map[string]string{"forward": "web", "direction": "in"}); in < float64(web.BytesIn) || in == 0 {
		t.Errorf("bytes in %v, /status said %d before", in, web.BytesIn)
	}
	if n := metricValue(t, families, "kforward_upstream_dial_seconds", webLabel); n < 1 {
		t.Errorf("%v dials observed, want at least the first", n)
	}
	if ts := metricValue(t, families, "kforward_config_last_reload_success_timestamp_seconds", nil); ts < float64(began.Unix()) || ts > float64(time.Now().Unix()+1) {
		t.Errorf("last reload at %v, not during this test (began %d)", ts, began.Unix())
	}
	waitFor(t, 5*time.Second, "a health check", func() bool {
		_, body := statusGet(t, addr, "/metrics")
		return regexp.MustCompile(`kforward_health_check_seconds_count\{forward="web"\} [1-9]`).MatchString(body)
	})

	// /readyz follows the pod: 503 naming the forward while it is gone,
	// 200 once a new one is Ready.
	if err := c.Client.CoreV1().Pods(ns).Delete(t.Context(), "solo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var notReady string
	waitFor(t, 30*time.Second, "/readyz 503", func() bool { code, b := statusGet(t, addr, "/readyz"); notReady = b; return code == 503 })
	if !strings.HasPrefix(notReady, "solo: ") || strings.Contains(notReady, "web") {
		t.Errorf("/readyz body %q, want only solo named", notReady)
	}
	waitFor(t, 30*time.Second, "the old pod to be gone", func() bool {
		_, err := c.Client.CoreV1().Pods(ns).Get(t.Context(), "solo", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	createPod(t, c.Client, ns, "solo")
	waitReadyPods(t, c.Client, ns, "app=solo", 1)
	deadline := time.Now().Add(30 * time.Second)
	for code, body := statusGet(t, addr, "/readyz"); code != 200; code, body = statusGet(t, addr, "/readyz") {
		if time.Now().After(deadline) {
			pod, err := c.Client.CoreV1().Pods(ns).Get(t.Context(), "solo", metav1.GetOptions{})
			_, snap := statusGet(t, addr, "/status")
			t.Fatalf("/readyz still %d 30s after the pod is back: %s\npod: %v %+v\nstatus: %s\nlog:\n%s", code, body, err, pod.Status, snap, k.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("readyz: 503 with %q, then 200", strings.TrimSpace(notReady))

	t.Run("kforward status", func(t *testing.T) {
		status := func(args ...string) (string, string, int) { return kforwardStatus(t, addr, args...) }
		table, _, code := status()
		lines := strings.Split(strings.TrimSpace(table), "\n")
		if code != 0 || len(lines) != 4 || !strings.Contains(lines[0], "2 forwards, 2 active") ||
			!strings.HasPrefix(lines[1], "NAME") || !regexp.MustCompile(`^web\s+deploy/web:http\s+127\.0\.0\.1:`+ports["WEB_PORT"]+`\s+`+pod+`\s+active\s+\d+/5\s`).MatchString(lines[3]) {
			t.Errorf("kforward status (exit %d):\n%s", code, table)
		}
		if strings.ContainsRune(k.stderr.String(), 0x1b) {
			t.Error("escape codes in the log written to a pipe")
		}
		if strings.ContainsRune(table, 0x1b) {
			t.Error("escape codes in the table printed to a pipe")
		}
		wide, _, _ := status("-o", "wide")
		if !regexp.MustCompile(`NAMESPACE\s+CONTEXT\s+TARGET.*TRANSPORT\s+RECONNECTS\s+HEALTH`).MatchString(wide) || !strings.Contains(wide, ns) {
			t.Errorf("kforward status -o wide:\n%s", wide)
		}
		js, _, _ := status("-o", "json")
		var got runner.Snapshot
		if err := json.Unmarshal([]byte(js), &got); err != nil || len(got.Forwards) != 2 || got.Forwards[1].Pod != pod {
			t.Errorf("kforward status -o json (%v):\n%s", err, js)
		}
		env, _, _ := status("-o", "env")
		file, _ := os.ReadFile(portsFile)
		if string(file) != kfstatus.PortsMarker+"\n"+env || !strings.Contains(env, "WEB_PORT="+ports["WEB_PORT"]+"\n") {
			t.Errorf("kforward status -o env:\n%s\nports file:\n%s", env, file)
		}
		nobody := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		_, errOut, code := kforwardStatus(t, nobody)
		if code != 1 || errOut != "error: no kforward running at "+nobody+"\n" {
			t.Errorf("kforward status with nothing running: exit %d, stderr %q", code, errOut)
		}

		// --watch: the live table of the running kforward, until Ctrl-C.
		term := newTerminal(t, 160, 12, kforwardBinary(t), "status", "--addr", addr, "--watch", "-o", "wide")
		term.waitScreen("the wide table", regexp.MustCompile(`(?m)^web\s+`+ns+`\s+-\s+deploy/web:http\s.*active`))
		term.run("send-keys", "-t", "t", "C-c")
		if st := term.exited(); st != "0" {
			t.Errorf("status --watch: exit %s after Ctrl-C, want 0", st)
		}
	})

	t.Run("reload", func(t *testing.T) {
		// A new :PORT forward appears in the ports file; an invalid file is
		// refused by POST /-/reload with its file:line:col and changes
		// nothing; removing the forward takes its lines out.
		os.WriteFile(file, []byte(base+"  - name: extra-one\n    pod: solo\n    ports: [\":echo\", \"7000\"]\n"), 0o644)
		waitFor(t, 10*time.Second, "extra-one in the ports file", func() bool { return len(readPortsFile(t, portsFile)) == 7 })
		p := readPortsFile(t, portsFile)
		if p["EXTRA_ONE_PORT"] == "" || p["EXTRA_ONE_PORT"] != p["EXTRA_ONE_PORT_ECHO"] || p["EXTRA_ONE_PORT_7000"] != "7000" {
			t.Errorf("ports file after adding extra-one: %v", p)
		}
		os.WriteFile(file, []byte(base+"  - name: bad\n    pod: solo\n    prots: [1]\n"), 0o644)
		req, _ := http.NewRequest("POST", "http://"+addr+"/-/reload", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(body), file+":15:5: unknown key \"prots\"") {
			t.Errorf("POST /-/reload of an invalid file: %d\n%s", resp.StatusCode, body)
		}
		_, m := statusGet(t, addr, "/metrics")
		if !strings.Contains(m, "\nkforward_config_last_reload_successful 0\n") || !strings.Contains(m, `kforward_forward_up{forward="extra-one"} 1`) {
			t.Errorf("after an invalid reload, want reload unsuccessful and extra-one still up:\n%s", grepLines(m, "kforward_config_last_reload_successful", "kforward_forward_up"))
		}
		os.WriteFile(file, []byte(base), 0o644)
		waitFor(t, 10*time.Second, "extra-one gone from the ports file", func() bool { return len(readPortsFile(t, portsFile)) == 4 })

		asked := time.Now()
		req, _ = http.NewRequest("POST", "http://"+addr+"/-/reload", nil)
		req.Header.Set("Accept", "application/json")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var res runner.Reload
		err = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !res.Successful || res.Trigger != runner.TriggerRequest || res.At.Before(asked) || res.Unchanged != 2 {
			t.Errorf("POST /-/reload as JSON: %d %+v %v", resp.StatusCode, res, err)
		}
	})
}

func grepLines(s string, prefixes ...string) string {
	var out []string
	for line := range strings.Lines(s) {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, strings.TrimSpace(line))
			}
		}
	}
	return strings.Join(out, "\n")
}

// kforwardStatus runs `kforward status --addr addr args...`.
func kforwardStatus(t *testing.T, addr string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return kforwardCmd(t, "", nil, append([]string{"status", "--addr", addr}, args...)...)
}

// No credential leaves kforward: with a bearer-token kubeconfig, at the
// highest verbosity, the token appears nowhere in what kforward wrote, in
// /status or in /metrics.
func TestNoCredentialInOutput(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "web")
	kubeconfig := deniedKubeconfig(t, c, ns) // a service account's token, context "denied"
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "forward"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"pods/portforward"}, Verbs: []string{"get", "create"}},
		},
	}
	if _, err := c.Client.RbacV1().Roles(ns).Create(t.Context(), role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "forward"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "forward"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "nobody", Namespace: ns}},
	}
	if _, err := c.Client.RbacV1().RoleBindings(ns).Create(t.Context(), binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	token := cfg.AuthInfos["nobody"].Token

	file := filepath.Join(t.TempDir(), "forwards.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf("kubeconfig: %s\ndefaults: {context: denied, namespace: %s}\nforwards:\n  - name: web\n    pod: web\n    ports: [\":http\"]\n", kubeconfig, ns)), 0o644)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	k := startRun(t, file, "-vvvvvvvvvv", "--status-addr", addr) // client-go at its most verbose (9): request headers included
	summary := k.line(t)
	waitFor(t, 30*time.Second, "/readyz 200", func() bool { code, _ := statusGet(t, addr, "/readyz"); return code == 200 })
	if _, err := get(strings.Fields(summary)[1], "/"); err != nil {
		t.Fatalf("a request through the forward: %v", err)
	}
	_, st := statusGet(t, addr, "/status")
	_, metrics := statusGet(t, addr, "/metrics")
	k.cmd.Process.Signal(syscall.SIGINT)
	k.wait(t, 10*time.Second)

	for what, text := range map[string]string{"the log (-v x10)": k.stderr.String(), "stdout": summary, "/status": st, "/metrics": metrics} {
		if strings.Contains(text, token) || strings.Contains(text, token[len(token)-16:]) {
			t.Errorf("the token appears in %s", what)
		}
	}
	// client-go logs each request as a curl command with its headers; the
	// token is added beneath that log (internal/kube reads it from the
	// kubeconfig for each request), so not even a masked Authorization
	// header appears.
	if !strings.Contains(k.stderr.String(), `curlCommand="curl -v -XGET  -H`) {
		t.Errorf("client-go at verbosity 9 did not log its requests' headers, so the check proves little:\n%.2000s", k.stderr.String())
	}
	t.Logf("token of %d bytes: absent from %d bytes of log, /status and /metrics", len(token), len(k.stderr.String()))
}

// TestNoClientKeyInOutput: the same with a kubeconfig that authenticates
// with a client certificate and key, plus a forward that fails (its error
// messages are in the output too): no line of the key, in PEM or in the
// kubeconfig's base64, appears anywhere kforward writes.
func TestNoClientKeyInOutput(t *testing.T) {
	c := needCluster(t)
	ns := namespaceWithPod(t, c, "web")
	cfg, err := clientcmd.LoadFromFile(c.CertKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	key := cfg.AuthInfos[cfg.Contexts[cfg.CurrentContext].AuthInfo].ClientKeyData
	secrets := []string{base64.StdEncoding.EncodeToString(key)}
	for _, line := range strings.Split(string(key), "\n") {
		if !strings.HasPrefix(line, "-----") && len(line) > 8 {
			secrets = append(secrets, line)
		}
	}

	file := filepath.Join(t.TempDir(), "forwards.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf("kubeconfig: %s\ndefaults: {namespace: %s}\nforwards:\n  - name: web\n    pod: web\n    ports: [\":http\"]\n  - name: missing\n    service: missing\n    ports: [\":http\"]\n", c.CertKubeconfig, ns)), 0o644)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	k := startRun(t, file, "-vvvvvvvvvv", "--status-addr", addr)
	summary := k.line(t) + "\n" + k.line(t)
	var local string
	for _, l := range strings.Split(summary, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "web" {
			local = f[1]
		}
	}
	waitFor(t, 30*time.Second, "forward web active", func() bool {
		var snap runner.Snapshot
		_, body := statusGet(t, addr, "/status")
		json.Unmarshal([]byte(body), &snap)
		s, _ := findStatus(snap.Forwards, "web")
		return s.State == forward.Active
	})
	if _, err := get(local, "/"); err != nil {
		t.Fatalf("a request through the forward: %v", err)
	}
	_, st := statusGet(t, addr, "/status")
	_, metrics := statusGet(t, addr, "/metrics")
	k.cmd.Process.Signal(syscall.SIGINT)
	k.wait(t, 10*time.Second)

	if !strings.Contains(st, `"lastError": "services \"missing\" not found"`) {
		t.Errorf("the failing forward's error is not in /status, so the check covers no error message:\n%s", st)
	}
	for what, text := range map[string]string{"the log (-v x10)": k.stderr.String(), "stdout": summary, "/status": st, "/metrics": metrics} {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("the client key appears in %s", what)
				break
			}
		}
	}
	t.Logf("client key (%d PEM lines): absent from %d bytes of log, stdout, /status and /metrics", len(secrets)-1, len(k.stderr.String()))
}
