package edit

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kforward/kforward/config"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the results")

// golden compares got with testdata/name.golden, byte for byte.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func input(t *testing.T, name string) []byte {
	t.Helper()
	if name == "" {
		return nil
	}
	data, err := os.ReadFile(filepath.Join("testdata", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The result of a successful edit is compared with a golden file whole, so
// every test also asserts that the rest of the file kept its bytes.
func TestAdd(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		f        Forward
	}{
		{"add-to-commented", "commented", Forward{Kind: config.Service, Target: "orders", Ports: []string{"8084:http", "9104:metrics"}}},
		{"add-to-empty", "", Forward{Kind: config.Service, Target: "api", Ports: []string{"8080:http"}}},
		{"add-with-namespace-and-context", "separated", Forward{Name: "api-prod", Kind: config.Deployment, Target: "api", Ports: []string{"18080:http", ":9090"}, Namespace: "shop", Context: "prod"}},
		{"add-block-ports-single-quotes", "block", Forward{Kind: config.Pod, Target: "zookeeper-0", Ports: []string{"2181", "12181:client"}, Namespace: "streaming"}},
		{"add-without-forwards-key", "nolist", Forward{Kind: config.StatefulSet, Target: "db", Ports: []string{"15432:5432"}}},
		{"add-to-empty-list", "emptylist", Forward{Kind: config.ReplicaSet, Target: "web-7c9f", Ports: []string{"8080"}}},
		{"add-crlf", "crlf", Forward{Kind: config.DaemonSet, Target: "node-exporter", Ports: []string{"9100"}}},
		{"add-to-comments-only", "comments", Forward{Kind: config.Service, Target: "api", Ports: []string{"8080:http"}}},
		{"add-quotes-what-needs-it", "one", Forward{Name: "yes", Kind: config.Pod, Target: "123", Ports: []string{"9000"}, Namespace: "null", Context: "arn:aws:eks:eu-west-1:1:cluster/dev # x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Add("forwards.yaml", input(t, tc.in), tc.f)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, got)
			cfg, err := config.ParseFile("forwards.yaml", got)
			if err != nil {
				t.Fatal(err)
			}
			last := cfg.Forwards[len(cfg.Forwards)-1]
			if last.Target.Kind != tc.f.Kind || last.Target.Name != tc.f.Target || last.Name != tc.f.name() || len(last.Ports) != len(tc.f.Ports) {
				t.Errorf("the last forward is %+v, want %+v", last, tc.f)
			}
			if tc.f.Context != "" && last.Context != tc.f.Context || tc.f.Namespace != "" && last.Namespace != tc.f.Namespace {
				t.Errorf("the last forward has context %q, namespace %q, want %q, %q", last.Context, last.Namespace, tc.f.Context, tc.f.Namespace)
			}
		})
	}
}

func TestAddEmptyFileStartsWithSchemaLine(t *testing.T) {
	got, err := Add("forwards.yaml", []byte("\n"), Forward{Kind: config.Pod, Target: "a", Ports: []string{"80:8080"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "# yaml-language-server: $schema=" + SchemaURL + "\n"; !strings.HasPrefix(string(got), want) {
		t.Errorf("got %q, want it to start with %q", got, want)
	}
}

func TestRemove(t *testing.T) {
	for _, tc := range []struct{ name, in, forward string }{
		{"remove-from-middle", "middle", "statefulset/redis"},
		{"remove-first", "middle", "service/api"},
		{"remove-last", "middle", "queue"},
		{"remove-from-blank-separated", "separated", "api-staging"},
		{"remove-crlf", "crlf", "service/api"},
		{"remove-selector", "unnamed", "selector/app=search,role=client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Remove("forwards.yaml", input(t, tc.in), tc.forward)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, got)
			cfg, err := config.ParseFile("forwards.yaml", got)
			if err != nil {
				t.Fatal(err)
			}
			before, _ := config.ParseFile("forwards.yaml", input(t, tc.in))
			if len(cfg.Forwards) != len(before.Forwards)-1 {
				t.Errorf("%d forwards left of %d", len(cfg.Forwards), len(before.Forwards))
			}
			for _, f := range cfg.Forwards {
				if f.Name == tc.forward {
					t.Errorf("%s is still there", tc.forward)
				}
			}
		})
	}
}

// Refused edits: the error, compared with a golden file, and no bytes.
func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		edit     func(data []byte) ([]byte, error)
		invalid  bool // an *InvalidError
	}{
		{"refused-duplicate-name", "commented", func(data []byte) ([]byte, error) {
			return Add("forwards.yaml", data, Forward{Name: "payments-grpc", Kind: config.Deployment, Target: "payments-v2", Ports: []string{"50052"}})
		}, true},
		{"refused-duplicate-default-name", "commented", func(data []byte) ([]byte, error) {
			return Add("forwards.yaml", data, Forward{Kind: config.Service, Target: "cart", Ports: []string{"18082:http"}})
		}, true},
		{"refused-port-clash", "commented", func(data []byte) ([]byte, error) {
			return Add("forwards.yaml", data, Forward{Kind: config.Service, Target: "orders", Ports: []string{"8084:http", "9102:metrics"}})
		}, true},
		{"refused-remove-unknown", "middle", func(data []byte) ([]byte, error) {
			return Remove("forwards.yaml", data, "redis")
		}, false},
		{"refused-remove-only-forward", "one", func(data []byte) ([]byte, error) {
			return Remove("forwards.yaml", data, "service/api")
		}, true},
		{"refused-invalid-port", "one", func(data []byte) ([]byte, error) {
			return Add("forwards.yaml", data, Forward{Kind: config.Pod, Target: "a", Ports: []string{"http"}})
		}, false},
		{"refused-flow-list", "", func([]byte) ([]byte, error) {
			return Add("forwards.yaml", []byte("forwards: [{service: api, ports: [8080]}]\n"), Forward{Kind: config.Pod, Target: "a", Ports: []string{"80"}})
		}, false},
		{"refused-remove-from-flow-list", "", func([]byte) ([]byte, error) {
			return Remove("forwards.yaml", []byte("forwards: [{service: api, ports: [8080]}, {pod: a, ports: [80]}]\n"), "pod/a")
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.edit(input(t, tc.in))
			if err == nil {
				t.Fatalf("no error; got:\n%s", got)
			}
			if got != nil {
				t.Errorf("bytes with the error:\n%s", got)
			}
			var invalid *InvalidError
			if errors.As(err, &invalid) != tc.invalid {
				t.Errorf("error %T, *InvalidError: %v, want %v", err, !tc.invalid, tc.invalid)
			}
			golden(t, tc.name, []byte(err.Error()+"\n"))
		})
	}
}

func TestRemoveUnknownListsNames(t *testing.T) {
	_, err := Remove("forwards.yaml", input(t, "unnamed"), "search")
	if !errors.Is(err, ErrNoSuchForward) {
		t.Fatalf("got %v, want ErrNoSuchForward", err)
	}
	for _, name := range []string{`"search"`, "service/api", "db", "selector/app=search,role=client"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

// The names config gives (defaulted from the target) are the ones Remove matches.
func TestRemoveByConfigName(t *testing.T) {
	got, err := Remove("forwards.yaml", input(t, "unnamed"), "db")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(got), "postgres") {
		t.Errorf("db not removed:\n%s", got)
	}
}

// A file config refuses can still lose the forward that makes it invalid.
func TestRemoveFixesInvalidFile(t *testing.T) {
	data := []byte("forwards:\n  - service: api\n    ports: [\"8080:http\"]\n  - pod: bad\n    ports: [\"8080:http\"]\n")
	if _, err := config.ParseFile("forwards.yaml", data); err == nil {
		t.Fatal("the input should be invalid")
	}
	got, err := Remove("forwards.yaml", data, "pod/bad")
	if err != nil {
		t.Fatal(err)
	}
	if want := "forwards:\n  - service: api\n    ports: [\"8080:http\"]\n"; string(got) != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// The position in a refusal is the file's, as config reports it.
func TestRefusalNamesFileLineColumn(t *testing.T) {
	_, err := Add("dev/forwards.yaml", input(t, "commented"), Forward{Kind: config.Pod, Target: "x", Ports: []string{"8081"}})
	probs := config.Errors(err)
	if len(probs) != 2 { // address: localhost is two addresses
		t.Fatalf("got %d problems in %v, want 2", len(probs), err)
	}
	for _, p := range probs {
		if p.File != "dev/forwards.yaml" || p.Line != 19 || p.Column != 13 || !strings.Contains(p.Msg, `forward "service/catalog" at 11:13`) {
			t.Errorf("got %s, want dev/forwards.yaml:19:13 naming service/catalog at 11:13", p)
		}
	}
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		kind config.Kind
		name string
		err  string
	}{
		{in: "svc/api", kind: config.Service, name: "api"},
		{in: "service/api", kind: config.Service, name: "api"},
		{in: "services/api", kind: config.Service, name: "api"},
		{in: "deploy/web", kind: config.Deployment, name: "web"},
		{in: "Deployment/web", kind: config.Deployment, name: "web"},
		{in: "sts/db", kind: config.StatefulSet, name: "db"},
		{in: "ds/node-exporter", kind: config.DaemonSet, name: "node-exporter"},
		{in: "rs/web-7c9f", kind: config.ReplicaSet, name: "web-7c9f"},
		{in: "po/x", kind: config.Pod, name: "x"},
		{in: "postgres-0", kind: config.Pod, name: "postgres-0"},
		{in: "job/x", err: `invalid target "job/x": unknown kind "job"; want pod, service (svc), deployment (deploy), statefulset (sts), daemonset (ds) or replicaset (rs)`},
		{in: "svc/", err: `invalid target "svc/": want KIND/NAME, e.g. svc/api`},
		{in: "svc/a/b", err: `invalid target "svc/a/b": want KIND/NAME, e.g. svc/api`},
	} {
		kind, name, err := ParseTarget(tc.in)
		var msg string
		if err != nil {
			msg = err.Error()
		}
		if kind != tc.kind || name != tc.name || msg != tc.err {
			t.Errorf("ParseTarget(%q) = %q, %q, %q; want %q, %q, %q", tc.in, kind, name, msg, tc.kind, tc.name, tc.err)
		}
	}
}
