package view

import (
	"strings"
	"testing"
	"time"

	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/runner"
)

func snapshotOf(fs ...forward.Status) runner.Snapshot { return runner.Snapshot{Forwards: fs} }

func TestRatesFromTwoSnapshots(t *testing.T) {
	var r Rates
	r.Add(snapshotOf(forward.Status{Name: "api", BytesIn: 1 * miB, BytesOut: 100}), now)
	r.Add(snapshotOf(forward.Status{Name: "api", BytesIn: 5 * miB, BytesOut: 100 + 3*kiB}), now.Add(2*time.Second))
	in, out := r.history("api")
	if len(in) != 1 || in[0] != 2*miB || out[0] != 1.5*kiB {
		t.Fatalf("got in %v, out %v B/s; want [%d] and [%d]", in, out, 2*miB, 3*kiB/2)
	}
	s := runner.Snapshot{Forwards: []forward.Status{{Name: "api", State: forward.Active, BytesIn: 5 * miB, BytesOut: 100 + 3*kiB}}}
	table := Table(s, &r, now.Add(2*time.Second), 200, Options{})
	if !strings.Contains(table, "5.0 MiB") || !strings.Contains(table, "↓2.0 MiB/s") || !strings.Contains(table, "↑1.5 KiB/s") {
		t.Errorf("table does not show the totals and rates 5.0 MiB ↓2.0 MiB/s, ↑1.5 KiB/s:\n%s", table)
	}
}

func TestRatesKeepsLastSamplesOnly(t *testing.T) {
	var r Rates
	for i := range 20 {
		r.Add(snapshotOf(forward.Status{Name: "api", BytesIn: int64(i * i)}), now.Add(time.Duration(i)*time.Second))
	}
	in, _ := r.history("api")
	if len(in) != sparkLen || in[len(in)-1] != 19*19-18*18 {
		t.Errorf("got %v, want the last %d intervals ending with %d", in, sparkLen, 19*19-18*18)
	}
}

func TestRatesRestartedForwardStartsOver(t *testing.T) {
	var r Rates
	r.Add(snapshotOf(forward.Status{Name: "api", BytesIn: 10 * miB}), now)
	r.Add(snapshotOf(forward.Status{Name: "api", BytesIn: 1 * kiB}), now.Add(time.Second))
	if in, _ := r.history("api"); len(in) != 0 {
		t.Errorf("after the counter went back: got rates %v, want none", in)
	}
	r.Add(snapshotOf(forward.Status{Name: "api", BytesIn: 3 * kiB}), now.Add(2*time.Second))
	if in, _ := r.history("api"); len(in) != 1 || in[0] != 2*kiB {
		t.Errorf("got %v, want [%d]", in, 2*kiB)
	}
}

func TestRatesForgetsRemovedForwards(t *testing.T) {
	var r Rates
	r.Add(snapshotOf(forward.Status{Name: "api"}, forward.Status{Name: "db"}), now)
	r.Add(snapshotOf(forward.Status{Name: "db"}), now.Add(time.Second))
	if _, ok := r.series["api"]; ok {
		t.Error("api is still remembered after it left the snapshot")
	}
	r.Add(snapshotOf(forward.Status{Name: "api", BytesIn: 5}), now.Add(2*time.Second))
	if in, _ := r.history("api"); len(in) != 0 {
		t.Errorf("api came back with old history: %v", in)
	}
}

func TestRatesNilShowsTotalsOnly(t *testing.T) {
	out := Table(fixture(), nil, now, 300, Options{})
	if strings.ContainsAny(out, "↓↑▁") || !strings.Contains(out, "12.3 MiB") || !strings.Contains(out, "1.1 MiB") {
		t.Errorf("want totals and no rates or sparklines without history, got:\n%s", out)
	}
}

func TestSparkline(t *testing.T) {
	if got, want := sparkline([]float64{0, 1, 2, 4, 8}), "▁▂▃▅█"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := sparkline([]float64{0, 0}), "▁▁"; got != want {
		t.Errorf("idle: got %q, want %q", got, want)
	}
}
