package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// nodeDecoder is implemented by value types that parse their own YAML node
// (ports, durations, addresses). An error they return is reported at the
// node's position.
type nodeDecoder interface {
	decodeNode(n *yaml.Node) error
}

// decoder fills the file types from a yaml.Node tree. It is strict (unknown
// and duplicate keys are errors) and, unlike yaml.v3's own decoding, keeps
// going after a problem so that every error in the file is reported at once,
// each with its line and column.
type decoder struct {
	errs   []*Error
	lookup func(string) (string, bool)
}

var posType = reflect.TypeFor[Pos]()
var posMapType = reflect.TypeFor[map[string]Pos]()
var nodeDecoderType = reflect.TypeFor[nodeDecoder]()

// what names a struct type in messages.
var what = map[reflect.Type]string{
	reflect.TypeFor[file]():      "the file",
	reflect.TypeFor[settings]():  "defaults",
	reflect.TypeFor[entry]():     "a forward",
	reflect.TypeFor[reconnect](): "reconnect",
	reflect.TypeFor[health]():    "health",
}

func (d *decoder) fail(n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, Pos{n.Line, n.Column}.errorf(format, args...))
}

// decode fills v from n. under is the key n is the value of (or the item
// of), for ${VAR}: see expandable.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, under string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		expanded, ok := d.expand(n, under)
		if !ok {
			return
		}
		if expanded != n {
			if dec, isDec := v.Addr().Interface().(nodeDecoder); isDec && !isNull(n) {
				// The message would quote the value: say which
				// value it was as written instead.
				if err := dec.decodeNode(expanded); err != nil {
					d.fail(n, "%q is not a valid %s once expanded (what it expands to is not shown: it comes from the environment)", n.Value, describe[v.Type()])
				} else if p, isPort := v.Addr().Interface().(*portSpec); isPort {
					p.Written = n.Value
				}
				return
			}
		}
		n = expanded
	}
	if v.CanAddr() && v.Addr().Type().Implements(nodeDecoderType) {
		if isNull(n) {
			return
		}
		if err := v.Addr().Interface().(nodeDecoder).decodeNode(n); err != nil {
			d.fail(n, "%s", err.Error())
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, under)
	case reflect.Slice:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.fail(n, "must be a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, s.Index(i), under)
		}
		v.Set(s)
	case reflect.Map:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.MappingNode {
			d.fail(n, "must be a mapping of names to values")
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				d.fail(k, "duplicate key %q", k.Value)
				continue
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			d.decode(val, elem, under)
			m.SetMapIndex(reflect.ValueOf(k.Value), elem)
		}
		v.Set(m)
	case reflect.String:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.ScalarNode {
			d.fail(n, "must be a string")
			return
		}
		v.SetString(n.Value)
	default:
		panic("config: no decoding for " + v.Type().String())
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, under string) {
	t := v.Type()
	if f := v.FieldByName("At"); f.IsValid() && f.Type() == posType {
		// Set even for null: an empty list item ("-") is still a forward,
		// and its errors need a position.
		f.Set(reflect.ValueOf(Pos{n.Line, n.Column}))
	}
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, "%s must be a mapping", what[t])
		return
	}
	k, ok := keysOf[t]
	if !ok {
		k.fields, k.names = fieldsOf(t)
	}
	fields, names := k.fields, k.names
	var positions map[string]Pos
	if f := v.FieldByName("Fields"); f.IsValid() && f.Type() == posMapType {
		positions = map[string]Pos{}
		f.Set(reflect.ValueOf(positions))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		index, ok := fields[k.Value]
		switch {
		case seen[k.Value]:
			d.fail(k, "duplicate key %q", k.Value)
			continue
		case !ok:
			d.fail(k, "unknown key %q in %s; allowed: %s", k.Value, what[t], strings.Join(names, ", "))
			continue
		}
		seen[k.Value] = true
		if positions != nil {
			positions[k.Value] = Pos{val.Line, val.Column}
		}
		key := k.Value
		if expandable[under] { // reconnect: {initial: ...}
			key = under
		}
		d.decode(val, v.FieldByIndex(index), key)
	}
}

