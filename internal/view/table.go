package view

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"

	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/runner"
)

// Options change how Table draws.
type Options struct {
	Wide  bool // also NAMESPACE, CONTEXT, TRANSPORT, RECONNECTS and HEALTH
	Color bool // basic ANSI colours, bold and faint; false: no escape code at all

	// Height is how many lines the table may take (0: no limit). Rows that
	// do not fit are counted on its last line.
	Height int
	// Err is shown first on the header line, and the snapshot below it is
	// the last one there was: `status --watch` when the last fetch failed.
	Err error
}

const gap = "  " // between columns

// Table renders the snapshot once as the view's table, at most width
// columns wide: a header line (file, how many forwards are active, the last
// reload), then a row per forward. Where the columns do not fit, the last
// error shrinks first, then rates and sparklines go, then the longer
// columns are truncated with "…"; when even that is not enough the errors
// move to a line of their own under their row. now is the clock (ages,
// retry countdowns); rates may be nil (IN and OUT show totals only).
// Every line ends in a newline. A width under 20 is taken as 20.
func Table(snap runner.Snapshot, rates *Rates, now time.Time, width int, opts Options) string {
	p := paint(opts.Color)
	width = max(width, 20)
	var lines []string
	lines = append(lines, header(snap, now, width, opts, p))
	if opts.Err != nil && snap.File == "" && len(snap.Forwards) == 0 {
		return lines[0] + "\n" // never had a snapshot: nothing more to show
	}
	if len(snap.Forwards) == 0 {
		return lines[0] + "\n" + p.faint("no forwards") + "\n"
	}

	cols := columns(snap.Forwards, rates, now, opts.Wide, p)
	errs := errorCells(snap.Forwards, now, p)
	errCol := &column{id: colError, title: "LAST ERROR", cells: errs}
	inline := append(cols[:len(cols):len(cols)], errCol)
	if fit(inline, width, inlineSteps) {
		cols, errs = inline, nil
	} else {
		fit(cols, width, narrowSteps)
	}

	lines = append(lines, row(cols, func(c *column) string { return p.bold(c.title) }, width))
	var body [][]string // lines per forward
	for r := range snap.Forwards {
		group := []string{row(cols, func(c *column) string { return c.cells[r].render(c.level, c.width, c.middle) }, width)}
		if errs != nil && errs[r].variants[0] != "" {
			const indent = "  ↳ "
			group = append(group, indent+errs[r].render(0, width-ansi.StringWidth(indent), false))
		}
		body = append(body, group)
	}
	room := -1 // lines left for the rows: no limit
	if opts.Height > 0 {
		room = max(0, opts.Height-len(lines))
	}
	lines = append(lines, limit(body, room, p)...)
	return strings.Join(lines, "\n") + "\n"
}

// limit keeps the rows that fit in room lines (< 0: all), the last line
// then saying how many did not.
func limit(body [][]string, room int, p paint) []string {
	var all []string
	for _, g := range body {
		all = append(all, g...)
	}
	if room < 0 || len(all) <= room {
		return all
	}
	if room == 0 {
		return nil
	}
	var out []string
	shown := 0
	for _, g := range body {
		if len(out)+len(g) > room-1 {
			break
		}
		out = append(out, g...)
		shown++
	}
	return append(out, p.faint(fmt.Sprintf("… %d more", len(body)-shown)))
}

// row lays out one line: each column padded to its width, the line
// trimmed of trailing blanks and cut at width as a last resort.
func row(cols []*column, text func(*column) string, width int) string {
	var b strings.Builder
	for i, c := range cols {
		if i > 0 {
			b.WriteString(gap)
		}
		s := text(c)
		pad := strings.Repeat(" ", max(0, c.width-ansi.StringWidth(s)))
		if c.right {
			b.WriteString(pad + s)
		} else {
			b.WriteString(s + pad)
		}
	}
	return ansi.Truncate(strings.TrimRight(b.String(), " "), width, "…")
}

// header is the line above the table: the file, how many forwards are
// active, and how the last reload went; the most detailed form that fits.
func header(snap runner.Snapshot, now time.Time, width int, opts Options, p paint) string {
	var first []string
	if opts.Err != nil {
		first = append(first, p.red(firstLine(opts.Err.Error())))
		if snap.File == "" && len(snap.Forwards) == 0 {
			return ansi.Truncate(first[0], width, "…")
		}
	}
	if snap.File != "" {
		first = append(first, p.bold(snap.File))
	}
	active := 0
	for _, f := range snap.Forwards {
		if f.State == forward.Active {
			active++
		}
	}
	n := len(snap.Forwards)
	paintCount := func(s string) string {
		switch {
		case n > 0 && active == n:
			return p.green(s)
		case n > 0:
			return p.yellow(s)
		}
		return s
	}
	counts := []string{
		fmt.Sprintf("%d%s, %s", n, plural(n, " forward", " forwards"), paintCount(fmt.Sprintf("%d active", active))),
		paintCount(fmt.Sprintf("%d/%d active", active, n)),
	}
	reloads := []string{reload(snap.LastReload, now, true, p), reload(snap.LastReload, now, false, p)}
	var line string
	for _, v := range [][2]int{{0, 0}, {0, 1}, {1, 1}} {
		parts := append(slices.Clone(first), counts[v[0]])
		if r := reloads[v[1]]; r != "" {
			parts = append(parts, r)
		}
		line = strings.Join(parts, p.faint(" · "))
		if ansi.StringWidth(line) <= width {
			break
		}
	}
	return ansi.Truncate(line, width, "…")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// triggers say what made the runner read the file.
var triggers = map[string]string{
	runner.TriggerFile:    "file changed",
	runner.TriggerSignal:  "SIGHUP",
	runner.TriggerRequest: "requested",
}

// reload is the last reload: when, why, and what it changed, or its first
// error with the file:line:col it names.
func reload(r runner.Reload, now time.Time, long bool, p paint) string {
	if r.At.IsZero() {
		return ""
	}
	at := r.At.In(now.Location()).Format("15:04:05")
	why, ok := triggers[r.Trigger]
	if !ok {
		why = r.Trigger
	}
	why = " (" + why + ")"
	if !long {
		why = ""
	}
	if !r.Successful {
		what := "reload " + at + why + " failed"
		if long {
			what += ", nothing changed"
		}
		if r.Trigger == runner.TriggerStart {
			what = "start " + at + " failed"
		}
		if len(r.Errors) == 0 {
			return p.red(what)
		}
		more := ""
		if len(r.Errors) > 1 {
			more = fmt.Sprintf(" (+%d more)", len(r.Errors)-1)
		}
		return p.red(what+": ") + firstLine(r.Errors[0]) + p.faint(more)
	}
	if r.Trigger == runner.TriggerStart {
		return "started " + at
	}
	var changes []string
	for _, c := range []struct {
		n    int
		what string
	}{{r.Added, "added"}, {r.Removed, "removed"}, {r.Restarted, "restarted"}} {
		if c.n > 0 {
			changes = append(changes, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	if len(changes) == 0 {
		changes = []string{"nothing changed"}
	}
	return "reloaded " + at + why + ": " + p.green(strings.Join(changes, ", "))
}
