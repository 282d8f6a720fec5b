package edit

import (
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kforward/kforward/config"
)

// style is how the file writes a forward's ports, so a new forward looks
// like the others.
type style struct {
	flow    bool       // ports: ["8080:http"], else one item per line
	quote   yaml.Style // how a port with a colon is quoted
	numbers bool       // a bare port number is quoted too: "5432"
	indent  int        // block ports: from the ports key to its dashes
	target  bool       // the target comes before namespace and context
}

// defaultStyle is the examples': ports: ["8080:http", 5432].
var defaultStyle = style{flow: true, quote: yaml.DoubleQuotedStyle, indent: 2}

// style reads, from the last forward that shows each: the layout of its
// ports, the quotes around a port with a colon and around a bare number,
// and where its target key stands.
func (d *doc) style() style {
	st := defaultStyle
	items := d.items()
	layout, quote, numbers, order := false, false, false, false
	for i := len(items) - 1; i >= 0; i-- {
		if !order {
			order, st.target = targetFirst(items[i])
		}
		key, ports := field(items[i], "ports")
		if ports == nil || ports.Kind != yaml.SequenceNode || len(ports.Content) == 0 {
			continue
		}
		if !layout {
			layout = true
			st.flow = ports.Style&yaml.FlowStyle != 0
			if !st.flow && ports.Column > key.Column {
				st.indent = ports.Column - key.Column
			} else if !st.flow {
				st.indent = 0
			}
		}
		for _, p := range ports.Content {
			quoted := p.Style == yaml.DoubleQuotedStyle || p.Style == yaml.SingleQuotedStyle
			if !quote && quoted {
				quote, st.quote = true, p.Style
			}
			if !numbers && p.Kind == yaml.ScalarNode && isNumber(p.Value) {
				numbers, st.numbers = true, quoted
			}
		}
	}
	return st
}

// targetFirst reports whether item has a target key and a namespace or
// context key (ok), and whether the target comes first.
func targetFirst(item *yaml.Node) (ok, first bool) {
	if item.Kind != yaml.MappingNode {
		return false, false
	}
	target, setting := -1, -1
	for i := 0; i+1 < len(item.Content); i += 2 {
		switch k := item.Content[i].Value; {
		case k == "namespace" || k == "context":
			if setting < 0 {
				setting = i
			}
		case slices.Contains(kinds, config.Kind(k)) || k == "selector":
			target = i
		}
	}
	return target >= 0 && setting >= 0, target < setting
}

// field is the key and value of a mapping's key k.
func field(m *yaml.Node, k string) (key, value *yaml.Node) {
	if m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == k {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

// lines are the forward's keys, unindented, in the examples' order: name,
// context, namespace, the target, ports.
func (f Forward) lines(st style) []string {
	var lines []string
	set := func(k, v string) {
		if v != "" {
			lines = append(lines, k+": "+scalar(v, 0))
		}
	}
	set("name", f.Name)
	if st.target {
		set(string(f.Kind), f.Target)
	}
	set("context", f.Context)
	set("namespace", f.Namespace)
	if !st.target {
		set(string(f.Kind), f.Target)
	}
	ports := make([]string, len(f.Ports))
	for i, p := range f.Ports {
		ports[i] = port(p, st)
	}
	if st.flow {
		return append(lines, "ports: ["+strings.Join(ports, ", ")+"]")
	}
	lines = append(lines, "ports:")
	for _, p := range ports {
		lines = append(lines, strings.Repeat(" ", st.indent)+"- "+p)
	}
	return lines
}

// port writes a port as typed: anything with a colon quoted, so
// "8080:http" stays a string in every YAML reader; a number bare unless the
// file quotes its numbers.
func port(p string, st style) string {
	if isNumber(p) && !st.numbers {
		return p
	}
	return scalar(p, st.quote)
}

func isNumber(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }

// scalar is v as a YAML string in style (0: plain where that reads back
// as the same string, quoted otherwise), as yaml.v3 writes it.
func scalar(v string, style yaml.Style) string {
	out, err := yaml.Marshal(&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v, Style: style})
	if err != nil {
		panic(err) // a string scalar always encodes
	}
	return strings.TrimSuffix(string(out), "\n")
}
