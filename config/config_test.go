package config

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestParsePort(t *testing.T) {
	tests := []struct {
		in   string
		want Port
	}{
		{"5000", Port{Local: 5000, Remote: 5000}},
		{"6000:5000", Port{Local: 6000, Remote: 5000}},
		{":5000", Port{Local: 0, Remote: 5000}},
		{"0:5000", Port{Local: 0, Remote: 5000}},
		{"8080:http", Port{Local: 8080, RemoteName: "http"}},
		{":http-metrics", Port{Local: 0, RemoteName: "http-metrics"}},
		{"65535:1", Port{Local: 65535, Remote: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePort(tt.in)
			if err != nil {
				t.Fatalf("ParsePort(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParsePort(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParsePortInvalid(t *testing.T) {
	tests := map[string]string{
		"":                    `invalid port "": "" is not a number`,
		"0":                   `invalid port "0": 0 is out of range 1-65535`,
		"5000:0":              `invalid port "5000:0": remote port 0 is out of range 1-65535`,
		"70000:80":            `invalid port "70000:80": local port 70000 is out of range 0-65535`,
		"-1:80":               `invalid port "-1:80": local port -1 is out of range 0-65535`,
		"+80":                 `invalid port "+80": "+80" is not a number`,
		"1:2:3":               `invalid port "1:2:3": want PORT, LOCAL:REMOTE, :REMOTE or 0:REMOTE`,
		"http":                `invalid port "http": a named remote port needs a local port, e.g. "8080:http" or ":http"`,
		"80:Http":             `invalid port "80:Http": remote port "Http" is not a number, or a port name`,
		"80:-web":             `invalid port "80:-web": remote port "-web" is not a number, or a port name`,
		"80:123":              "", // a number, fine
		"80:abcdefghijklmnop": `invalid port "80:abcdefghijklmnop": remote port`,
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			_, err := ParsePort(in)
			if want == "" {
				if err != nil {
					t.Fatalf("ParsePort(%q): %v, want no error", in, err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("ParsePort(%q) error = %v, want prefix %q", in, err, want)
			}
		})
	}
}

// TestInvalid checks that each class of bad input is reported at the exact
// line and column, with a message that says what is allowed.
func TestInvalid(t *testing.T) {
	t.Setenv("KFORWARD_TEST_UNSET", "")
	os.Unsetenv("KFORWARD_TEST_UNSET")
	tests := []struct {
		file string
		want []string
	}{
		{"unknown-key.yaml", []string{`4:5: unknown key "prots" in a forward; allowed: name, pod, service, deployment, statefulset, daemonset, replicaset, selector, ports, context, namespace, address, transport, reconnect, health, connectTimeout, clientBuffer, diskBuffer, stallTimeout`}},
		{"unknown-top-key.yaml", []string{`1:1: unknown key "defualts" in the file; allowed: kubeconfig, defaults, forwards`}},
		{"duplicate-key.yaml", []string{`3:5: duplicate key "pod"`}},
		{"no-target.yaml", []string{`2:5: a forward needs exactly one target: pod, service, deployment, statefulset, daemonset, replicaset, selector`}},
		{"two-targets.yaml", []string{`3:14: a forward has exactly one target, found pod and service`}},
		{"empty-selector.yaml", []string{`2:15: selector needs at least one label, e.g. {app: web}`}},
		{"no-ports.yaml", []string{`2:5: a forward needs at least one port in ports:`}},
		{"bad-port-colons.yaml", []string{`3:13: invalid port "80:80:80": want PORT, LOCAL:REMOTE, :REMOTE or 0:REMOTE`}},
		{"bad-port-range.yaml", []string{`3:13: invalid port "70000": 70000 is out of range 1-65535; want PORT, LOCAL:REMOTE, :REMOTE or 0:REMOTE`}},
		{"bad-port-name.yaml", []string{`3:13: invalid port "8080:HTTP": remote port "HTTP" is not a number, or a port name (lowercase letters, digits and -, at most 15)`}},
		{"bad-port-bare-name.yaml", []string{`3:13: invalid port "http": a named remote port needs a local port, e.g. "8080:http" or ":http"`}},
		{"duplicate-name.yaml", []string{`4:11: duplicate forward name "pod/a" (first at 2:5); give each forward a distinct name`}},
		{"duplicate-bind.yaml", []string{`5:13: 127.0.0.1:8080 is already used by forward "pod/a" at 3:13`}},
		{"duplicate-bind-wildcard.yaml", []string{`6:13: 127.0.0.1:8080 is already used by forward "pod/a" at 4:13`}},
		{"bad-size.yaml", []string{
			`2:17: invalid size "16MB": want bytes or a number with a unit, such as 512KiB, 16MiB or 1GiB`,
			`3:15: invalid size "-1": want bytes or a number with a unit, such as 512MiB or 4GiB`,
			`6:19: invalid size "1KiB": must be from 64KiB to 1GiB`,
			`7:17: invalid size "65GiB": must be at most 64GiB`,
			`8:19: invalid duration "0s": must be greater than 0`,
		}},
		{"bad-duration.yaml", []string{
			`2:19: invalid duration "10": want a number with a unit, such as 250ms, 10s or 1m`,
			`6:24: invalid duration "5x": want a number with a unit, such as 250ms, 10s or 1m`,
		}},
		{"backoff-order.yaml", []string{`4:16: reconnect.initial (1m0s) must not be greater than reconnect.max (1s)`}},
		{"backoff-order-defaults.yaml", []string{`1:23: reconnect.initial (1m0s) must not be greater than reconnect.max (1s)`}},
		{"empty-forward.yaml", []string{
			`2:4: a forward needs exactly one target: pod, service, deployment, statefulset, daemonset, replicaset, selector`,
			`2:4: a forward needs at least one port in ports:`,
		}},
		{"bad-transport-address.yaml", []string{
			`3:16: invalid transport "http2": want auto, websocket or spdy`,
			`4:14: invalid address "example.com": want an IP address (127.0.0.1, ::1, 0.0.0.0) or localhost`,
		}},
		{"empty-forwards.yaml", []string{`1:11: no forwards: list at least one under forwards:`}},
		{"no-forwards.yaml", []string{`1:1: no forwards: list at least one under forwards:`}},
		{"unset-env.yaml", []string{`3:13: environment variable KFORWARD_TEST_UNSET is not set; set it or give a default: ${KFORWARD_TEST_UNSET:-value}`}},
		// Names become parts of the API server's URLs and selectors: a file
		// cannot reach another resource through them.
		{"bad-names.yaml", []string{
			`2:14: invalid namespace "../../nodes": a namespace has lowercase letters, digits and '-', starts and ends with a letter or digit, and has at most 63 characters`,
			`4:10: invalid pod name "$(touch /tmp/pwned)": a Kubernetes name has lowercase letters, digits, '-' and '.', starts and ends with a letter or digit, and has at most 253 characters`,
			`6:14: invalid service name "web/../../secrets": a Kubernetes name has lowercase letters, digits, '-' and '.', starts and ends with a letter or digit, and has at most 253 characters`,
			`7:16: invalid namespace "Team_A": a namespace has lowercase letters, digits and '-', starts and ends with a letter or digit, and has at most 63 characters`,
			`9:15: invalid label key "app,tier": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`,
			`9:15: invalid value "a=b" of label role: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`,
		}},
		{"bad-yaml.yaml", []string{`3:1: invalid YAML: mapping values are not allowed in this context`}},
		{"kubeconfig-tilde-user.yaml", []string{`1:13: invalid kubeconfig path "~alice/.kube/config": ~alice is not expanded; write ~/... for your home directory, or the full path`}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "invalid", tt.file)
			_, err := Load(path)
			if err == nil {
				t.Fatalf("Load(%s) succeeded, want errors %q", path, tt.want)
			}
			errs := Errors(err)
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			var want []string
			for _, w := range tt.want {
				want = append(want, path+":"+w)
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("Load(%s) errors:\n got: %s\nwant: %s", path, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
			}
		})
	}
}

// TestEveryInvalidFileIsTested keeps testdata and the table in step.
func TestEveryInvalidFileIsTested(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.yaml")
	src, err := os.ReadFile("config_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !strings.Contains(string(src), `"`+filepath.Base(f)+`"`) {
			t.Errorf("%s has no case in TestInvalid", f)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`
forwards:
  - service: api
    ports: ["8080:http", 9090, ":5000", "0:6000"]
`))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Forwards[0]
	want := Forward{
		Name:   "service/api",
		Target: Target{Kind: Service, Name: "api"},
		Ports: []Port{
			{Local: 8080, RemoteName: "http"},
			{Local: 9090, Remote: 9090},
			{Local: 0, Remote: 5000},
			{Local: 0, Remote: 6000},
		},
		Addresses:      []string{"127.0.0.1"},
		Transport:      Auto,
		Reconnect:      Backoff{250 * time.Millisecond, 30 * time.Second},
		Health:         Health{10 * time.Second, 5 * time.Second},
		ConnectTimeout: 10 * time.Second,
		ClientBuffer:   16 << 20,
		DiskBuffer:     1 << 30,
		StallTimeout:   2 * time.Minute,
	}
	if !got.Equal(want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseLayering(t *testing.T) {
	t.Setenv("KF_PORT", "80")
	t.Setenv("KF_TIMEOUT", "3s")
	cfg, err := Parse([]byte(`
kubeconfig: /etc/kube/config
defaults:
  context: dev
  namespace: dev-alice
  address: localhost
  transport: spdy
  reconnect: {initial: 1s}
  health: {timeout: 2s}
  connectTimeout: ${KF_TIMEOUT}
  clientBuffer: 4MiB
  diskBuffer: 0
  stallTimeout: 30s
forwards:
  - pod: web-0
    ports: ["${KF_PORT}"]
  - name: db
    selector: {app: db, tier: data}
    namespace: data
    context: prod
    address: [0.0.0.0, "::1"]
    transport: websocket
    reconnect: {max: 5s}
    health: {interval: 1s}
    connectTimeout: 1m
    clientBuffer: 1048576
    diskBuffer: 8GiB
    ports: ["5432"]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Forward{{
		Name: "pod/web-0", Kubeconfig: "/etc/kube/config", Context: "dev", Namespace: "dev-alice",
		Target: Target{Kind: Pod, Name: "web-0"}, Ports: []Port{{80, 80, ""}},
		Addresses: []string{"127.0.0.1", "::1"}, Transport: SPDY,
		Reconnect: Backoff{time.Second, 30 * time.Second}, Health: Health{10 * time.Second, 2 * time.Second},
		ConnectTimeout: 3 * time.Second, ClientBuffer: 4 << 20, DiskBuffer: 0, StallTimeout: 30 * time.Second,
	}, {
		Name: "db", Kubeconfig: "/etc/kube/config", Context: "prod", Namespace: "data",
		Target: Target{Kind: Selector, Selector: map[string]string{"app": "db", "tier": "data"}}, Ports: []Port{{5432, 5432, ""}},
		Addresses: []string{"0.0.0.0", "::1"}, Transport: WebSocket,
		Reconnect: Backoff{time.Second, 5 * time.Second}, Health: Health{time.Second, 2 * time.Second},
		ConnectTimeout: time.Minute, ClientBuffer: 1 << 20, DiskBuffer: 8 << 30, StallTimeout: 30 * time.Second,
	}}
	for i := range want {
		if !cfg.Forwards[i].Equal(want[i]) {
			t.Errorf("forward %d:\n got  %+v\nwant %+v", i, cfg.Forwards[i], want[i])
		}
	}
	if s := cfg.Forwards[1].Target.String(); s != "selector/app=db,tier=data" {
		t.Errorf("selector target = %q, want selector/app=db,tier=data", s)
	}
}

func TestExpandEnv(t *testing.T) {
	env := map[string]string{"A": "x", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct{ in, want, err string }{
		{"plain", "plain", ""},
		{"${A}", "x", ""},
		{"a-${A}-b-${A}", "a-x-b-x", ""},
		{"${B:-def}", "def", ""},
		{"${EMPTY:-def}", "def", ""},
		{"${EMPTY}", "", ""},
		{"$${A}", "${A}", ""},
		{"${B}", "", "environment variable B is not set"},
		{"${A", "", "unterminated ${"},
		{"${1A}", "", `invalid variable "1A"`},
	}
	for _, tt := range tests {
		got, err := expandEnv(tt.in, lookup, func(string, string) error { return nil })
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("expandEnv(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("expandEnv(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestLoadKubeconfigRelativeToFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "forwards.yaml")
	if err := os.WriteFile(path, []byte("kubeconfig: kube/config\nforwards: [{pod: a, ports: [1]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "kube/config")
	if cfg.Kubeconfig != want || cfg.Forwards[0].Kubeconfig != want {
		t.Errorf("kubeconfig = %q / %q, want %q", cfg.Kubeconfig, cfg.Forwards[0].Kubeconfig, want)
	}
}

// TestLoadKubeconfigHome checks that ~ in the kubeconfig path is the home
// directory, as the README documents, not a directory named ~ next to the
// file.
func TestLoadKubeconfigHome(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("USERPROFILE", home) // os.UserHomeDir on Windows
	dir := t.TempDir()
	tests := map[string]string{
		"~/.kube/config": filepath.Join(home, ".kube", "config"),
		`"~"`:            home, // unquoted, ~ is YAML's null
		"~/":             home,
		"kube/~/config":  filepath.Join(dir, "kube", "~", "config"),
		"/etc/kube":      "/etc/kube",
	}
	for kubeconfig, want := range tests {
		t.Run(kubeconfig, func(t *testing.T) {
			path := filepath.Join(dir, "forwards.yaml")
			data := "kubeconfig: " + kubeconfig + "\nforwards: [{pod: a, ports: [1]}]\n"
			if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Kubeconfig != want || cfg.Forwards[0].Kubeconfig != want {
				t.Errorf("kubeconfig %s = %q / %q, want %q", kubeconfig, cfg.Kubeconfig, cfg.Forwards[0].Kubeconfig, want)
			}
		})
	}
}

func TestKubeconfigHomeUnknown(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("the home directory is not $HOME here")
	}
	t.Setenv("HOME", "")
	_, err := Parse([]byte("kubeconfig: ~/.kube/config\nforwards: [{pod: a, ports: [1]}]\n"))
	if want := `1:13: cannot expand ~ in kubeconfig path "~/.kube/config": $HOME is not defined`; fmt.Sprint(err) != want {
		t.Errorf("error:\n got: %v\nwant: %s", err, want)
	}
}

func TestEqualDetectsChange(t *testing.T) {
	parse := func(s string) Forward {
		cfg, err := Parse([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Forwards[0]
	}
	a := parse("forwards: [{service: api, ports: [80]}]")
	if !a.Equal(parse("forwards: [{service: api, ports: [\"80:80\"]}]")) {
		t.Error("equivalent specs are not Equal")
	}
	for _, changed := range []string{
		"forwards: [{service: api, ports: [81]}]",
		"forwards: [{service: api, ports: [80], namespace: x}]",
		"forwards: [{name: service/api, deployment: api, ports: [80]}]",
		"forwards: [{service: api, ports: [80], health: {timeout: 1s}}]",
	} {
		if a.Equal(parse(changed)) {
			t.Errorf("spec of %q Equal to the original", changed)
		}
	}
}

// ${VAR} is expanded only in values that are numbers or durations: a name,
// a namespace, a target, a selector, an address, a context or a kubeconfig
// path reaches logs, /status, metric labels or chooses a server, and could
// leak the environment there. No message quotes a value from the
// environment.
func TestEnvExpandedOnlyWhereItCannotLeak(t *testing.T) {
	const secret = "s3cr3t-value"
	env := map[string]string{"SECRET": secret, "PORT": "8080", "T": "2s", "BIG": "1GiB"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	home := func() (string, error) { return "/home/u", nil }
	parseEnv := func(text string) (*Config, error) {
		return parse([]byte(text), environ{lookup: lookup, home: home})
	}

	cfg, err := parseEnv(`
defaults:
  reconnect: {initial: "${T}", max: "${T:-1m}"}
  health: {interval: "${T}"}
  connectTimeout: ${T}
  clientBuffer: ${BIG}
forwards:
  - pod: web
    ports: ["${PORT}:80", "${NONE:-9090}", "${EMPTY:-}:81"]
`)
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Forwards[0]
	if got.Ports[0].Local != 8080 || got.Ports[1].Local != 9090 || got.Ports[2].Local != 0 ||
		got.Reconnect.Initial != 2*time.Second || got.Health.Interval != 2*time.Second ||
		got.ConnectTimeout != 2*time.Second || got.ClientBuffer != 1<<30 {
		t.Errorf("expanded wrong: %+v", got)
	}

	for _, tc := range []struct{ name, text, want string }{
		{"name", "forwards: [{name: \"x-${SECRET}\", pod: web, ports: [80]}]", "1:19: ${...} is not expanded in name: it reaches logs, /status and metrics"},
		{"target", "forwards: [{pod: \"${SECRET}\", ports: [80]}]", "1:18: ${...} is not expanded in pod: it reaches logs, /status and metrics"},
		{"namespace", "defaults: {namespace: \"${SECRET}\"}\nforwards: [{pod: web, ports: [80]}]", "1:23: ${...} is not expanded in namespace"},
		{"selector", "forwards: [{selector: {app: \"${SECRET}\"}, ports: [80]}]", "1:29: ${...} is not expanded in selector"},
		{"context", "defaults: {context: \"${SECRET}\"}\nforwards: [{pod: web, ports: [80]}]", "1:21: ${...} is not expanded in context: it chooses the cluster that is sent requests"},
		{"kubeconfig", "kubeconfig: \"/tmp/${SECRET}\"\nforwards: [{pod: web, ports: [80]}]", "1:13: ${...} is not expanded in kubeconfig: it chooses the cluster"},
		{"address", "forwards: [{pod: web, ports: [80], address: \"${SECRET}\"}]", "1:45: ${...} is not expanded in address"},
		{"port name", "forwards: [{pod: web, ports: [\"80:${SECRET}\"]}]", "1:31: ${SECRET} in a port must be a number (a port name is shown in /status); its value is not"},
		{"bad duration", "defaults: {connectTimeout: \"${SECRET}\"}\nforwards: [{pod: web, ports: [80]}]", `1:28: "${SECRET}" is not a valid duration once expanded (what it expands to is not shown: it comes from the environment)`},
		{"port out of range", "forwards: [{pod: web, ports: [\"${PORT}${PORT}\"]}]", `1:31: "${PORT}${PORT}" is not a valid port once expanded`},
		{"port taken", "forwards: [{pod: a, ports: [8080]}, {pod: b, ports: [\"${PORT}:80\"]}]", `1:54: the local port of "${PORT}:80" on 127.0.0.1 is already used by forward "pod/a" at 1:29`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseEnv(tc.text)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant an error with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "80808080") {
				t.Errorf("the message quotes a value from the environment: %v", err)
			}
		})
	}
}
