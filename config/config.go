// Package config parses, defaults and validates forwards.yaml. It is pure:
// no network and no goroutines. Load adds only the file read and the path in
// errors to Parse.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Config is a fully defaulted, validated forwards file.
type Config struct {
	Kubeconfig string // empty: client-go's default loading rules
	Context    string // defaults:' context; empty: the kubeconfig's current one
	Namespace  string // defaults:' namespace; empty: the context's
	Forwards   []Forward
}

// Forward is the complete spec of one forward. Two specs that are Equal
// describe the same forward; the runner restarts a forward only when its
// spec changed.
type Forward struct {
	Name           string
	Kubeconfig     string // copied from the file so a change restarts the forward
	Context        string // empty: the kubeconfig's current context
	Namespace      string // empty: the context's namespace, else "default"
	Target         Target
	Ports          []Port
	Addresses      []string // IP addresses to listen on
	Transport      Transport
	Reconnect      Backoff
	Health         Health
	ConnectTimeout time.Duration
	ClientBuffer   int           // bytes of pod data that may wait in memory for one local client
	DiskBuffer     int64         // bytes of pod data that may wait on disk for the forward's clients
	StallTimeout   time.Duration // a client that reads nothing for this long is closed
}

// Equal reports whether two specs describe the same forward.
func (f Forward) Equal(g Forward) bool { return reflect.DeepEqual(f, g) }

// Kind is the kind of object a forward targets.
type Kind string

const (
	Pod         Kind = "pod"
	Service     Kind = "service"
	Deployment  Kind = "deployment"
	StatefulSet Kind = "statefulset"
	DaemonSet   Kind = "daemonset"
	ReplicaSet  Kind = "replicaset"
	Selector    Kind = "selector"
)

// Target is what a forward connects to.
type Target struct {
	Kind     Kind
	Name     string            // empty for Selector
	Selector map[string]string // labels, only for Selector
}

func (t Target) String() string {
	if t.Kind == Selector {
		return "selector/" + SelectorString(t.Selector)
	}
	return string(t.Kind) + "/" + t.Name
}

// SelectorString renders labels as a Kubernetes label selector, keys sorted.
func SelectorString(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}

// Transport is the upstream protocol.
type Transport string

const (
	Auto      Transport = "auto" // WebSocket, falling back to SPDY
	WebSocket Transport = "websocket"
	SPDY      Transport = "spdy"
)

// Backoff bounds the exponential backoff between reconnects.
type Backoff struct{ Initial, Max time.Duration }

// Health configures the end-to-end tunnel check.
type Health struct{ Interval, Timeout time.Duration }

// Defaults for every setting the file leaves out.
var (
	DefaultAddress        = "127.0.0.1"
	DefaultTransport      = Auto
	DefaultReconnect      = Backoff{Initial: 250 * time.Millisecond, Max: 30 * time.Second}
	DefaultHealth         = Health{Interval: 10 * time.Second, Timeout: 5 * time.Second}
	DefaultConnectTimeout = 10 * time.Second
	DefaultClientBuffer   = 16 << 20
	DefaultDiskBuffer     = int64(1 << 30)
	DefaultStallTimeout   = 2 * time.Minute
)

// Load reads, parses and validates the file at path. Errors name the path.
// A kubeconfig path of ~ or ~/... is taken in the home directory, and
// another relative one relative to the file's directory.
func Load(path string) (*Config, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseFile(path, data)
}

// ParseFile is Load for a file already read: data as read from path.
func ParseFile(path string, data []byte) (*Config, error) {
	cfg, err := Parse(data)
	if err != nil {
		for _, e := range Errors(err) {
			e.File = path
		}
		return nil, err
	}
	if k := cfg.Kubeconfig; k != "" && !filepath.IsAbs(k) {
		cfg.Kubeconfig = filepath.Join(filepath.Dir(path), k)
		for i := range cfg.Forwards {
			cfg.Forwards[i].Kubeconfig = cfg.Kubeconfig
		}
	}
	return cfg, nil
}

