package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Port is one port mapping of a forward.
type Port struct {
	Local      int    // 0: a free port, chosen once when the forward starts
	Remote     int    // 0 when RemoteName is set
	RemoteName string // a container or service port name, resolved against the target
}

func (p Port) String() string {
	remote := p.RemoteName
	if remote == "" {
		remote = strconv.Itoa(p.Remote)
	}
	return strconv.Itoa(p.Local) + ":" + remote
}

// ParsePort parses kubectl's port syntax: "5000", "6000:5000", ":5000",
// "0:5000", and with a port name on the remote side, "8080:http" or ":http".
func ParsePort(s string) (Port, error) {
	local, remote, mapped := strings.Cut(s, ":")
	if strings.Contains(remote, ":") {
		return Port{}, fmt.Errorf("invalid port %q: want PORT, LOCAL:REMOTE, :REMOTE or 0:REMOTE", s)
	}
	if !mapped {
		n, err := portNumber(s, 1)
		if err != nil {
			if isPortName(s) {
				return Port{}, fmt.Errorf("invalid port %q: a named remote port needs a local port, e.g. \"8080:%s\" or \":%s\"", s, s, s)
			}
			return Port{}, fmt.Errorf("invalid port %q: %w; want PORT, LOCAL:REMOTE, :REMOTE or 0:REMOTE", s, err)
		}
		return Port{Local: n, Remote: n}, nil
	}
	var p Port
	if local != "" {
		n, err := portNumber(local, 0)
		if err != nil {
			return Port{}, fmt.Errorf("invalid port %q: local port %w", s, err)
		}
		p.Local = n
	}
	if n, err := portNumber(remote, 1); err == nil {
		p.Remote = n
	} else if isPortName(remote) {
		p.RemoteName = remote
	} else {
		return Port{}, fmt.Errorf("invalid port %q: remote port %w, or a port name (lowercase letters, digits and -, at most 15)", s, err)
	}
	return p, nil
}

func portNumber(s string, min int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || strings.HasPrefix(s, "+") {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if n < min || n > 65535 {
		return 0, fmt.Errorf("%d is out of range %d-65535", n, min)
	}
	return n, nil
}

// isPortName reports whether s is a valid Kubernetes port name
// (IANA_SVC_NAME: 1-15 lowercase alphanumerics or '-', with a letter, no
// leading, trailing or double '-').
func isPortName(s string) bool {
	if len(s) == 0 || len(s) > 15 || s[0] == '-' || s[len(s)-1] == '-' || strings.Contains(s, "--") {
		return false
	}
	letter := false
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
	}
	return letter
}

// portSpec is a port as written: an integer or a string in kubectl syntax.
type portSpec struct {
	Port
	At      Pos
	Written string // as written, when it had ${VAR}: messages quote this, not the value
}

func (p *portSpec) decodeNode(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("a port must be a number or a string like \"8080:80\"")
	}
	port, err := ParsePort(n.Value)
	if err != nil {
		return err
	}
	*p = portSpec{Port: port, At: Pos{n.Line, n.Column}}
	return nil
}

func (portSpec) schema() map[string]any {
	return map[string]any{"oneOf": []any{
		map[string]any{"type": "integer", "minimum": 1, "maximum": 65535},
		map[string]any{"type": "string", "pattern": `^([0-9]{1,5}|[0-9]{0,5}:([0-9]{1,5}|[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?))$`},
	}}
}

// duration is a Go duration string such as 250ms or 1m30s; it must be positive.
type duration time.Duration

func (d *duration) decodeNode(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return fmt.Errorf("invalid duration %q: want a number with a unit, such as 250ms, 10s or 1m", n.Value)
	}
	if v <= 0 {
		return fmt.Errorf("invalid duration %q: must be greater than 0", n.Value)
	}
	*d = duration(v)
	return nil
}

func (duration) schema() map[string]any {
	return map[string]any{"type": "string", "pattern": `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`}
}

// size is an amount of memory: a whole number of bytes, or with a unit
// KiB, MiB or GiB (powers of 1024), such as 512KiB or 16MiB.
type size int64

const (
	minSize = 64 << 10
	maxSize = 1 << 30
)

func (s *size) decodeNode(n *yaml.Node) error {
	v, err := parseSize(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return fmt.Errorf("invalid size %q: want bytes or a number with a unit, such as 512KiB, 16MiB or 1GiB", n.Value)
	}
	if v < minSize || v > maxSize {
		return fmt.Errorf("invalid size %q: must be from 64KiB to 1GiB", n.Value)
	}
	*s = size(v)
	return nil
}

func parseSize(v string) (int64, error) {
	mult := int64(1)
	for unit, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if num, ok := strings.CutSuffix(v, unit); ok {
			v, mult = num, m
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > maxSize {
		return 0, fmt.Errorf("invalid size %q", v)
	}
	return n * mult, nil
}

func (size) schema() map[string]any {
	return map[string]any{"oneOf": []any{
		map[string]any{"type": "integer", "minimum": minSize, "maximum": maxSize},
		map[string]any{"type": "string", "pattern": `^[0-9]+(KiB|MiB|GiB)?$`},
	}}
}

// diskSize is an amount of disk: as size, from 0 to 64GiB.
type diskSize int64

const maxDiskSize = 64 << 30

func (s *diskSize) decodeNode(n *yaml.Node) error {
	num, mult := n.Value, int64(1)
	for unit, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if v, ok := strings.CutSuffix(num, unit); ok {
			num, mult = v, m
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n.Kind != yaml.ScalarNode || v < 0 {
		return fmt.Errorf("invalid size %q: want bytes or a number with a unit, such as 512MiB or 4GiB", n.Value)
	}
	if v > maxDiskSize/mult {
		return fmt.Errorf("invalid size %q: must be at most 64GiB", n.Value)
	}
	*s = diskSize(v * mult)
	return nil
}

func (diskSize) schema() map[string]any {
	return map[string]any{"oneOf": []any{
		map[string]any{"type": "integer", "minimum": 0, "maximum": maxDiskSize},
		map[string]any{"type": "string", "pattern": `^[0-9]+(KiB|MiB|GiB)?$`},
	}}
}

// addresses is one address or a list of them.
type addresses struct {
	List []string
	At   Pos
}

func (a *addresses) decodeNode(n *yaml.Node) error {
	a.At = Pos{n.Line, n.Column}
	switch n.Kind {
	case yaml.ScalarNode:
		a.List = []string{n.Value}
	case yaml.SequenceNode:
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return errors.New("address must be a string or a list of strings")
			}
			a.List = append(a.List, item.Value)
		}
	default:
		return errors.New("address must be a string or a list of strings")
	}
	return nil
}

func (addresses) schema() map[string]any {
	return map[string]any{"oneOf": []any{
		map[string]any{"type": "string"},
		map[string]any{"type": "array", "items": map[string]any{"type": "string"}, "minItems": 1},
	}}
}
