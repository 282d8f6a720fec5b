package view

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/x/ansi"

	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/runner"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or writes it there with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/view -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test ./internal/view -update rewrites it)\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestTableGolden(t *testing.T) {
	failed := fixture()
	failed.LastReload = runner.Reload{
		At: now.Add(-5 * time.Second), Trigger: runner.TriggerFile,
		Errors: []string{
			`forwards.yaml:12:3: unknown key "prots"`,
			`forwards.yaml:20:11: port "99999" is out of range`,
		},
	}
	started := fixture()
	started.LastReload = runner.Reload{At: now.Add(-time.Hour), Trigger: runner.TriggerStart, Successful: true, Changes: runner.Changes{Added: 5}}
	noErrors := fixture()
	for i := range noErrors.Forwards {
		noErrors.Forwards[i].LastError = ""
	}
	tests := []struct {
		file  string
		snap  runner.Snapshot
		rates *Rates
		width int
		opts  Options
	}{
		// every state, a long error truncated, narrow: errors under their rows
		{"table-80.txt", fixture(), fixtureRates(), 80, Options{}},
		{"table-140.txt", fixture(), fixtureRates(), 140, Options{}},
		// wide enough for LAST ERROR as a column, sparklines and rates
		{"table-260.txt", fixture(), fixtureRates(), 260, Options{}},
		{"table-no-rates-120.txt", fixture(), nil, 120, Options{}},
		{"table-no-errors-120.txt", noErrors, fixtureRates(), 120, Options{}},
		{"wide-140.txt", fixture(), fixtureRates(), 140, Options{Wide: true}},
		{"wide-220.txt", fixture(), fixtureRates(), 220, Options{Wide: true}},
		{"reload-failed-100.txt", failed, nil, 100, Options{}},
		{"started-100.txt", started, nil, 100, Options{}},
		{"height-8-100.txt", fixture(), nil, 100, Options{Height: 8}},
		{"fetch-error-100.txt", fixture(), nil, 100, Options{Err: errors.New("no kforward running at 127.0.0.1:7355")}},
		{"fetch-error-never-100.txt", runner.Snapshot{}, nil, 100, Options{Err: errors.New("no kforward running at 127.0.0.1:7355")}},
		{"empty-80.txt", runner.Snapshot{File: "forwards.yaml"}, nil, 80, Options{}},
		// the colours: state, error by state, header
		{"color-140.txt", fixture(), fixtureRates(), 140, Options{Color: true}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			golden(t, tt.file, Table(tt.snap, tt.rates, now, tt.width, tt.opts))
		})
	}
}

func TestTableFitsWidth(t *testing.T) {
	for _, opts := range []Options{{}, {Wide: true}, {Color: true}, {Wide: true, Color: true, Err: errors.New("no kforward running at 127.0.0.1:7355")}} {
		for width := 20; width <= 280; width++ {
			out := Table(fixture(), fixtureRates(), now, width, opts)
			for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
				if w := ansi.StringWidth(line); w > width {
					t.Fatalf("%+v at %d columns: line %d is %d wide: %q", opts, width, i, w, line)
				}
			}
		}
	}
}

func TestTableNoColorHasNoEscape(t *testing.T) {
	for _, opts := range []Options{{}, {Wide: true}, {Height: 5}, {Err: errors.New("no kforward running")}} {
		for _, width := range []int{20, 80, 120, 200, 300} {
			out := Table(fixture(), fixtureRates(), now, width, opts)
			if i := strings.IndexByte(out, 0x1b); i >= 0 {
				t.Fatalf("%+v at %d columns: ESC at byte %d:\n%s", opts, width, i, out)
			}
		}
	}
	if out := Table(fixture(), nil, now, 120, Options{Color: true}); !strings.Contains(out, "\x1b[") {
		t.Fatalf("with Color, no escape code at all:\n%s", out)
	}
}

func TestTableTruncatesLongErrorKeepingAge(t *testing.T) {
	out := Table(fixture(), nil, now, 80, Options{})
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "error upgrading connection") {
			line = l
		}
	}
	if !strings.HasSuffix(line, "… (3s ago)") || strings.Contains(out, "second line") {
		t.Fatalf("grafana's error line: got %q, want its first line cut with … before its age (3s ago)", line)
	}
}

func TestTableColumns(t *testing.T) {
	out := Table(fixture(), fixtureRates(), now, 400, Options{Wide: true})
	for _, want := range []string{
		"svc/api:http", "sts/postgres:5432", "deploy/grafana:3000", "pod/prometheus-0:9090", "selector/app=web,tier=frontend:8080,metrics",
		"localhost:5432", "127.0.0.1:49152", ":8080,9100",
		"active", "waiting for pod", "reconnecting in 3s", "failed", "starting",
		"2/57", "12.3 MiB", "↓150 KiB/s", "▁", "3.2ms", "websocket", "kind-dev", "monitoring",
		"dial tcp 10.0.0.5:8080: connect: connection refused (2m ago)",
		"reloaded 11:58:30 (file changed): 1 added, 1 restarted",
		"5 forwards, 1 active",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}

func TestLocalhostJoinsLoopbackPair(t *testing.T) {
	got := strings.Join(localhost([]string{"127.0.0.1:5432", "[::1]:5432", "127.0.0.1:6000", "0.0.0.0:80", "[::1]:7000"}), ",")
	if want := "localhost:5432,127.0.0.1:6000,0.0.0.0:80,[::1]:7000"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestStateCountdownRoundsUp(t *testing.T) {
	s := forward.Status{State: forward.Reconnecting, RetryAt: now.Add(2100 * time.Millisecond)}
	if got := stateText(s, now)[0]; got != "reconnecting in 3s" {
		t.Errorf("got %q, want %q", got, "reconnecting in 3s")
	}
	s.RetryAt = now.Add(-time.Second)
	if got := stateText(s, now)[0]; got != "reconnecting" {
		t.Errorf("retry time past: got %q, want %q", got, "reconnecting")
	}
}

func TestSize(t *testing.T) {
	for _, tt := range []struct {
		n    float64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {12*miB + 300*kiB, "12.3 MiB"}, {234 * miB, "234 MiB"}, {3 << 30, "3.0 GiB"}} {
		if got := size(tt.n); got != tt.want {
			t.Errorf("size(%v): got %q, want %q", tt.n, got, tt.want)
		}
	}
}