// Parse decodes a forwards file strictly, applies defaults and validates it.
// It reports every problem at once, joined, each an *Error with its position.
func Parse(data []byte) (*Config, error) {
	return parse(data, environ{lookup: os.LookupEnv, home: os.UserHomeDir})
}

// environ is what parsing reads from the process; tests supply their own.
type environ struct {
	lookup func(string) (string, bool) // ${VAR}
	home   func() (string, error)      // ~ in kubeconfig
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func parse(data []byte, env environ) (*Config, error) {
	if err := checkSize(data); err != nil {
		return nil, join([]*Error{err})
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		line, msg := 1, strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		return nil, join([]*Error{{Line: line, Column: 1, Msg: "invalid YAML: " + msg}})
	}
	if err := checkAliases(&root); err != nil {
		return nil, join([]*Error{err})
	}
	d := &decoder{lookup: env.lookup}
	var f file
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		d.decode(root.Content[0], reflect.ValueOf(&f).Elem(), "")
	}
	if len(d.errs) > 0 {
		return nil, join(d.errs)
	}
	var rest yaml.Node
	if err := dec.Decode(&rest); err == nil {
		return nil, join([]*Error{{Line: rest.Line, Column: rest.Column, Msg: "only one YAML document is allowed"}})
	}
	return build(&f, env)
}

// build turns the decoded file into a Config: defaults first, then every
// check that spans fields or forwards.
func build(f *file, env environ) (*Config, error) {
	var errs []*Error
	kubeconfig, err := expandHome(f.Kubeconfig, env.home)
	if err != nil {
		errs = append(errs, f.Fields["kubeconfig"].errorf("%s", err.Error()))
	}
	if len(f.Forwards) == 0 {
		at, ok := f.Fields["forwards"]
		if !ok {
			at = Pos{1, 1}
		}
		errs = append(errs, at.errorf("no forwards: list at least one under forwards:"))
	}
	base, defErrs := resolve(builtin(), f.Defaults)
	errs = append(errs, defErrs...)

	cfg := &Config{Kubeconfig: kubeconfig, Context: base.context, Namespace: base.namespace}
	names := map[string]Pos{}
	var taken binds
	listeners := 0
	for _, e := range f.Forwards {
		fw, ferrs := forwardOf(base, e)
		errs = append(errs, ferrs...)
		if len(ferrs) > 0 {
			continue
		}
		fw.Kubeconfig = kubeconfig
		at := e.At
		if p, ok := e.Fields["name"]; ok {
			at = p
		}
		if first, dup := names[fw.Name]; dup {
			errs = append(errs, at.errorf("duplicate forward name %q (first at %d:%d); give each forward a distinct name", fw.Name, first.Line, first.Column))
			continue
		}
		names[fw.Name] = at
		listeners += len(fw.Ports) * len(fw.Addresses)
		if listeners > maxListeners {
			errs = append(errs, e.Fields["ports"].errorf("forward %q takes the file past %d listeners (one for each port on each address); a file may have at most %d", fw.Name, maxListeners, maxListeners))
			break
		}
		for i, p := range e.Ports {
			if fw.Ports[i].Local == 0 {
				continue
			}
			for _, addr := range fw.Addresses {
				b := bind{addr: addr, port: p.Local, forward: fw.Name, at: p.At}
				if other, ok := taken.add(b); ok {
					what := hostPort(addr, p.Local)
					if p.Written != "" {
						what = fmt.Sprintf("the local port of %q on %s", p.Written, addr)
					}
					errs = append(errs, p.At.errorf("%s is already used by forward %q at %d:%d", what, other.forward, other.at.Line, other.at.Column))
				}
			}
		}
		cfg.Forwards = append(cfg.Forwards, fw)
	}
	if len(errs) > 0 {
		return nil, join(errs)
	}
	return cfg, nil
}

