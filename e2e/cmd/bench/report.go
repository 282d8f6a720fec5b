package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
)

// row is one line of the table: a figure of a scenario.
type row struct {
	id     string // key of its samples
	group  string // the scenario, printed once above its rows
	figure string
	higher bool // higher is better (else lower is)
}

// layout lists the table's rows, in order, with the sizes of this run in
// the scenario titles.
func layout(o options) []row {
	mib := func(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }
	g1 := "1 throughput, one connection, " + mib(o.size)
	g2 := fmt.Sprintf("2 throughput, %d parallel connections, %s in all", o.parallel, mib(o.size))
	g3 := fmt.Sprintf("3 new connection: connect, 1 byte each way, close; %d times", o.conns)
	g4 := fmt.Sprintf("4 requests over open connections, %d bytes each way, %s", o.msg, o.rateFor)
	g5 := "5 CPU in the forwarding process"
	g6 := fmt.Sprintf("6 slow reader: one client stalls on 1 GiB; another requests every %s for %s", o.slowEvery, o.slowWindow)
	g6a := fmt.Sprintf("6a paced reader: one client reads %s at %.1f MB/s, slower than the pod sends; another requests every %s", mib(o.pacedSize), float64(o.pacedRate)/1e6, o.slowEvery)
	g6b := fmt.Sprintf("6b slow uplink (%d KiB/s up, %s each way): %s uploaded; another requests every 500 ms", o.uplinkRate>>10, o.uplinkDelay, mib(o.uplinkSize))
	g7 := "7 recovery: rollout restart of a 2-replica deployment, a connection every 50 ms"
	g8 := fmt.Sprintf("8 reload: a forward added per reload, %d reloads", o.reloads)
	g9 := fmt.Sprintf("9 scale: %d forwards to %d pods", o.scale, o.scale)
	g10 := fmt.Sprintf("10 idle cost per forward (%d idle forwards, %s windows)", o.scale, o.idle)
	return []row{
		{"download", g1, "download, MB/s", true},
		{"upload", g1, "upload, MB/s", true},
		{"parallel", g2, "download, MB/s", true},
		{"connect.p50", g3, "p50, ms", false},
		{"connect.p99", g3, "p99, ms", false},
		{"rate1.rps", g4, "1 connection: requests/s", true},
		{"rate1.p50", g4, "1 connection: p50, ms", false},
		{"rate1.p99", g4, "1 connection: p99, ms", false},
		{"rateN.rps", g4, fmt.Sprintf("%d connections: requests/s", o.rateConns), true},
		{"rateN.p50", g4, fmt.Sprintf("%d connections: p50, ms", o.rateConns), false},
		{"rateN.p99", g4, fmt.Sprintf("%d connections: p99, ms", o.rateConns), false},
		{"cpu.download", g5, "CPU-s per GiB, download", false},
		{"cpu.upload", g5, "CPU-s per GiB, upload", false},
		{"cpu.parallel", g5, fmt.Sprintf("CPU-s per GiB, %d parallel downloads", o.parallel), false},
		{"slow.share", g6, "share of requests answered", true},
		{"slow.worst", g6, "worst latency of an answered request, ms", false},
		{"paced.mb", g6a, "MB the paced reader got before its connection ended", true},
		{"paced.worst", g6a, "worst latency of the other requests, ms", false},
		{"paced.failed", g6a, "other requests failed", false},
		{"uplink.mb", g6b, "MB the pod got intact before the upload ended", true},
		{"uplink.reconnects", g6b, "tunnels redialed (kubectl: exited)", false},
		{"uplink.failed", g6b, "other requests failed", false},
		{"uplink.worst", g6b, "slowest other request, ms", false},
		{"recovery", g7, "first new pod Ready -> first answer from a new pod, ms", false},
		{"reload.ms", g8, "file written -> added forward's first answer, ms", false},
		{"reload.dropped", g8, "connections dropped on an unchanged forward", false},
		{"scale.active", g9, "start -> every forward answered, s", false},
		{"scale.rss", g9, "RSS, MiB", false},
		{"scale.cpu", g9, fmt.Sprintf("CPU while idle for %s, %% of a core", o.idle), false},
		{"scale.rssUsed", g9, fmt.Sprintf("RSS after %d MiB through every forward, MiB", usedDownload>>20), false},
		{"idle.cpu", g10, "CPU, ms per minute", false},
		{"idle.api", g10, "API-server requests per minute (minus a baseline)", false},
	}
}

// sample is one raw figure: one forwarder, one round. A figure that is not
// a number (kubectl "exits") or a failed measurement has a note instead.
type sample struct {
	Row       string   `json:"row"`
	Forwarder string   `json:"forwarder"`
	Round     int      `json:"round"`
	Value     *float64 `json:"value,omitempty"`
	Note      string   `json:"note,omitempty"`
	// Extrapolated marks a figure scaled up from fewer processes.
	Extrapolated bool `json:"extrapolated,omitempty"`
}

// results collects samples; scenarios add to it as they go.
type results struct {
	mu      sync.Mutex
	samples []sample
}

func (r *results) add(s sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, s)
}

func (r *results) value(row string, f forwarder, round int, v float64) {
	r.add(sample{Row: row, Forwarder: f.Name, Round: round, Value: &v})
}

func (r *results) note(row string, f forwarder, round int, note string) {
	r.add(sample{Row: row, Forwarder: f.Name, Round: round, Note: note})
}

func (r *results) all() []sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.samples)
}

// failed counts samples that record a failed measurement.
func (r *results) failed() int {
	n := 0
	for _, s := range r.all() {
		if strings.HasPrefix(s.Note, noteError) {
			n++
		}
	}
	return n
}

