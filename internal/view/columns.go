package view

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"

	"github.com/kforward/kforward/forward"
)

// The columns, by what they show.
const (
	colName = iota
	colNamespace
	colContext
	colTarget
	colLocal
	colPod
	colState
	colConns
	colIn
	colOut
	colTransport
	colReconnects
	colHealth
	colError
)

type column struct {
	id     int
	title  string
	cells  []cell // one per forward
	right  bool   // right-aligned
	middle bool   // truncated in the middle: pod names differ at their end

	level int // which variant of its cells it shows
	width int // what fit chose
}

// cell is one forward's value in a column, in variants from the longest
// to the most compact; tail is kept whole when the rest is truncated (an
// error's age). Both are styled already: widths are measured without
// escape codes, and truncation keeps them.
type cell struct {
	variants []string
	tail     string
}

func text(s ...string) cell { return cell{variants: s} }

func (c cell) at(level int) string { return c.variants[min(level, len(c.variants)-1)] }

func (c cell) width(level int) int { return ansi.StringWidth(c.at(level)) + ansi.StringWidth(c.tail) }

func (c cell) render(level, width int, middle bool) string {
	s := c.at(level)
	if c.width(level) <= width {
		return s + c.tail
	}
	if tw := ansi.StringWidth(c.tail); c.tail != "" && width-tw >= 8 {
		return ansi.Truncate(s, width-tw, "…") + c.tail
	}
	s += c.tail
	if middle && width >= 5 {
		head := (width - 1) / 2
		return ansi.Truncate(s, head, "") + "…" + ansi.TruncateLeft(s, ansi.StringWidth(s)-(width-1-head), "")
	}
	return ansi.Truncate(s, width, "…")
}

// natural is the column's width when nothing in it is truncated.
func (c *column) natural() int {
	w := ansi.StringWidth(c.title)
	for _, cl := range c.cells {
		w = max(w, cl.width(c.level))
	}
	return w
}

// step is one way to make a table narrower: show the columns' more
// compact variant (level), or truncate each to no less than shrink (nor
// than its title).
type step struct {
	cols   []int
	level  int
	shrink int
}

func shrink(w int, cols ...int) step { return step{cols: cols, shrink: w} }
func level(l int, cols ...int) step  { return step{cols: cols, level: l} }

// inlineSteps are tried with LAST ERROR as a column, which shrinks first.
// If they are not enough, the errors go under their rows, where they have
// the whole width, and narrowSteps apply to the rest instead.
var inlineSteps = []step{
	shrink(40, colError),
	level(1, colIn, colOut), // sparklines
	shrink(28, colTarget), shrink(28, colPod),
	shrink(12, colNamespace, colContext),
}

var narrowSteps = []step{
	level(1, colIn, colOut),
	shrink(28, colTarget), shrink(28, colPod),
	shrink(12, colNamespace, colContext),
	shrink(24, colTarget), shrink(20, colPod),
	level(2, colIn, colOut), // rates
	level(1, colState),
	level(1, colLocal),  // loopback ports only
	level(1, colTarget), // without the remote ports
	shrink(18, colPod), shrink(16, colTarget), shrink(12, colLocal), shrink(14, colName),
	shrink(10, colPod), shrink(10, colTarget), shrink(8, colName), shrink(6, colLocal),
}

// fit sets every column's level and width and reports whether the table
// is within width once the steps that were needed have been taken. A step
// that truncates takes only as much as the table is too wide.
func fit(cols []*column, width int, steps []step) bool {
	for _, c := range cols {
		c.level = 0
		c.width = c.natural()
	}
	total := func() int {
		t := len(gap) * (len(cols) - 1)
		for _, c := range cols {
			t += c.width
		}
		return t
	}
	// Once it fits, what the last step left over goes back to the
	// columns it truncated.
	grow := func() bool {
		for i := len(cols) - 1; i >= 0 && total() < width; i-- {
			c := cols[i]
			c.width += max(0, min(c.natural()-c.width, width-total()))
		}
		return true
	}
	for _, s := range steps {
		if total() <= width {
			return grow()
		}
		for _, c := range cols {
			if !slices.Contains(s.cols, c.id) {
				continue
			}
			if s.shrink > 0 {
				floor := max(s.shrink, ansi.StringWidth(c.title))
				c.width = max(min(c.width, floor), c.width-(total()-width))
			} else if s.level > c.level {
				c.level = s.level
				c.width = min(c.width, c.natural())
			}
		}
	}
	return total() <= width && grow()
}

