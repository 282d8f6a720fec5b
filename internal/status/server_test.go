package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/runner"
)

// Fast tests of the endpoint against a fixed snapshot; e2e/status_test.go
// checks it after real traffic on a real cluster.

type fakeSource struct {
	snap     runner.Snapshot
	reload   runner.Reload
	reloads  int
	unloaded bool // the file is not loaded yet
}

func (f *fakeSource) Snapshot() runner.Snapshot { return f.snap }
func (f *fakeSource) Reload(context.Context) (runner.Reload, error) {
	f.reloads++
	return f.reload, nil
}

func (f *fakeSource) Loaded() <-chan struct{} {
	ch := make(chan struct{})
	if !f.unloaded {
		close(ch)
	}
	return ch
}

var at = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func snapshot() runner.Snapshot {
	dial := forward.Histogram{Bounds: []float64{.1, 1}, Counts: []uint64{2, 3}, Count: 4, Sum: 7.5}
	return runner.Snapshot{
		File: "forwards.yaml", Started: at, LastApply: at.Add(time.Minute),
		LastReload: runner.Reload{At: at.Add(2 * time.Minute), Trigger: runner.TriggerFile, Errors: []string{"forwards.yaml:3:9: unknown field"}},
		Forwards: []forward.Status{
			{Name: "api", Target: "service/api", Namespace: "dev", State: forward.Active, Active: 2, Total: 10,
				BytesIn: 1000, BytesOut: 200, OnDisk: 4096, Reconnects: 3, ConnErrors: map[string]int64{forward.ErrStream: 4},
				DialSeconds: dial},
			{Name: "db", Target: "statefulset/db", State: forward.Reconnecting, LastError: "health check: timeout"},
		},
	}
}

// get asks h as `kforward status` and curl do: Host 127.0.0.1:7355, no
// Origin.
func get(t *testing.T, h http.Handler, method, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, "http://"+DefaultAddr+path, nil))
	return rec.Result()
}