const noteError = "error"

// cell summarises one row for one forwarder: the median of its rounds.
type cell struct {
	text   string
	median float64
	number bool // every sample was a number: the median can be compared
}

func summarise(samples []sample) cell {
	var vals []float64
	var notes []string
	extrapolated := false
	for _, s := range samples {
		if s.Value != nil {
			vals = append(vals, *s.Value)
			extrapolated = extrapolated || s.Extrapolated
		} else {
			notes = append(notes, s.Note)
		}
	}
	switch {
	case len(samples) == 0:
		return cell{text: "-"}
	case len(vals) == 0:
		return cell{text: mostCommon(notes)}
	}
	c := cell{median: median(vals), number: len(notes) == 0}
	c.text = format(c.median)
	if extrapolated {
		c.text += " (extrap.)"
	}
	if len(notes) > 0 {
		c.text += fmt.Sprintf(" (%d of %d; %s)", len(vals), len(samples), mostCommon(notes))
	}
	return c
}

func mostCommon(notes []string) string {
	count := map[string]int{}
	best := ""
	for _, n := range notes {
		count[n]++
		if count[n] > count[best] || (count[n] == count[best] && n < best) {
			best = n
		}
	}
	return best
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile returns the p-th percentile (0-100) of v, nearest rank.
func percentile(v []float64, p float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func format(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 0.1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// ratios are the last columns: kforward over kubectl, same transport, and
// with --baseline kforward over the binary it is compared with.
var ratios = [][2]string{{"kforward-ws", "kubectl-ws"}, {"kforward-spdy", "kubectl-spdy"}, {"kforward-ws", "before-ws"}, {"kforward-spdy", "before-spdy"}}

// writeTable prints one row per figure, one column per forwarder, and the
// kforward/kubectl ratios last.
func writeTable(w io.Writer, o options, fs []forwarder, samples []sample) {
	by := map[string]map[string][]sample{}
	for _, s := range samples {
		if by[s.Row] == nil {
			by[s.Row] = map[string][]sample{}
		}
		by[s.Row][s.Forwarder] = append(by[s.Row][s.Forwarder], s)
	}
	header := []string{""}
	for _, f := range fs {
		header = append(header, f.Name)
	}
	var shown [][2]string
	for _, r := range ratios {
		if slices.ContainsFunc(fs, func(f forwarder) bool { return f.Name == r[1] }) {
			shown = append(shown, r)
			label := "kf/kc"
			if strings.HasPrefix(r[1], "before-") {
				label = "now/before"
			}
			header = append(header, strings.TrimPrefix(r[0], "kforward-")+": "+label)
		}
	}
	lines := [][]string{header}
	group := ""
	for _, r := range layout(o) {
		if by[r.id] == nil {
			continue
		}
		if r.group != group {
			group = r.group
			lines = append(lines, []string{group})
		}
		better := "(less is better)"
		if r.higher {
			better = "(more is better)"
		}
		line := []string{"  " + r.figure + " " + better}
		cells := map[string]cell{}
		for _, f := range fs {
			c := summarise(by[r.id][f.Name])
			cells[f.Name] = c
			line = append(line, c.text)
		}
		for _, rt := range shown {
			a, b := cells[rt[0]], cells[rt[1]]
			text := "-"
			if a.number && b.number && a.median >= 0 && b.median > 0 { // a ratio of noise around 0 means nothing
				text = fmt.Sprintf("%.2fx", a.median/b.median)
			}
			line = append(line, text)
		}
		lines = append(lines, line)
	}
	// Column widths: a scenario title spans the whole line, so it does not
	// widen the first column.
	width := make([]int, len(header))
	for _, l := range lines {
		if len(l) == 1 && l[0] != "" && !strings.HasPrefix(l[0], " ") {
			continue
		}
		for i, c := range l {
			width[i] = max(width[i], len(c))
		}
	}
	for _, l := range lines {
		var b strings.Builder
		for i, c := range l {
			switch {
			case len(l) == 1:
				b.WriteString(c)
			case i == 0:
				fmt.Fprintf(&b, "%-*s", width[0], c)
			default:
				fmt.Fprintf(&b, "  %*s", width[i], c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	fmt.Fprintln(w, "Each cell is the median of the rounds. kf/kc: kforward divided by kubectl, same transport. \"-\": not measured for this forwarder.")
	if slices.ContainsFunc(samples, func(s sample) bool { return s.Extrapolated }) {
		fmt.Fprintf(w, "(extrap.): measured on %d kubectl processes (one forward each) and multiplied by %d/%d.\n", o.scaleKubectl, o.scale, o.scaleKubectl)
	}
}

// report is what --json writes: the raw figures and what produced them.
type report struct {
	Machine   map[string]string `json:"machine"`
	Options   map[string]string `json:"options"`
	Rows      []jsonRow         `json:"rows"`
	Samples   []sample          `json:"samples"`
	Forwarder []string          `json:"forwarders"`
}

type jsonRow struct {
	ID     string `json:"id"`
	Group  string `json:"scenario"`
	Figure string `json:"figure"`
	Higher bool   `json:"higherIsBetter"`
}

func writeJSON(path string, o options, machine map[string]string, fs []forwarder, samples []sample) error {
	rep := report{Machine: machine, Options: o.strings(), Samples: samples}
	for _, r := range layout(o) {
		rep.Rows = append(rep.Rows, jsonRow{r.id, r.group, r.figure, r.higher})
	}
	for _, f := range fs {
		rep.Forwarder = append(rep.Forwarder, f.Name)
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
