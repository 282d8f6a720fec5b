package scaffold

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/config/edit"
)

// generator writes the forwards list as it goes and the file around it at
// the end.
type generator struct {
	opts       Options
	sel        labels.Selector
	perForward bool            // each forward names its namespace
	namespace1 string          // else the one namespace, in defaults:
	names      map[string]bool // forward names taken
	ports      map[int32]bool  // local ports taken
	forwards   int
	body       strings.Builder
}

// namespace writes the forwards of one namespace: its Services by name,
// then with Workloads its Deployments and StatefulSets no Service selects.
func (g *generator) namespace(ns string, cl *cluster) {
	var services []corev1.Service
	for _, s := range cl.services[ns] {
		if g.sel.Matches(labels.Set(s.Labels)) {
			services = append(services, s)
		}
	}
	if len(services) == 0 {
		matching := ""
		if g.opts.Selector != "" {
			matching = " matching " + g.opts.Selector
		}
		g.note(fmt.Sprintf("Namespace %s: no services%s", ns, matching))
	}
	for _, s := range services {
		g.service(s)
	}
	if !g.opts.Workloads {
		return
	}
	for _, d := range cl.deployments[ns] {
		if g.sel.Matches(labels.Set(d.Labels)) && !selected(cl.services[ns], d.Spec.Template.Labels) {
			g.workload("Deployment", config.Deployment, d.ObjectMeta, d.Spec.Template.Spec)
		}
	}
	for _, s := range cl.statefulsets[ns] {
		if g.sel.Matches(labels.Set(s.Labels)) && !selected(cl.services[ns], s.Spec.Template.Labels) {
			g.workload("StatefulSet", config.StatefulSet, s.ObjectMeta, s.Spec.Template.Spec)
		}
	}
}

// selected reports whether a Service (any, not only those opts.Selector
// picks) selects pods with these labels.
func selected(services []corev1.Service, pod map[string]string) bool {
	for _, s := range services {
		if s.Spec.Type != corev1.ServiceTypeExternalName && len(s.Spec.Selector) > 0 &&
			labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pod)) {
			return true
		}
	}
	return false
}

func (g *generator) service(s corev1.Service) {
	id := fmt.Sprintf("Service %s/%s", s.Namespace, s.Name)
	switch {
	case s.Spec.Type == corev1.ServiceTypeExternalName:
		g.note(id + ": skipped, it is of type ExternalName (no pods to follow)")
		return
	case len(s.Spec.Selector) == 0:
		g.note(id + ": skipped, it has no selector (no pods to follow)")
		return
	}
	var ports, described, other []string
	for _, p := range s.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			other = append(other, string(p.Protocol)+" "+label(p.Name, p.Port))
			continue
		}
		ports = append(ports, g.port(p.Name, p.Port))
		target := p.TargetPort.String()
		if p.TargetPort.IntVal == 0 && p.TargetPort.StrVal == "" {
			target = strconv.Itoa(int(p.Port)) // unset: the port itself
		}
		described = append(described, label(p.Name, p.Port)+" → targetPort "+target)
	}
	if len(ports) == 0 {
		g.note(id + ": skipped, it has no TCP port (port-forward carries TCP only)")
		return
	}
	comment := id + ": " + plural("port", len(described)) + " " + strings.Join(described, ", ")
	if len(other) > 0 {
		comment += "; " + strings.Join(other, ", ") + " left out (port-forward carries TCP only)"
	}
	g.entry(comment, g.name(s.Name, s.Name+"-"+s.Namespace), s.Namespace, config.Service, s.Name, ports)
}

func (g *generator) workload(kind string, key config.Kind, meta metav1.ObjectMeta, spec corev1.PodSpec) {
	id := fmt.Sprintf("%s %s/%s: no Service selects it", kind, meta.Namespace, meta.Name)
	var ports, described []string
	seen := map[string]bool{}
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			k := label(p.Name, p.ContainerPort)
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP || seen[k] {
				continue
			}
			seen[k] = true
			ports = append(ports, g.port(p.Name, p.ContainerPort))
			described = append(described, k)
		}
	}
	if len(ports) == 0 {
		g.note(id + "; skipped, it has no TCP container port")
		return
	}
	comment := id + "; container " + plural("port", len(described)) + " " + strings.Join(described, ", ")
	g.entry(comment, g.name(meta.Name, meta.Name+"-"+string(key), meta.Name+"-"+meta.Namespace+"-"+string(key)), meta.Namespace, key, meta.Name, ports)
}

