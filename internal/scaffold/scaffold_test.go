package scaffold

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"k8s.io/kube-openapi/pkg/validation/strfmt"
	"k8s.io/kube-openapi/pkg/validation/validate"

	"github.com/kforward/kforward/config"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the results")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
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

type svcPort struct {
	name     string
	port     int32
	target   intstr.IntOrString
	protocol corev1.Protocol
}

func service(ns, name string, selector map[string]string, ports ...svcPort) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec:       corev1.ServiceSpec{Selector: selector},
	}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: p.name, Port: p.port, TargetPort: p.target, Protocol: p.protocol})
	}
	return s
}

func podSpec(ports ...corev1.ContainerPort) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Ports: ports}}}}
}

func deployment(ns, name string, pod map[string]string, ports ...corev1.ContainerPort) *appsv1.Deployment {
	tmpl := podSpec(ports...)
	tmpl.Labels = pod
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec: appsv1.DeploymentSpec{Template: tmpl}}
}

func statefulset(ns, name string, pod map[string]string, ports ...corev1.ContainerPort) *appsv1.StatefulSet {
	tmpl := podSpec(ports...)
	tmpl.Labels = pod
	return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec: appsv1.StatefulSetSpec{Template: tmpl}}
}

// objects is a typical cluster: namespace demo with named, unnamed, low,
// clashing, UDP-only and selector-less services and some workloads no
// Service selects; namespace staging with a second web; namespace empty
// with nothing.
func objects() []runtime.Object {
	app := func(name string) map[string]string { return map[string]string{"app": name} }
	web := service("demo", "web", app("web"),
		svcPort{name: "http", port: 80, target: intstr.FromInt32(8080)},
		svcPort{name: "metrics", port: 9090, target: intstr.FromString("metrics")})
	web.Labels["tier"] = "frontend"
	// ExternalName: no pods behind it, even with a selector.
	partner := service("demo", "partner", app("partner"), svcPort{port: 443})
	partner.Spec.Type, partner.Spec.ExternalName = corev1.ServiceTypeExternalName, "api.partner.example"
	return []runtime.Object{
		web,
		service("demo", "api", app("api"), svcPort{port: 8080, target: intstr.FromInt32(8080)}),
		service("demo", "admin", app("admin"), svcPort{port: 8080}), // 8080 taken by api: a free port
		service("demo", "legacy", app("legacy"), svcPort{port: 443, target: intstr.FromInt32(8443)}),
		service("demo", "dns", app("dns"),
			svcPort{name: "dns-tcp", port: 53, protocol: corev1.ProtocolTCP},
			svcPort{name: "dns", port: 53, protocol: corev1.ProtocolUDP}),
		service("demo", "syslog", app("syslog"), svcPort{name: "syslog", port: 514, protocol: corev1.ProtocolUDP}),
		service("demo", "external-db", nil, svcPort{port: 5432}),
		service("demo", "long-names", app("long-names"), svcPort{name: "a-very-long-port-name", port: 7000}),
		partner,
		deployment("demo", "web", app("web"), corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
		deployment("demo", "worker", map[string]string{"app": "worker", "pool": "a"},
			corev1.ContainerPort{Name: "metrics", ContainerPort: 9100}, corev1.ContainerPort{ContainerPort: 7070}),
		deployment("demo", "batch", app("batch")),
		statefulset("demo", "db", app("db"), corev1.ContainerPort{Name: "postgres", ContainerPort: 5432}),
		statefulset("demo", "api", app("api-cache"), corev1.ContainerPort{Name: "redis", ContainerPort: 6379}),
		service("staging", "web", app("web"), svcPort{name: "http", port: 80, target: intstr.FromString("http")}),
		deployment("staging", "web", app("web"), corev1.ContainerPort{Name: "http", ContainerPort: 8080}),
	}
}

var typical = []struct {
	name string
	opts Options
}{
	{"one-namespace", Options{Context: "dev", Namespaces: []string{"demo"}}},
	{"one-namespace-workloads", Options{Context: "dev", Namespaces: []string{"demo"}, Workloads: true}},
	{"two-namespaces-and-an-empty-one", Options{Context: "dev", Namespaces: []string{"staging", "demo", "empty"}}},
	{"all-namespaces-workloads", Options{Workloads: true}},
	{"selector", Options{Context: "kind-kind", Namespaces: []string{"demo"}, Selector: "tier=frontend", SchemaURL: "../forwards.schema.json"}},
}

func TestGenerate(t *testing.T) {
	for _, tc := range typical {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Generate(context.Background(), fake.NewClientset(objects()...), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, got)
		})
	}
}

// Every file Generate writes is one config accepts and the JSON Schema
// allows.
func TestGeneratedFilesAreValid(t *testing.T) {
	schema := loadSchema(t)
	for _, tc := range typical {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Generate(context.Background(), fake.NewClientset(objects()...), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := config.ParseFile("forwards.yaml", got)
			if err != nil {
				t.Fatalf("config refuses the file: %v\n%s", err, got)
			}
			if len(cfg.Forwards) == 0 {
				t.Error("no forwards")
			}
			for _, f := range cfg.Forwards {
				if tc.opts.Context != "" && f.Context != tc.opts.Context {
					t.Errorf("forward %s has context %q, want %q", f.Name, f.Context, tc.opts.Context)
				}
				if f.Namespace == "" {
					t.Errorf("forward %s has no namespace", f.Name)
				}
			}
			if errs := schemaErrors(t, schema, got); len(errs) > 0 {
				t.Errorf("the schema refuses the file: %v\n%s", errs, got)
			}
		})
	}
}

