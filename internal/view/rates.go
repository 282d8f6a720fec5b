package view

import (
	"time"

	"github.com/kforward/kforward/runner"
)

// sparkLen is how many intervals a sparkline shows.
const sparkLen = 8

// Rates remembers each forward's byte counters over recent snapshots, to
// show its current rates and a small sparkline of them. Add a snapshot
// about once a second. The zero value is ready to use; a Rates is not safe
// for concurrent use.
type Rates struct {
	series map[string][]sample // by forward name, oldest first, at most sparkLen+1
}

type sample struct {
	at      time.Time
	in, out int64
}

// Add records every forward's counters at now. A forward that is gone is
// forgotten; one whose counters went back (it was restarted) starts over.
func (r *Rates) Add(snap runner.Snapshot, now time.Time) {
	if r.series == nil {
		r.series = map[string][]sample{}
	}
	seen := make(map[string]bool, len(snap.Forwards))
	for _, f := range snap.Forwards {
		seen[f.Name] = true
		s := r.series[f.Name]
		if n := len(s); n > 0 && (f.BytesIn < s[n-1].in || f.BytesOut < s[n-1].out || !now.After(s[n-1].at)) {
			if now.After(s[n-1].at) {
				s = nil // restarted: a drop is not a negative rate
			} else {
				s = s[:n-1] // the same moment again: keep the newer counters
			}
		}
		s = append(s, sample{at: now, in: f.BytesIn, out: f.BytesOut})
		if len(s) > sparkLen+1 {
			s = append(s[:0], s[len(s)-sparkLen-1:]...)
		}
		r.series[f.Name] = s
	}
	for name := range r.series {
		if !seen[name] {
			delete(r.series, name)
		}
	}
}

// history is a forward's rates in bytes per second, one per interval
// between samples, oldest first; nil before two samples.
func (r *Rates) history(name string) (in, out []float64) {
	if r == nil {
		return nil, nil
	}
	s := r.series[name]
	for i := 1; i < len(s); i++ {
		dt := s[i].at.Sub(s[i-1].at).Seconds()
		in = append(in, float64(s[i].in-s[i-1].in)/dt)
		out = append(out, float64(s[i].out-s[i-1].out)/dt)
	}
	return in, out
}