// columns are the table's cells but LAST ERROR, in the order shown.
func columns(fs []forward.Status, rates *Rates, now time.Time, wide bool, p paint) []*column {
	n := len(fs)
	col := func(id int, title string) *column { return &column{id: id, title: title, cells: make([]cell, n)} }
	name, tgt, loc, pod := col(colName, "NAME"), col(colTarget, "TARGET"), col(colLocal, "LOCAL"), col(colPod, "POD")
	state, conns := col(colState, "STATE"), col(colConns, "CONNS")
	ns, ctx, transport := col(colNamespace, "NAMESPACE"), col(colContext, "CONTEXT"), col(colTransport, "TRANSPORT")
	reconnects, health := col(colReconnects, "RECONNECTS"), col(colHealth, "HEALTH")
	conns.right, reconnects.right, health.right = true, true, true
	pod.middle = true
	dash := p.faint("-")
	orDash := func(s string) string {
		if s == "" {
			return dash
		}
		return s
	}
	ins, outs := make([]int64, n), make([]int64, n)
	inHist, outHist := make([][]float64, n), make([][]float64, n)
	for i, f := range fs {
		name.cells[i] = text(f.Name)
		t := target(f)
		tgt.cells[i] = text(t, strings.TrimSuffix(t, ":"+ports(f)))
		l, bound := local(f)
		if bound {
			loc.cells[i] = text(l, loopbackPorts(f.Addresses))
		} else {
			loc.cells[i] = text(p.faint(l))
		}
		pod.cells[i] = text(orDash(f.Pod))
		st := stateText(f, now)
		for j := range st {
			st[j] = p.state(f.State, st[j])
		}
		state.cells[i] = text(st...)
		conns.cells[i] = text(strconv.FormatInt(f.Active, 10) + "/" + strconv.FormatInt(f.Total, 10))
		ns.cells[i] = text(orDash(f.Namespace))
		ctx.cells[i] = text(orDash(f.Context))
		transport.cells[i] = text(orDash(string(f.Transport)))
		reconnects.cells[i] = text(strconv.Itoa(f.Reconnects))
		health.cells[i] = text(orDash(rtt(f.HealthRTT)))
		ins[i], outs[i] = f.BytesIn, f.BytesOut
		inHist[i], outHist[i] = rates.history(f.Name)
	}
	in, out := col(colIn, "IN"), col(colOut, "OUT")
	in.cells = traffic(ins, inHist, "↓", p)
	out.cells = traffic(outs, outHist, "↑", p)
	if wide {
		return []*column{name, ns, ctx, tgt, loc, pod, state, conns, in, out, transport, reconnects, health}
	}
	return []*column{name, tgt, loc, pod, state, conns, in, out}
}

func ports(f forward.Status) string {
	remotes := make([]string, len(f.Ports))
	for i, p := range f.Ports {
		remotes[i] = p.Remote
	}
	return strings.Join(remotes, ",")
}

// loopbackPorts is LOCAL made compact: an address on loopback is just its
// port (listed once), any other keeps its host.
func loopbackPorts(addrs []string) string {
	var out []string
	seen := map[string]bool{}
	for _, a := range addrs {
		host, port := a, ""
		if i := strings.LastIndexByte(a, ':'); i >= 0 {
			host, port = a[:i], a[i+1:]
		}
		if host == "127.0.0.1" || host == "[::1]" || host == "localhost" {
			a = port
		}
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return strings.Join(out, ",")
}

// traffic is the IN or OUT cells: the total, then a sparkline of recent
// rates, then the current rate; variants drop the sparkline, then the rate.
// Totals are right-aligned and sparklines start in one column.
func traffic(totals []int64, hist [][]float64, arrow string, p paint) []cell {
	n := len(totals)
	tot, spark, rate := make([]string, n), make([]string, n), make([]string, n)
	wt, ws := 0, 0
	for i := range totals {
		tot[i] = size(float64(totals[i]))
		wt = max(wt, len(tot[i]))
		h := hist[i]
		if len(h) == 0 {
			continue
		}
		h = h[max(0, len(h)-sparkLen):]
		spark[i] = sparkline(h)
		ws = max(ws, len(h))
		if last := h[len(h)-1]; last >= 0.5 {
			rate[i] = arrow + size(last) + "/s"
		}
	}
	cells := make([]cell, n)
	for i := range totals {
		t := strings.Repeat(" ", wt-len(tot[i])) + tot[i]
		r := ""
		if rate[i] != "" {
			r = " " + rate[i]
		}
		s := ""
		if ws > 0 {
			s = " " + strings.Repeat(" ", ws-len([]rune(spark[i]))) + p.cyan(spark[i])
		}
		cells[i] = text(strings.TrimRight(t+s+r, " "), t+r, t)
	}
	return cells
}

// errorCells are LAST ERROR: the error's first line and, kept when it is
// truncated, its age. Red while the forward is failing because of it,
// faint once it works again.
func errorCells(fs []forward.Status, now time.Time, p paint) []cell {
	cells := make([]cell, len(fs))
	for i, f := range fs {
		msg := firstLine(f.LastError)
		if msg == "" {
			cells[i] = text("")
			continue
		}
		tail := ""
		if !f.LastErrorAt.IsZero() {
			tail = p.faint(" (" + short(max(0, now.Sub(f.LastErrorAt))) + " ago)")
		}
		switch f.State {
		case forward.Failed:
			msg = p.red(msg)
		case forward.Reconnecting, forward.WaitingForPod:
			msg = p.yellow(msg)
		default:
			msg = p.faint(msg)
		}
		cells[i] = cell{variants: []string{msg}, tail: tail}
	}
	return cells
}