func TestMetricsFromSnapshot(t *testing.T) {
	h := Handler(&fakeSource{snap: snapshot()})
	resp := get(t, h, "GET", "/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		mf := families[name]
		if mf == nil {
			t.Fatalf("no metric %s", name)
		}
		for _, m := range mf.Metric {
			if hasLabels(m, labels) {
				switch {
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Histogram != nil:
					return float64(m.Histogram.GetSampleCount())
				}
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"kforward_forward_up", map[string]string{"forward": "api"}, 1},
		{"kforward_forward_up", map[string]string{"forward": "db"}, 0},
		{"kforward_forward_info", map[string]string{"forward": "api", "target": "service/api", "namespace": "dev"}, 1},
		{"kforward_connections_active", map[string]string{"forward": "api"}, 2},
		{"kforward_connections_total", map[string]string{"forward": "api"}, 10},
		{"kforward_connection_errors_total", map[string]string{"forward": "api", "reason": "stream"}, 4},
		{"kforward_connection_errors_total", map[string]string{"forward": "api", "reason": "no_pod"}, 0},
		{"kforward_bytes_total", map[string]string{"forward": "api", "direction": "in"}, 1000},
		{"kforward_bytes_total", map[string]string{"forward": "api", "direction": "out"}, 200},
		{"kforward_disk_buffered_bytes", map[string]string{"forward": "api"}, 4096},
		{"kforward_reconnects_total", map[string]string{"forward": "api"}, 3},
		{"kforward_upstream_dial_seconds", map[string]string{"forward": "api"}, 4},
		{"kforward_health_check_seconds", map[string]string{"forward": "db"}, 0},
		{"kforward_config_last_reload_successful", nil, 0},
		{"kforward_config_last_reload_success_timestamp_seconds", nil, float64(at.Add(time.Minute).Unix())},
	} {
		if got := value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	hist := families["kforward_upstream_dial_seconds"].Metric[0].Histogram
	if hist.GetSampleSum() != 7.5 || len(hist.Bucket) != 3 || hist.Bucket[0].GetCumulativeCount() != 2 || hist.Bucket[1].GetUpperBound() != 1 {
		t.Errorf("dial histogram: %v", hist)
	}
	for name, mf := range families {
		if strings.HasPrefix(name, "kforward_") && mf.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
	}
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.Label {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func TestStatusIsTheSnapshot(t *testing.T) {
	want := snapshot()
	resp := get(t, Handler(&fakeSource{snap: want}), "GET", "/status")
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	var got runner.Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

func TestReadyz(t *testing.T) {
	src := &fakeSource{snap: snapshot()}
	resp := get(t, Handler(src), "GET", "/readyz")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || string(body) != "db: reconnecting: health check: timeout\n" {
		t.Errorf("one forward reconnecting: %d %q", resp.StatusCode, body)
	}
	src.snap.Forwards = src.snap.Forwards[:1]
	if resp := get(t, Handler(src), "GET", "/readyz"); resp.StatusCode != http.StatusOK {
		t.Errorf("every forward active: %d", resp.StatusCode)
	}
	if resp := get(t, Handler(src), "GET", "/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
}

func TestReadyzBeforeTheFileIsLoaded(t *testing.T) {
	src := &fakeSource{unloaded: true} // no forwards yet: none is waiting
	resp := get(t, Handler(src), "GET", "/readyz")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || string(body) != "not ready: the forwards file is not loaded yet\n" {
		t.Errorf("got %d %q, want 503 not loaded yet", resp.StatusCode, body)
	}
	if resp := get(t, Handler(src), "GET", "/status"); resp.StatusCode != http.StatusOK {
		t.Errorf("/status before load: %d, want 200 with what there is", resp.StatusCode)
	}
}

func TestNotReadySaysWhichPodIsMissing(t *testing.T) {
	got := NotReady([]forward.Status{
		{Name: "one", Target: "pod/one", State: forward.WaitingForPod},
		{Name: "web", Target: "deployment/web", State: forward.WaitingForPod},
		{Name: "db", Target: "service/db", State: forward.WaitingForPod, LastError: "service db has no selector"},
	})
	want := []string{
		"one: waiting-for-pod: no running pod of pod/one",
		"web: waiting-for-pod: no ready or running pod of deployment/web",
		"db: waiting-for-pod: service db has no selector",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestReloadEndpoint(t *testing.T) {
	src := &fakeSource{reload: runner.Reload{Successful: true, Changes: runner.Changes{Added: 1, Unchanged: 2}}}
	h := Handler(src)
	resp := get(t, h, "POST", "/-/reload")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "reloaded: 1 added, 0 removed, 0 restarted, 2 unchanged\n" {
		t.Errorf("valid file: %d %q", resp.StatusCode, body)
	}
	src.reload = runner.Reload{Errors: []string{"forwards.yaml:3:9: unknown field \"prot\"; allowed: ports"}}
	resp = get(t, h, "POST", "/-/reload")
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(body), "forwards.yaml:3:9: unknown field") {
		t.Errorf("invalid file: %d %q", resp.StatusCode, body)
	}
	if resp := get(t, h, "GET", "/-/reload"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /-/reload: %d, want 405", resp.StatusCode)
	}
}

func TestCheckAddr(t *testing.T) {
	for _, c := range []struct {
		addr     string
		explicit bool
		ok       bool
	}{
		{"127.0.0.1:7355", false, true},
		{"[::1]:7355", false, true},
		{"localhost:7355", false, true},
		{"0.0.0.0:7355", false, false},
		{"0.0.0.0:7355", true, true},
		{"192.168.1.5:7355", true, true},
		{":7355", true, false},
		{"7355", true, false},
		{"[fe80::1%eth0]:7355", true, true},
	} {
		if err := CheckAddr(c.addr, c.explicit); (err == nil) != c.ok {
			t.Errorf("CheckAddr(%q, %v) = %v, want ok=%v", c.addr, c.explicit, err, c.ok)
		}
	}
}

func TestCheckAddrRefusesTypos(t *testing.T) {
	for _, c := range []struct{ addr, want string }{
		{"127.0.0.1:99999", `status address "127.0.0.1:99999": the port must be a number from 1 to 65535`},
		{"127.0.0.1:abc", `status address "127.0.0.1:abc": the port must be a number from 1 to 65535`},
		{"127.0.0.1:0", `status address "127.0.0.1:0": the port must be a number from 1 to 65535`},
		{"127.0.0.1:-1", `status address "127.0.0.1:-1": the port must be a number from 1 to 65535`},
		{"127.0.0.1", `status address "127.0.0.1": want IP:PORT, e.g. 127.0.0.1:7355`},
		{"example.com:7355", `status address "example.com:7355": give an IP address (127.0.0.1, or the one to listen on) or localhost, not a host name`},
		{"localhost.example.com:7355", `status address "localhost.example.com:7355": give an IP address (127.0.0.1, or the one to listen on) or localhost, not a host name`},
	} {
		for _, explicit := range []bool{false, true} {
			err := CheckAddr(c.addr, explicit)
			if err == nil || err.Error() != c.want {
				t.Errorf("CheckAddr(%q, %v):\n got %v\nwant %s", c.addr, explicit, err, c.want)
			}
		}
	}
}

func TestServeBusyAddressIsAWarning(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var log strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		Serve(context.Background(), ln.Addr().String(), http.NotFoundHandler(), slog.New(slog.NewTextHandler(&log, nil)))
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve on a busy address did not return")
	}
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "already in use") {
		t.Errorf("log: %s", log.String())
	}
}

func TestFetchNothingRunning(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	_, err := Fetch(context.Background(), addr)
	if err == nil || err.Error() != "no kforward running at "+addr || !errors.Is(err, ErrNotRunning) {
		t.Errorf("err = %v", err)
	}
}

func TestFetchRefusesAnAddressWithoutPort(t *testing.T) {
	for _, addr := range []string{"127.0.0.1", "127.0.0.1:", ":7355", "127.0.0.1:http", "127.0.0.1:70000", "http://127.0.0.1:7355"} {
		_, err := FetchJSON(context.Background(), addr)
		want := fmt.Sprintf("invalid address %q: want HOST:PORT, e.g. 127.0.0.1:7355", addr)
		if err == nil || err.Error() != want {
			t.Errorf("FetchJSON(%q):\n got %v\nwant %s", addr, err, want)
		}
	}
}

// Only a refused connection means nothing is running there; a name that
// does not resolve says so.
func TestFetchOtherDialErrorsKeepTheirMessage(t *testing.T) {
	addr := "kforward-test.invalid:7355" // .invalid never resolves (RFC 2606)
	_, err := Fetch(context.Background(), addr)
	if err == nil || errors.Is(err, ErrNotRunning) || !strings.HasPrefix(err.Error(), "ask kforward at "+addr+": dial tcp: lookup kforward-test.invalid") {
		t.Errorf("err = %v, want the lookup failure", err)
	}
}

// The guard lets the client through, over a real loopback connection.
func TestFetchFromTheEndpoint(t *testing.T) {
	srv := httptest.NewServer(Handler(&fakeSource{snap: snapshot()}))
	defer srv.Close()
	got, err := Fetch(context.Background(), srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if want := snapshot(); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}
