package view

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"charm.land/lipgloss/v2"

	"github.com/kforward/kforward/forward"
)

// paint applies styles only when colour is on, so that plain output
// cannot carry an escape code by accident.
type paint bool

var (
	styleBold   = lipgloss.NewStyle().Bold(true)
	styleFaint  = lipgloss.NewStyle().Faint(true)
	styleGreen  = lipgloss.NewStyle().Foreground(lipgloss.Green)
	styleYellow = lipgloss.NewStyle().Foreground(lipgloss.Yellow)
	styleRed    = lipgloss.NewStyle().Foreground(lipgloss.Red)
	styleCyan   = lipgloss.NewStyle().Foreground(lipgloss.Cyan)
)

func (p paint) style(st lipgloss.Style, s string) string {
	if !p || s == "" {
		return s
	}
	return st.Render(s)
}

func (p paint) bold(s string) string   { return p.style(styleBold, s) }
func (p paint) faint(s string) string  { return p.style(styleFaint, s) }
func (p paint) green(s string) string  { return p.style(styleGreen, s) }
func (p paint) yellow(s string) string { return p.style(styleYellow, s) }
func (p paint) red(s string) string    { return p.style(styleRed, s) }
func (p paint) cyan(s string) string   { return p.style(styleCyan, s) }

// size is n in binary units: "0 B", "512 B", "1.5 KiB", "12.3 MiB", "234 MiB".
func size(n float64) string {
	if n < 1024 {
		return strconv.Itoa(int(math.Round(n))) + " B"
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	i := -1
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if n < 99.95 {
		return fmt.Sprintf("%.1f %s", n, units[i])
	}
	return fmt.Sprintf("%.0f %s", n, units[i])
}

// short is a duration as people say it: "3s", "2m", "5h", "3d".
func short(d time.Duration) string {
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d"
}

// countdown is the time until t, rounded up: an attempt due in 2.1s is
// "in 3s", never "in 2s" while 2.1s remain.
func countdown(t, now time.Time) string {
	d := t.Sub(now)
	return short((d + time.Second - 1).Truncate(time.Second))
}

// rtt is a round trip: "350µs", "3.2ms", "45ms", "1.2s".
func rtt(d time.Duration) string {
	switch {
	case d <= 0:
		return ""
	case d < time.Millisecond:
		return strconv.Itoa(int(d/time.Microsecond)) + "µs"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return strconv.Itoa(int(d/time.Millisecond)) + "ms"
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// shortKinds are kubectl's short names for the kinds a target can be.
var shortKinds = map[string]string{
	"service":     "svc",
	"deployment":  "deploy",
	"statefulset": "sts",
	"daemonset":   "ds",
	"replicaset":  "rs",
}

// target is "svc/api:http,grpc": the target with kubectl's short kind and
// the remote ports.
func target(s forward.Status) string {
	t := s.Target
	if kind, name, ok := strings.Cut(t, "/"); ok {
		if k, ok := shortKinds[kind]; ok {
			t = k + "/" + name
		}
	}
	remotes := make([]string, len(s.Ports))
	for i, p := range s.Ports {
		remotes[i] = p.Remote
	}
	if len(remotes) == 0 {
		return t
	}
	return t + ":" + strings.Join(remotes, ",")
}

// local is every bound address; before binding, the local side of each
// mapping as the file gives it: "5000", or ":5000" for a free port.
func local(s forward.Status) (text string, bound bool) {
	if len(s.Addresses) > 0 {
		return strings.Join(localhost(s.Addresses), ","), true
	}
	ports := make([]string, len(s.Ports))
	for i, p := range s.Ports {
		if p.Local == 0 {
			ports[i] = ":" + p.Remote
		} else {
			ports[i] = strconv.Itoa(p.Local)
		}
	}
	return strings.Join(ports, ","), false
}

// localhost writes 127.0.0.1:P and [::1]:P, both bound, as localhost:P:
// what "address: localhost" in the file binds.
func localhost(addrs []string) []string {
	has := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		has[a] = true
	}
	var out []string
	for _, a := range addrs {
		v4, isV4 := strings.CutPrefix(a, "127.0.0.1:")
		v6, isV6 := strings.CutPrefix(a, "[::1]:")
		switch {
		case isV4 && has["[::1]:"+v4]:
			out = append(out, "localhost:"+v4)
		case isV6 && has["127.0.0.1:"+v6]:
			// written with its 127.0.0.1 twin
		default:
			out = append(out, a)
		}
	}
	return out
}

// stateText is the STATE cell, longest form first.
func stateText(s forward.Status, now time.Time) []string {
	retry := !s.RetryAt.IsZero() && s.RetryAt.After(now)
	switch s.State {
	case forward.WaitingForPod:
		return []string{"waiting for pod", "waiting"}
	case forward.Reconnecting:
		if retry {
			in := countdown(s.RetryAt, now)
			return []string{"reconnecting in " + in, "retry " + in}
		}
		return []string{"reconnecting", "retrying"}
	case forward.Failed:
		if retry {
			return []string{"failed, retry in " + countdown(s.RetryAt, now), "failed"}
		}
		return []string{"failed"}
	}
	return []string{string(s.State)}
}

func (p paint) state(s forward.State, text string) string {
	switch s {
	case forward.Active:
		return p.green(text)
	case forward.WaitingForPod, forward.Reconnecting, forward.Checking:
		return p.yellow(text)
	case forward.Failed:
		return p.red(text)
	case forward.Starting, forward.Stopped:
		return p.faint(text)
	}
	return text
}

// firstLine is an error message made to fit on one line.
func firstLine(msg string) string {
	msg, _, _ = strings.Cut(strings.TrimSpace(msg), "\n")
	return strings.Join(strings.Fields(msg), " ")
}

// sparks are the bars of a sparkline, lowest first.
var sparks = []rune("▁▂▃▄▅▆▇█")

// sparkline draws values scaled to their largest; all zero is a flat line.
func sparkline(values []float64) string {
	var top float64
	for _, v := range values {
		top = max(top, v)
	}
	out := make([]rune, len(values))
	for i, v := range values {
		level := 0
		if top > 0 && v > 0 {
			level = int(math.Ceil(v / top * float64(len(sparks)-1)))
		}
		out[i] = sparks[level]
	}
	return string(out)
}