// keysOf holds fieldsOf for each struct type of the file, computed once: a
// file of thousands of forwards decodes an entry struct for each.
var keysOf = func() map[reflect.Type]keys {
	m := map[reflect.Type]keys{}
	for t := range what {
		var k keys
		k.fields, k.names = fieldsOf(t)
		m[t] = k
	}
	return m
}()

type keys struct {
	fields map[string][]int
	names  []string
}

// fieldsOf maps each YAML key of a struct type, including those of inline
// structs, to its field index; names lists the keys in declaration order.
func fieldsOf(t reflect.Type) (fields map[string][]int, names []string) {
	fields = map[string][]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-" || !f.IsExported():
		case opts == "inline":
			inner, innerNames := fieldsOf(f.Type)
			for _, n := range innerNames {
				fields[n] = append([]int{i}, inner[n]...)
			}
			names = append(names, innerNames...)
		case name != "":
			fields[name] = []int{i}
			names = append(names, name)
		}
	}
	return fields, names
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// ${VAR} moves the environment into the file, and a file comes from
// whoever last changed the repository: whatever reaches a log, /status, a
// metric label or a server could leak a secret there. So ${VAR} is
// expanded only in values that are numbers or durations, never in a name,
// a namespace, a selector, an address, a context or a kubeconfig path. In
// ports each variable must be a number (a local or remote port), as a port
// name is shown in /status.
var expandable = map[string]bool{
	"ports": true, "reconnect": true, "health": true, "connectTimeout": true, "clientBuffer": true,
	"diskBuffer": true, "stallTimeout": true,
}

// why says why a key's value is not expanded.
func why(key string) string {
	switch key {
	case "kubeconfig", "context":
		return "it chooses the cluster that is sent requests"
	case "address":
		return "it chooses who can connect, and is shown in /status"
	}
	return "it reaches logs, /status and metrics"
}

// describe names the value types with their own decoding, for messages.
var describe = map[reflect.Type]string{
	reflect.TypeFor[portSpec](): "port",
	reflect.TypeFor[duration](): "duration",
	reflect.TypeFor[size]():     "size",
	reflect.TypeFor[diskSize](): "size",
}

// expand returns n with ${VAR} and ${VAR:-default} replaced by values from
// the environment ($${ is a literal ${), as a copy: n may be decoded again
// through an alias. It fails (and says why, never quoting a value from the
// environment) where under's value may not be expanded.
func (d *decoder) expand(n *yaml.Node, under string) (*yaml.Node, bool) {
	if n.Tag != "!!str" {
		return n, true
	}
	if !expandable[under] {
		if under == "" {
			under = "the file"
		}
		d.fail(n, "${...} is not expanded in %s: %s; ${VAR} is expanded only in ports (as numbers), reconnect, health, connectTimeout, clientBuffer, diskBuffer and stallTimeout", under, why(under))
		return nil, false
	}
	check := func(string, string) error { return nil }
	if under == "ports" {
		check = func(name, val string) error {
			if strings.Trim(val, "0123456789") != "" {
				return fmt.Errorf("${%s} in a port must be a number (a port name is shown in /status); its value is not", name)
			}
			return nil
		}
	}
	out, err := expandEnv(n.Value, d.lookup, check)
	if err != nil {
		d.fail(n, "%s", err.Error())
		return nil, false
	}
	cp := *n
	cp.Value = out
	return &cp, true
}

// expandEnv expands s; check may refuse a variable's value.
func expandEnv(s string, lookup func(string) (string, bool), check func(name, value string) error) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1] + "${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated ${ in %q; write ${VAR} or ${VAR:-default}", s[i:])
		}
		expr := s[i+2 : i+end]
		name, def, hasDef := strings.Cut(expr, ":-")
		if !validVarName(name) {
			return "", fmt.Errorf("invalid variable %q in ${%s}; a name is letters, digits and _, not starting with a digit", name, expr)
		}
		val, ok := lookup(name)
		switch {
		case ok && (val != "" || !hasDef):
			if err := check(name, val); err != nil {
				return "", err
			}
			b.WriteString(val)
		case hasDef:
			b.WriteString(def)
		default:
			return "", fmt.Errorf("environment variable %s is not set; set it or give a default: ${%s:-value}", name, name)
		}
		s = s[i+end+1:]
	}
}

func validVarName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	return !slices.ContainsFunc([]byte(s), func(c byte) bool {
		return !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')
	})
}
