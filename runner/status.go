package runner

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/kforward/kforward/forward"
)

// Snapshot is the runner at one moment: the file, how its last reload went,
// and every forward's status. A running kforward serves it as GET /status,
// so its JSON names are an interface: add, never rename.
type Snapshot struct {
	File       string           `json:"file"`
	Started    time.Time        `json:"started"`
	LastReload Reload           `json:"lastReload"`
	LastApply  time.Time        `json:"lastSuccessfulReload"` // when the file was last applied (at start, or a valid edit)
	Forwards   []forward.Status `json:"forwards"`             // sorted by name
}

// Reload is what came of reading the file: at start, after an edit, on
// SIGHUP, or asked for (Runner.Reload).
type Reload struct {
	At         time.Time `json:"at"`
	Trigger    string    `json:"trigger"` // TriggerStart, ...
	Successful bool      `json:"successful"`
	Errors     []string  `json:"errors,omitempty"` // when not: file:line:col: message, one per problem
	Changes
}

// What made the runner read the file.
const (
	TriggerStart   = "start"
	TriggerFile    = "file"    // the file changed
	TriggerSignal  = "signal"  // SIGHUP
	TriggerRequest = "request" // Runner.Reload
)

// record keeps res as the last reload, stamped with the time, and returns it.
func (r *Runner) record(res Reload) Reload {
	res.At = time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if res.Trigger == TriggerStart {
		r.started = res.At
	}
	r.last = res
	if res.Successful {
		r.lastOK = res.At
	}
	return res
}

// Snapshot returns the runner's state now.
func (r *Runner) Snapshot() Snapshot {
	r.mu.Lock()
	s := Snapshot{File: r.opts.File, Started: r.started, LastReload: r.last, LastApply: r.lastOK}
	s.LastReload.Errors = slices.Clone(s.LastReload.Errors)
	r.mu.Unlock()
	s.Forwards = r.Statuses()
	return s
}

// Statuses returns a snapshot of every forward, sorted by name.
func (r *Runner) Statuses() []forward.Status {
	r.mu.Lock()
	all := make([]*running, 0, len(r.forwards))
	for _, rf := range r.forwards {
		all = append(all, rf)
	}
	r.mu.Unlock()
	out := make([]forward.Status, 0, len(all))
	for _, rf := range all {
		out = append(out, rf.status())
	}
	slices.SortFunc(out, func(a, b forward.Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (rf *running) status() forward.Status {
	rf.mu.Lock()
	f, err, at := rf.fwd, rf.err, rf.errAt
	rf.mu.Unlock()
	switch {
	case err != nil && f == nil:
		s := forward.SpecStatus(rf.spec)
		s.State, s.LastError, s.LastErrorAt = forward.Failed, err.Error(), at
		return s
	case f == nil:
		s := forward.SpecStatus(rf.spec)
		if rf.isDone() {
			s.State = forward.Stopped
		}
		return s
	}
	s := f.Status()
	if err != nil {
		s.State, s.LastError, s.LastErrorAt = forward.Failed, err.Error(), at
	}
	return s
}

// printSummary prints one line per forward once its listeners are bound
// (so a free port's chosen number is visible) or it has failed, waiting at
// most a moment.
func (r *Runner) printSummary(ctx context.Context) {
	if r.opts.Out == io.Discard { // the live view shows it
		return
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		settled := true
		for _, s := range r.Statuses() {
			if len(s.Addresses) == 0 && s.State != forward.Failed {
				settled = false
			}
		}
		if settled {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.mu.Lock()
	targets := map[string]string{}
	for name, rf := range r.forwards {
		targets[name] = rf.spec.Target.String()
	}
	r.mu.Unlock()
	all := r.Statuses()
	shared := map[string]int{} // a cause of many forwards (no kubeconfig) is said once, in the log
	for _, s := range all {
		shared[s.LastError]++
	}
	for _, s := range all {
		addrs := strings.Join(s.Addresses, ", ")
		switch {
		case addrs != "":
		case s.LastError != "" && shared[s.LastError] > 1:
			addrs = "(not running: see the error above)"
		case s.LastError != "":
			addrs = "(not running: " + s.LastError + ")"
		default:
			addrs = "(starting)"
		}
		fmt.Fprintf(r.opts.Out, "%-20s %s -> %s\n", s.Name, addrs, targets[s.Name])
	}
}
