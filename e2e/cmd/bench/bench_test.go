package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestBenchTiny runs every scenario once, at a tiny size, against a real
// local control plane, and checks that each produced sane figures for
// every forwarder it applies to, that the table and the JSON agree on what
// was measured, and that no process is left behind. It asserts no speed.
func TestBenchTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts the local control plane (not run with -short)")
	}
	jsonFile := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr bytes.Buffer
	args := []string{"--json", jsonFile, "--rounds", "1", "--size-mib", "1", "--parallel", "2", "--conns", "10",
		"--rate-for", "300ms", "--rate-conns", "4", "--slow-every", "250ms", "--slow-for", "1s",
		"--reloads", "2", "--scale", "4", "--scale-kubectl", "2", "--idle", "1s",
		"--paced-mib", "1", "--paced-rate", "4194304", "--uplink-mib", "1", "--uplink-rate", "1048576"}
	err := run(t.Context(), args, &stdout, &stderr)
	t.Logf("stderr:\n%s", stderr.String())
	t.Logf("stdout:\n%s", stdout.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if left := children(t); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
	started.Lock()
	for _, pid := range started.pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("forwarder process %d still exists (kill 0: %v)", pid, err)
		}
	}
	npids := len(started.pids)
	started.Unlock()
	if npids == 0 {
		t.Error("no forwarder process was started")
	}

	data, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("decode %s: %v", jsonFile, err)
	}
	withKubectl := strings.Contains(strings.Join(rep.Forwarder, ","), "kubectl")
	if !withKubectl && !strings.Contains(stderr.String(), "measuring kforward alone") {
		t.Error("kubectl was not measured, and the run did not say so")
	}
	got := map[string]map[string][]sample{}
	for _, s := range rep.Samples {
		if got[s.Row] == nil {
			got[s.Row] = map[string][]sample{}
		}
		got[s.Row][s.Forwarder] = append(got[s.Row][s.Forwarder], s)
	}
	for _, r := range rep.Rows {
		for _, f := range forwarders(withKubectl, "") {
			ss := got[r.ID][f.Name]
			want := applies(r.ID, f)
			if !want {
				if len(ss) > 0 {
					t.Errorf("%s, %s: got %d samples, want none", r.ID, f.Name, len(ss))
				}
				continue
			}
			if len(ss) == 0 {
				t.Errorf("%s, %s: no figure", r.ID, f.Name)
				continue
			}
			for _, s := range ss {
				if msg := sane(r.ID, f, s); msg != "" {
					t.Errorf("%s, %s: %s (sample %+v, value %s)", r.ID, f.Name, msg, s, show(s.Value))
				}
			}
			if !strings.Contains(stdout.String(), r.Figure) {
				t.Errorf("the table has no row %q", r.Figure)
			}
		}
	}
	// The percentiles of one round are ordered.
	for _, pair := range [][2]string{{"connect.p50", "connect.p99"}, {"rate1.p50", "rate1.p99"}, {"rateN.p50", "rateN.p99"}} {
		for f, ss := range got[pair[0]] {
			if p50, p99 := ss[0].Value, got[pair[1]][f][0].Value; p50 != nil && p99 != nil && *p99 < *p50 {
				t.Errorf("%s: %s %v > %s %v", f, pair[0], *p50, pair[1], *p99)
			}
		}
	}
	for _, name := range rep.Forwarder {
		if !strings.Contains(stdout.String(), name) {
			t.Errorf("the table has no column %s", name)
		}
	}
}

// applies says whether a row is measured for a forwarder.
func applies(row string, f forwarder) bool {
	switch {
	case strings.HasPrefix(row, "reload."):
		return f.kind == kforwardKind
	case strings.HasPrefix(row, "cpu."), row == "recovery", strings.HasPrefix(row, "scale."), strings.HasPrefix(row, "idle."),
		strings.HasPrefix(row, "uplink."):
		return f.kind != direct
	}
	return true
}

// sane returns what is wrong with a sample, or "".
func sane(row string, f forwarder, s sample) string {
	if s.Note == noteError {
		return "the measurement failed"
	}
	if s.Value == nil {
		switch {
		case row == "recovery" && f.kind == kubectlKind && s.Note == "exits":
			return ""
		case row == "slow.worst" && s.Note == "none answered":
			return ""
		}
		return "no value"
	}
	v := *s.Value
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "not a finite number"
	}
	switch {
	case row == "slow.share" && (v < 0 || v > 1):
		return "a share outside [0, 1]"
	case row == "slow.share" && f.kind == direct && v != 1:
		return "the backend itself did not answer every request"
	case (row == "reload.dropped" || row == "paced.failed" || row == "uplink.failed" || row == "uplink.reconnects") && (v < 0 || v != math.Trunc(v)):
		return "not a count"
	case row == "paced.mb" && f.kind == direct && v < 1<<20/1e6:
		return "the backend itself did not send everything"
	case row == "idle.api", row == "recovery":
		// idle.api is net of a baseline, so noise may make it negative;
		// recovery may be too, by the lag of the harness's own pod watch.
	case strings.HasPrefix(row, "cpu.") || row == "scale.cpu" || row == "idle.cpu" || row == "reload.dropped" ||
		strings.HasSuffix(row, ".failed") || row == "uplink.reconnects" || row == "paced.worst" || row == "uplink.worst":
		// Counts may be 0, and a tiny run may see no other request.
		if v < 0 {
			return "negative"
		}
	case v <= 0:
		return "not positive"
	}
	if strings.HasPrefix(row, "scale.") && f.kind == kubectlKind && !s.Extrapolated {
		return "kubectl's scale figure is not marked extrapolated"
	}
	return ""
}

func show(v *float64) string {
	if v == nil {
		return "none"
	}
	return strconv.FormatFloat(*v, 'g', -1, 64)
}

// children lists the processes whose parent is this one.
func children(t *testing.T) []string {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	me := strconv.Itoa(os.Getpid())
	var out []string
	for _, path := range stats {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		i := bytes.LastIndexByte(data, ')')
		if f := strings.Fields(string(data[i+1:])); len(f) > 1 && f[1] == me {
			out = append(out, string(data[:i+1]))
		}
	}
	return out
}
