package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// fuzzEnv is a fixed environment: NS and PORT are set, EMPTY is set but
// empty, every other variable is unset, so inputs reach both sides of
// ${VAR} and ${VAR:-default}.
var fuzzEnv = environ{
	lookup: func(name string) (string, bool) {
		v, ok := map[string]string{"NS": "dev", "PORT": "8080", "EMPTY": ""}[name]
		return v, ok
	},
	home: func() (string, error) { return "/home/fuzz", nil },
}

// FuzzParse checks that no input makes the loader panic, that every error
// has a position, and that whatever it accepts is complete, valid and the
// same on every parse.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/invalid/*.yaml")
	examples, _ := filepath.Glob("../examples/*.yaml")
	for _, path := range append(seeds, examples...) {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("forwards: [{pod: a, ports: [1, \"2:3\", \":http\"]}]"))
	f.Add([]byte("a: &x [*x]"))
	f.Add([]byte("forwards: [{pod: a, namespace: ${NS}, ports: [\"${PORT}:80\"]}]"))
	f.Add([]byte("forwards: [{pod: a, namespace: ${KF_UNSET}, ports: [1]}]"))
	f.Add([]byte("forwards: [{pod: a, namespace: \"${KF_UNSET:-x}-${EMPTY:-y}-$${NS}\", ports: [1]}]"))
	f.Add([]byte("kubeconfig: ~/.kube/config\nforwards: [{pod: a, ports: [1]}]"))
	f.Add([]byte("defaults: {reconnect: &r {initial: 1s, max: 2s}, address: &a [localhost, 0.0.0.0]}\n" +
		"forwards:\n- {service: s, ports: [\":80\"], reconnect: *r, address: *a}\n- {selector: &l {app: x}, ports: [\"81:http\"]}\n- {name: n, selector: *l, ports: [82], health: {interval: 1s, timeout: 1s}, clientBuffer: 64KiB, connectTimeout: 1m, transport: spdy}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parse(data, fuzzEnv)
		again, errAgain := parse(data, fuzzEnv)
		if !reflect.DeepEqual(cfg, again) || errString(err) != errString(errAgain) {
			t.Fatalf("two parses of the same input differ:\n%+v, %v\n%+v, %v", cfg, err, again, errAgain)
		}
		if err != nil {
			checkErrors(t, data, err)
			return
		}
		checkConfig(t, cfg)
	})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// checkErrors requires every error parse returns to be an *Error with a
// position in the file and a message.
func checkErrors(t *testing.T, data []byte, err error) {
	t.Helper()
	var leaves []error
	if multi, ok := err.(interface{ Unwrap() []error }); ok {
		leaves = multi.Unwrap()
	} else {
		leaves = []error{err}
	}
	// YAML's line breaks: \n, \r\n, \r, and NEL, LS and PS in UTF-8.
	lines := 1 + strings.Count(string(data), "\n") + strings.Count(string(data), "\r") - strings.Count(string(data), "\r\n") +
		strings.Count(string(data), "\u0085") + strings.Count(string(data), "\u2028") + strings.Count(string(data), "\u2029")
	for _, leaf := range leaves {
		var e *Error
		if !errors.As(leaf, &e) {
			t.Fatalf("error without position: %v", leaf)
		}
		if e.Line < 1 || e.Line > lines || e.Column < 1 || e.Msg == "" || e.File != "" {
			t.Fatalf("error at %d:%d (file has %d lines), file %q, message %q", e.Line, e.Column, lines, e.File, e.Msg)
		}
	}
}

// checkConfig requires an accepted file to be fully defaulted and valid.
func checkConfig(t *testing.T, cfg *Config) {
	t.Helper()
	if len(cfg.Forwards) == 0 {
		t.Fatal("accepted a file without forwards")
	}
	if strings.HasPrefix(cfg.Kubeconfig, "~") {
		t.Errorf("kubeconfig %q: ~ not expanded", cfg.Kubeconfig)
	}
	names := map[string]bool{}
	for _, fw := range cfg.Forwards {
		bad := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("accepted forward %q: "+format+"\n%+v", append(append([]any{fw.Name}, args...), fw)...)
		}
		if fw.Name == "" || strings.ContainsFunc(fw.Name, func(r rune) bool { return r <= ' ' }) {
			bad("invalid name")
		}
		if names[fw.Name] {
			bad("duplicate name")
		}
		names[fw.Name] = true
		if fw.Kubeconfig != cfg.Kubeconfig {
			bad("kubeconfig %q, file's %q", fw.Kubeconfig, cfg.Kubeconfig)
		}
		switch k := fw.Target.Kind; {
		case k == Selector && (len(fw.Target.Selector) == 0 || fw.Target.Name != ""):
			bad("selector target without labels, or with a name")
		case k != Selector && !slices.Contains([]Kind{Pod, Service, Deployment, StatefulSet, DaemonSet, ReplicaSet}, k):
			bad("unknown target kind %q", k)
		case k != Selector && (fw.Target.Name == "" || fw.Target.Selector != nil):
			bad("%s target without a name, or with labels", k)
		}
		if len(fw.Ports) == 0 {
			bad("no ports")
		}
		for _, p := range fw.Ports {
			if p.Local < 0 || p.Local > 65535 || (p.Remote == 0) == (p.RemoteName == "") ||
				p.Remote < 0 || p.Remote > 65535 || (p.RemoteName != "" && !isPortName(p.RemoteName)) {
				bad("invalid port %+v", p)
			}
		}
		if len(fw.Addresses) == 0 {
			bad("no addresses")
		}
		for i, a := range fw.Addresses {
			ip, err := netip.ParseAddr(a)
			if err != nil || ip.String() != a || slices.Contains(fw.Addresses[:i], a) {
				bad("invalid or repeated address %q", a)
			}
		}
		if !slices.Contains([]Transport{Auto, WebSocket, SPDY}, fw.Transport) {
			bad("invalid transport %q", fw.Transport)
		}
		if fw.Reconnect.Initial <= 0 || fw.Reconnect.Initial > fw.Reconnect.Max ||
			fw.Health.Interval <= 0 || fw.Health.Timeout <= 0 || fw.ConnectTimeout <= 0 {
			bad("a duration is not positive, or initial > max")
		}
		if fw.ClientBuffer < minSize || fw.ClientBuffer > maxSize {
			bad("clientBuffer %d out of range", fw.ClientBuffer)
		}
	}
}
