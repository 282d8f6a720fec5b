// Package edit adds forwards to and removes them from a forwards.yaml in
// place, for `kforward add` and `kforward remove`.
//
// The yaml.v3 node tree of the file says where things are: the forwards
// list, each item, its indentation and the style of its ports. The edit is
// then made to the file's own lines, so every other line keeps its bytes:
// comments, blank lines, key order, quoting and the alignment of trailing
// comments. (The only other changes: a removed item takes one blank line
// with it where it stood between two, and a first item replaces a [] or ~
// after forwards:.) Encoding the edited node tree again would keep the
// comments but drop blank lines, re-indent the file and move trailing
// comments.
//
// Add and Remove are pure: they take the file's bytes and return the new
// bytes, which they have parsed and validated with config.ParseFile. When
// the result would be invalid they return an error and no bytes, so the
// caller changes nothing. WriteFile then replaces the file in one rename,
// so a running `kforward run` sees one change.
package edit

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/kforward/kforward/config"
)

// SchemaURL is the JSON Schema of forwards.yaml that new files point
// yaml-language-server at.
const SchemaURL = "https://raw.githubusercontent.com/kforward/kforward/main/forwards.schema.json"

// Forward is a forward to add, as the user gave it.
type Forward struct {
	Name      string      // optional; config's default is KIND/TARGET, e.g. service/api
	Kind      config.Kind // pod, service, deployment, statefulset, daemonset or replicaset
	Target    string      // the name of the pod, service or workload
	Ports     []string    // as typed: "8080:http", "5432", ":9090"
	Namespace string      // optional: defaults' or the context's
	Context   string      // optional: defaults' or the kubeconfig's current one
}

// ErrNoSuchForward matches (errors.Is) Remove's error for a name the file
// does not have.
var ErrNoSuchForward = errors.New("no such forward")

// notFound is an error that is ErrNoSuchForward, in its own words.
type notFound string

func (e notFound) Error() string      { return string(e) }
func (notFound) Is(target error) bool { return target == ErrNoSuchForward }

// InvalidError is returned when an edit would leave the file invalid: the
// edit is refused. Err holds config's problems with the result, each a
// *config.Error at its position in the edited file (config.Errors lists
// them).
type InvalidError struct {
	Op  string // what was refused, e.g. `add forward "api"`
	Err error
}

func (e *InvalidError) Error() string {
	return "cannot " + e.Op + ", the file would be invalid:\n" + e.Err.Error()
}

// Unwrap returns every problem, so config.Errors and errors.As see them all.
func (e *InvalidError) Unwrap() []error {
	if multi, ok := e.Err.(interface{ Unwrap() []error }); ok {
		return multi.Unwrap()
	}
	return []error{e.Err}
}

// kinds are the target kinds a forward names, in config's order.
var kinds = []config.Kind{config.Pod, config.Service, config.Deployment, config.StatefulSet, config.DaemonSet, config.ReplicaSet}

// aliases are kubectl's names for the kinds.
var aliases = map[string]config.Kind{
	"po": config.Pod, "pods": config.Pod,
	"svc": config.Service, "services": config.Service,
	"deploy": config.Deployment, "deployments": config.Deployment,
	"sts": config.StatefulSet, "statefulsets": config.StatefulSet,
	"ds": config.DaemonSet, "daemonsets": config.DaemonSet,
	"rs": config.ReplicaSet, "replicasets": config.ReplicaSet,
}

// ParseTarget parses a target as kubectl port-forward takes it: KIND/NAME
// with a kind's full, plural or short name (svc/api, deploy/web,
// statefulset/db), or a bare NAME for a pod.
func ParseTarget(s string) (config.Kind, string, error) {
	kind, name, ok := strings.Cut(s, "/")
	if !ok {
		kind, name = string(config.Pod), s
	}
	k := config.Kind(strings.ToLower(kind))
	if a, ok := aliases[string(k)]; ok {
		k = a
	}
	if !slices.Contains(kinds, k) {
		return "", "", fmt.Errorf("invalid target %q: unknown kind %q; want pod, service (svc), deployment (deploy), statefulset (sts), daemonset (ds) or replicaset (rs)", s, kind)
	}
	if name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("invalid target %q: want KIND/NAME, e.g. svc/api", s)
	}
	return k, name, nil
}

