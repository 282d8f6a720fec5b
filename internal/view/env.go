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
//
// Different names can give the same variable (web-1 and web_1, or two
// mappings to remote port 80): the first line in that order keeps it and
// the later ones are left out, so a variable never changes hands because
// of a map's order or a later line winning. EnvCollisions says which.
func Env(forwards []forward.Status) string {
	lines, _ := envLines(forwards)
	return strings.Join(lines, "")
}

// EnvCollisions describes each line Env leaves out because an earlier one
// has its variable, e.g. "WEB_1_PORT: web_1 collides with web-1" or
// "API_PORT_80: api 9090:80 collides with api 8080:80"; none when every
// name is distinct.
func EnvCollisions(forwards []forward.Status) []string {
	_, collisions := envLines(forwards)
	return collisions
}

func envLines(forwards []forward.Status) (lines, collisions []string) {
	sorted := slices.Clone(forwards)
	slices.SortStableFunc(sorted, func(a, b forward.Status) int { return strings.Compare(a.Name, b.Name) })
	owner := map[string]string{} // variable -> what set it
	add := func(key string, port int, who string) {
		if first, ok := owner[key]; ok {
			collisions = append(collisions, key+": "+who+" collides with "+first)
			return
		}
		owner[key] = who
		lines = append(lines, key+"="+strconv.Itoa(port)+"\n")
	}
	for _, f := range sorted {
		if len(f.Ports) == 0 || slices.ContainsFunc(f.Ports, func(p forward.PortStatus) bool { return p.Local == 0 }) {
			continue
		}
		name := envName(f.Name)
		if name[0] >= '0' && name[0] <= '9' {
			name = "_" + name
		}
		add(name+"_PORT", f.Ports[0].Local, f.Name)
		for _, p := range f.Ports {
			add(name+"_PORT_"+envName(p.Remote), p.Local, f.Name+" "+strconv.Itoa(p.Local)+":"+p.Remote)
		}
	}
	return lines, collisions
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