// port is one port mapping: the remote port by name where it has a name
// config accepts (a Service's may be longer), else by number; locally the
// same number where that is 1024 or more and not yet taken in the file,
// else a free port chosen when kforward starts.
func (g *generator) port(name string, port int32) string {
	if _, err := config.ParsePort(":" + name); name == "" || err != nil {
		name = strconv.Itoa(int(port))
	}
	if port < 1024 || g.ports[port] {
		return quote(":" + name)
	}
	g.ports[port] = true
	if name == strconv.Itoa(int(port)) {
		return name
	}
	return quote(strconv.Itoa(int(port)) + ":" + name)
}

// name is the first of the candidate forward names not yet taken, else the
// last one numbered.
func (g *generator) name(candidates ...string) string {
	for _, c := range candidates {
		if !g.names[c] {
			g.names[c] = true
			return c
		}
	}
	last := candidates[len(candidates)-1]
	for i := 2; ; i++ {
		if c := last + "-" + strconv.Itoa(i); !g.names[c] {
			g.names[c] = true
			return c
		}
	}
}

func (g *generator) entry(comment, name, ns string, kind config.Kind, target string, ports []string) {
	g.note(comment)
	b := &g.body
	b.WriteString("  - name: " + scalar(name) + "\n")
	if g.perForward {
		b.WriteString("    namespace: " + scalar(ns) + "\n")
	}
	b.WriteString("    " + string(kind) + ": " + scalar(target) + "\n")
	b.WriteString("    ports: [" + strings.Join(ports, ", ") + "]\n")
	g.forwards++
}

// note starts a new block of the list (a blank line apart) with a comment.
func (g *generator) note(comment string) {
	if g.body.Len() > 0 {
		g.body.WriteString("\n")
	}
	g.body.WriteString("  # " + comment + "\n")
}

// file is the whole file: header, defaults and the list.
func (g *generator) file() []byte {
	var b strings.Builder
	schema := g.opts.SchemaURL
	if schema == "" {
		schema = edit.SchemaURL
	}
	b.WriteString("# yaml-language-server: $schema=" + schema + "\n")
	b.WriteString("#\n")
	b.WriteString("# Made by: " + command(g.opts) + "\n")
	if g.opts.Workloads {
		b.WriteString("# One forward per Service with a selector, and per Deployment or\n")
		b.WriteString("# StatefulSet that no Service selects.\n")
	} else {
		b.WriteString("# One forward per Service with a selector.\n")
	}
	b.WriteString("# A local port is the remote port's number where that is 1024 or more\n")
	b.WriteString("# and not taken in this file; \":name\" gets a free port, chosen when\n")
	b.WriteString("# kforward starts and kept.\n")
	var defaults []string
	if g.opts.Context != "" {
		defaults = append(defaults, "  context: "+scalar(g.opts.Context)+"\n")
	}
	if !g.perForward {
		defaults = append(defaults, "  namespace: "+scalar(g.namespace1)+"\n")
	}
	if len(defaults) > 0 {
		b.WriteString("defaults:\n" + strings.Join(defaults, "") + "\n")
	}
	b.WriteString("forwards:\n")
	b.WriteString(g.body.String())
	return []byte(b.String())
}

// command is the kforward init command line that opts stand for.
func command(opts Options) string {
	args := []string{"kforward", "init"}
	for _, ns := range opts.Namespaces {
		args = append(args, "-n", shellQuote(ns))
	}
	if opts.Context != "" {
		args = append(args, "--context", shellQuote(opts.Context))
	}
	if opts.Selector != "" {
		args = append(args, "-l", shellQuote(opts.Selector))
	}
	if opts.Workloads {
		args = append(args, "--workloads")
	}
	return strings.Join(args, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,:/=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func label(name string, port int32) string {
	if name == "" {
		return strconv.Itoa(int(port))
	}
	return name + " " + strconv.Itoa(int(port))
}

func plural(word string, n int) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// scalar is s as a YAML string, quoted only where it must be; ${ is
// escaped, as config would expand it.
func scalar(s string) string {
	return encode(&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: strings.ReplaceAll(s, "${", "$${")})
}

// quote is s double-quoted, as the examples write ports with a colon.
func quote(s string) string {
	return encode(&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.DoubleQuotedStyle})
}

func encode(n *yaml.Node) string {
	out, err := yaml.Marshal(n)
	if err != nil {
		panic(err) // a string scalar always encodes
	}
	return strings.TrimSuffix(string(out), "\n")
}