// Add returns data, the forwards file at path, with f appended to its
// forwards. A file without forwards: gets one; empty data gives a new file
// that starts with the schema line. The result is validated as a whole: an
// error (an *InvalidError when the result would be invalid, e.g. a
// duplicate name or a local port another forward uses) comes with no bytes.
func Add(path string, data []byte, f Forward) ([]byte, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	var out []byte
	if strings.TrimSpace(string(data)) == "" {
		out = newFile(f)
	} else {
		d, err := parse(path, data)
		if err != nil {
			return nil, err
		}
		if out, err = d.add(f); err != nil {
			return nil, err
		}
	}
	if _, err := config.ParseFile(path, out); err != nil {
		return nil, &InvalidError{Op: fmt.Sprintf("add forward %q", f.name()), Err: err}
	}
	return out, nil
}

// Remove returns data, the forwards file at path, without the forward
// called name (config's name: its name: key, else KIND/TARGET such as
// service/api). The comments above the forward and inside it go with it;
// every other line stays. An unknown name is an error that is
// ErrNoSuchForward (errors.Is) and lists the names there are; a result that would be
// invalid (say, no forwards left) is an *InvalidError. Errors come with no
// bytes.
func Remove(path string, data []byte, name string) ([]byte, error) {
	d, err := parse(path, data)
	if err != nil {
		return nil, err
	}
	if d.seq != nil && d.seq.Kind == yaml.SequenceNode && d.seq.Style&yaml.FlowStyle != 0 {
		return nil, fmt.Errorf("%s:%d:%d: forwards is written as a flow list [...]; write it one item per line (- service: ...) to remove from it", path, d.seq.Line, d.seq.Column)
	}
	names := d.names(data)
	i := slices.Index(names, name)
	if i < 0 {
		have := "it has no forwards"
		if len(names) > 0 {
			have = "its forwards are: " + strings.Join(names, ", ")
		}
		return nil, notFound(fmt.Sprintf("%s has no forward named %q; %s", path, name, have))
	}
	out := d.remove(i)
	if _, err := config.ParseFile(path, out); err != nil {
		return nil, &InvalidError{Op: fmt.Sprintf("remove forward %q", name), Err: err}
	}
	return out, nil
}

func (f Forward) check() error {
	if !slices.Contains(kinds, f.Kind) {
		return fmt.Errorf("invalid kind %q: want pod, service, deployment, statefulset, daemonset or replicaset", f.Kind)
	}
	if len(f.Ports) == 0 {
		return errors.New("a forward needs at least one port")
	}
	for _, kv := range [][2]string{{"name", f.Name}, {string(f.Kind), f.Target}, {"namespace", f.Namespace}, {"context", f.Context}} {
		if strings.ContainsFunc(kv[1], unicode.IsControl) {
			return fmt.Errorf("invalid %s %q: no control characters", kv[0], kv[1])
		}
	}
	if f.Target == "" {
		return fmt.Errorf("%s needs a name", f.Kind)
	}
	for _, p := range f.Ports {
		if _, err := config.ParsePort(p); err != nil {
			return err
		}
	}
	return nil
}

// name is the forward's name as config will default it.
func (f Forward) name() string {
	if f.Name != "" {
		return f.Name
	}
	return string(f.Kind) + "/" + f.Target
}

// newFile is the file for Add on empty data.
func newFile(f Forward) []byte {
	var b strings.Builder
	b.WriteString("# yaml-language-server: $schema=" + SchemaURL + "\n")
	b.WriteString("forwards:\n")
	for _, l := range item(f.lines(defaultStyle), 2, 2) {
		b.WriteString(l + "\n")
	}
	return []byte(b.String())
}