// The validator does refuse what the schema forbids, so the test above
// means something.
func TestSchemaCheckRefusesInvalidFile(t *testing.T) {
	schema := loadSchema(t)
	for _, bad := range []string{
		"forwards:\n  - service: a\n    prots: [8080]\n",
		"forwards:\n  - service: a\n    pod: b\n    ports: [8080]\n",
		"forwards:\n  - service: a\n    ports: [\"http\"]\n",
	} {
		if errs := schemaErrors(t, schema, []byte(bad)); len(errs) == 0 {
			t.Errorf("the schema check accepts\n%s", bad)
		}
	}
}

func TestGenerateIsDeterministic(t *testing.T) {
	opts := Options{Context: "dev", Workloads: true}
	first, err := Generate(context.Background(), fake.NewClientset(objects()...), opts)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Generate(context.Background(), fake.NewClientset(objects()...), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, again) {
		t.Errorf("a second run differs:\n%s\nfirst:\n%s", again, first)
	}
	// The same objects created in another order, as another cluster would
	// list them.
	for i := range 5 {
		objs := objects()
		r := rand.New(rand.NewPCG(uint64(i), 1))
		r.Shuffle(len(objs), func(a, b int) { objs[a], objs[b] = objs[b], objs[a] })
		got, err := Generate(context.Background(), fake.NewClientset(objs...), opts)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, first) {
			t.Fatalf("objects created in another order give other bytes:\n%s\nfirst:\n%s", got, first)
		}
	}
}

func TestClashingNamesAreMadeUnique(t *testing.T) {
	got, err := Generate(context.Background(), fake.NewClientset(objects()...), Options{Namespaces: []string{"demo", "staging"}, Workloads: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, f := range cfg.Forwards {
		names[f.Namespace+"/"+f.Target.String()] = f.Name
	}
	for target, want := range map[string]string{
		"demo/service/web":         "web",
		"staging/service/web":      "web-staging",
		"demo/service/api":         "api",
		"demo/statefulset/api":     "api-statefulset",
		"demo/deployment/worker":   "worker",
		"demo/statefulset/db":      "db",
		"staging/deployment/web":   "", // selected by staging's web Service
		"demo/deployment/web":      "", // selected by demo's web Service
		"demo/service/external-db": "",
	} {
		if names[target] != want {
			t.Errorf("%s is named %q, want %q", target, names[target], want)
		}
	}
}

func TestEmptyNamespaceIsNothingToForward(t *testing.T) {
	_, err := Generate(context.Background(), fake.NewClientset(objects()...), Options{Namespaces: []string{"empty"}, Workloads: true})
	if !errors.Is(err, ErrNoForwards) {
		t.Fatalf("got %v, want ErrNoForwards", err)
	}
	want := "found no Service with a selector and a TCP port, nor a Deployment or StatefulSet outside them with a TCP container port, in namespace empty: nothing to forward"
	if err.Error() != want {
		t.Errorf("got  %q\nwant %q", err, want)
	}
}

func TestInvalidSelector(t *testing.T) {
	_, err := Generate(context.Background(), fake.NewClientset(), Options{Selector: "app in (a"})
	if err == nil || !strings.HasPrefix(err.Error(), `invalid selector "app in (a": `) {
		t.Errorf("got %v, want an invalid selector error", err)
	}
}

// A failed list says what was being listed and where.
func TestListErrorSaysWhat(t *testing.T) {
	client := fake.NewClientset(objects()...)
	client.PrependReactor("list", "statefulsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New(`statefulsets.apps is forbidden: User "dev" cannot list resource "statefulsets"`)
	})
	_, err := Generate(context.Background(), client, Options{Namespaces: []string{"demo"}, Workloads: true})
	want := `list statefulsets in namespace "demo": statefulsets.apps is forbidden: User "dev" cannot list resource "statefulsets"`
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

// A cluster nobody answers on fails at once, saying what it tried.
func TestUnreachableClusterRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	client := clientFor(t, "https://"+addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err = Generate(ctx, client, Options{Namespaces: []string{"demo"}})
	if err == nil {
		t.Fatal("no error")
	}
	if !strings.HasPrefix(err.Error(), `list services in namespace "demo": `) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("got %v, want it to say it listed services and the connection was refused", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

// A cluster that accepts connections and never answers fails when the
// caller's context ends, not later.
func TestUnreachableClusterTimesOut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // held open, never read
		}
	}()
	client := clientFor(t, "https://"+l.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Generate(ctx, client, Options{Namespaces: []string{"demo"}})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), `list services in namespace "demo": `) {
		t.Errorf("got %v, want a deadline while listing services", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v after a 300ms deadline", d)
	}
}

func clientFor(t *testing.T, host string) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(&rest.Config{Host: host, TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func loadSchema(t *testing.T) *spec.Schema {
	t.Helper()
	raw, err := os.ReadFile("../../forwards.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var s spec.Schema
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// schemaErrors validates a YAML file against the JSON Schema, reading the
// YAML as config does (yaml.v3) and checking it as yaml-language-server
// would, with kube-openapi's JSON Schema validator.
func schemaErrors(t *testing.T, schema *spec.Schema, data []byte) []error {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(j, &v); err != nil {
		t.Fatal(err)
	}
	return validate.NewSchemaValidator(schema, nil, "", strfmt.Default).Validate(v).Errors
}

// One namespace, even named twice, is in defaults: and on no forward.
func TestOneNamespaceGoesInDefaults(t *testing.T) {
	for _, namespaces := range [][]string{{"demo"}, {"demo", "demo"}} {
		got, err := Generate(context.Background(), fake.NewClientset(objects()...), Options{Namespaces: namespaces})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(got), "\ndefaults:\n  namespace: demo\n") || strings.Contains(string(got), "    namespace:") {
			t.Errorf("-n %v: want namespace demo in defaults only:\n%s", namespaces, got)
		}
	}
}