// expandHome expands a leading ~ or ~/ in path to the home directory, as a
// shell does; other paths are returned as they are.
func expandHome(path string, home func() (string, error)) (string, error) {
	rest, ok := strings.CutPrefix(path, "~")
	if !ok {
		return path, nil
	}
	if rest != "" && !os.IsPathSeparator(rest[0]) {
		user, _, _ := strings.Cut(filepath.ToSlash(rest), "/")
		return "", fmt.Errorf("invalid kubeconfig path %q: ~%s is not expanded; write ~/... for your home directory, or the full path", path, user)
	}
	dir, err := home()
	if err != nil {
		return "", fmt.Errorf("cannot expand ~ in kubeconfig path %q: %w", path, err)
	}
	return filepath.Join(dir, rest), nil
}

// common is the resolved form of settings.
type common struct {
	context, namespace string
	addresses          []string
	transport          Transport
	reconnect          Backoff
	health             Health
	connectTimeout     time.Duration
	clientBuffer       int
	diskBuffer         int64
	stallTimeout       time.Duration
}

func builtin() common {
	return common{
		addresses:      []string{DefaultAddress},
		transport:      DefaultTransport,
		reconnect:      DefaultReconnect,
		health:         DefaultHealth,
		connectTimeout: DefaultConnectTimeout,
		clientBuffer:   DefaultClientBuffer,
		diskBuffer:     DefaultDiskBuffer,
		stallTimeout:   DefaultStallTimeout,
	}
}

// resolve layers s over base and validates the values s sets.
func resolve(base common, s settings) (common, []*Error) {
	var errs []*Error
	c := base
	if s.Context != "" {
		c.context = s.Context
	}
	if s.Namespace != "" {
		c.namespace = s.Namespace
		if !validName(s.Namespace, false) {
			errs = append(errs, s.Fields["namespace"].errorf("invalid namespace %q: %s", s.Namespace, nameRule(false)))
		}
	}
	if len(s.Address.List) > 0 {
		c.addresses = nil
		seen := map[string]bool{}
		for _, a := range s.Address.List {
			ips, err := ParseAddress(a)
			if err != nil {
				errs = append(errs, s.Address.At.errorf("%s", err.Error()))
				continue
			}
			for _, ip := range ips {
				if !seen[ip] {
					seen[ip] = true
					c.addresses = append(c.addresses, ip)
				}
			}
		}
	}
	if s.Transport != "" {
		switch t := Transport(s.Transport); t {
		case Auto, WebSocket, SPDY:
			c.transport = t
		default:
			errs = append(errs, s.Fields["transport"].errorf("invalid transport %q: want auto, websocket or spdy", s.Transport))
		}
	}
	if s.Reconnect.Initial != 0 {
		c.reconnect.Initial = time.Duration(s.Reconnect.Initial)
	}
	if s.Reconnect.Max != 0 {
		c.reconnect.Max = time.Duration(s.Reconnect.Max)
	}
	// Only where this layer sets reconnect: one inherited from defaults was
	// reported there.
	if at, ok := s.Fields["reconnect"]; ok && c.reconnect.Initial > c.reconnect.Max {
		errs = append(errs, at.errorf("reconnect.initial (%s) must not be greater than reconnect.max (%s)", c.reconnect.Initial, c.reconnect.Max))
	}
	if s.Health.Interval != 0 {
		c.health.Interval = time.Duration(s.Health.Interval)
	}
	if s.Health.Timeout != 0 {
		c.health.Timeout = time.Duration(s.Health.Timeout)
	}
	if s.ConnectTimeout != 0 {
		c.connectTimeout = time.Duration(s.ConnectTimeout)
	}
	if s.ClientBuffer != 0 {
		c.clientBuffer = int(s.ClientBuffer)
	}
	if _, ok := s.Fields["diskBuffer"]; ok {
		c.diskBuffer = int64(s.DiskBuffer)
	}
	if s.StallTimeout != 0 {
		c.stallTimeout = time.Duration(s.StallTimeout)
	}
	return c, errs
}

var targetKeys = []string{"pod", "service", "deployment", "statefulset", "daemonset", "replicaset", "selector"}

