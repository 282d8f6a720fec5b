package view

import (
	"slices"
	"strconv"
	"strings"

	"github.com/kforward/kforward/forward"
)

// Env renders the ports of the forwards as env-file lines for `source`:
// NAME_PORT=NNNN is the first mapping's local port, and NAME_PORT_REMOTE=NNNN
// one per mapping, REMOTE the remote port's name or number. NAME and REMOTE
// are upper-cased and every character other than [A-Z0-9] becomes "_" (a
// name that would start with a digit gets a leading "_", so the line stays
// a shell assignment). Forwards are sorted by name, mappings in file order.
// A forward with a port not bound yet (Local 0) contributes nothing, so a
// reader never sees a port that is about to change.
func Env(forwards []forward.Status) string {
	sorted := slices.Clone(forwards)
	slices.SortStableFunc(sorted, func(a, b forward.Status) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	for _, f := range sorted {
		if len(f.Ports) == 0 || slices.ContainsFunc(f.Ports, func(p forward.PortStatus) bool { return p.Local == 0 }) {
			continue
		}
		name := envName(f.Name)
		if name[0] >= '0' && name[0] <= '9' {
			name = "_" + name
		}
		b.WriteString(name + "_PORT=" + strconv.Itoa(f.Ports[0].Local) + "\n")
		for _, p := range f.Ports {
			b.WriteString(name + "_PORT_" + envName(p.Remote) + "=" + strconv.Itoa(p.Local) + "\n")
		}
	}
	return b.String()
}

// envName upper-cases s and turns every character but [A-Z0-9] into "_".
func envName(s string) string {
	if s == "" {
		return "_"
	}
	var b strings.Builder
	for _, r := range strings.ToUpper(s) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