func forwardOf(base common, e entry) (Forward, []*Error) {
	// resolve positions settings errors by its own Fields; an inline
	// settings block shares the entry's.
	e.Settings.Fields = e.Fields
	c, errs := resolve(base, e.Settings)

	var set []string
	for _, k := range targetKeys {
		if _, ok := e.Fields[k]; ok {
			set = append(set, k)
		}
	}
	var t Target
	switch len(set) {
	case 0:
		errs = append(errs, e.At.errorf("a forward needs exactly one target: %s", strings.Join(targetKeys, ", ")))
	case 1:
		t = Target{Kind: Kind(set[0]), Selector: e.Selector}
		t.Name = map[string]string{"pod": e.Pod, "service": e.Service, "deployment": e.Deployment,
			"statefulset": e.StatefulSet, "daemonset": e.DaemonSet, "replicaset": e.ReplicaSet}[set[0]]
		switch {
		case t.Kind == Selector && len(t.Selector) == 0:
			errs = append(errs, e.Fields["selector"].errorf("selector needs at least one label, e.g. {app: web}"))
		case t.Kind != Selector && t.Name == "":
			errs = append(errs, e.Fields[set[0]].errorf("%s needs a name", set[0]))
		case t.Kind != Selector && !validName(t.Name, true):
			errs = append(errs, e.Fields[set[0]].errorf("invalid %s name %q: %s", set[0], t.Name, nameRule(true)))
		case t.Kind == Selector:
			for _, k := range slices.Sorted(maps.Keys(t.Selector)) {
				if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
					errs = append(errs, e.Fields["selector"].errorf("invalid label key %q: %s", k, msgs[0]))
				}
				if msgs := validation.IsValidLabelValue(t.Selector[k]); len(msgs) > 0 {
					errs = append(errs, e.Fields["selector"].errorf("invalid value %q of label %s: %s", t.Selector[k], k, msgs[0]))
				}
			}
		}
	default:
		errs = append(errs, e.Fields[set[1]].errorf("a forward has exactly one target, found %s", strings.Join(set, " and ")))
	}
	if len(e.Ports) == 0 {
		at := e.At
		if p, ok := e.Fields["ports"]; ok {
			at = p
		}
		errs = append(errs, at.errorf("a forward needs at least one port in ports:"))
	}
	name := e.Name
	if name == "" {
		name = t.String()
	} else if strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' }) {
		errs = append(errs, e.Fields["name"].errorf("invalid name %q: no spaces or control characters", name))
	}
	ports := make([]Port, len(e.Ports))
	for i, p := range e.Ports {
		ports[i] = p.Port
	}
	return Forward{
		Name:           name,
		Context:        c.context,
		Namespace:      c.namespace,
		Target:         t,
		Ports:          ports,
		Addresses:      c.addresses,
		Transport:      c.transport,
		Reconnect:      c.reconnect,
		Health:         c.health,
		ConnectTimeout: c.connectTimeout,
		ClientBuffer:   c.clientBuffer,
		DiskBuffer:     c.diskBuffer,
		StallTimeout:   c.stallTimeout,
	}, errs
}

// validName reports whether s can name a namespace (an RFC 1123 label)
// or an object (an RFC 1123 subdomain). Names become parts of the API
// server's URLs: one with a '/' or '..' would reach another resource.
func validName(s string, object bool) bool {
	if object {
		return len(validation.IsDNS1123Subdomain(s)) == 0
	}
	return len(validation.IsDNS1123Label(s)) == 0
}

func nameRule(object bool) string {
	if object {
		return "a Kubernetes name has lowercase letters, digits, '-' and '.', starts and ends with a letter or digit, and has at most 253 characters"
	}
	return "a namespace has lowercase letters, digits and '-', starts and ends with a letter or digit, and has at most 63 characters"
}

func hostPort(addr string, port int) string {
	if strings.Contains(addr, ":") {
		return fmt.Sprintf("[%s]:%d", addr, port)
	}
	return fmt.Sprintf("%s:%d", addr, port)
}
