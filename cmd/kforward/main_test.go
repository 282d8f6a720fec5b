package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/klog/v2"
)

func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestValidateExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	code, out, errOut := runMain(t, append([]string{"validate"}, files...)...)
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut)
	}
	if !strings.Contains(out, "minimal.yaml: service/api: ports 8080:http on 127.0.0.1\n") {
		t.Errorf("summary of minimal.yaml missing:\n%s", out)
	}
}

func TestValidateReportsEveryError(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("forwards: [{pod: a, ports: [1]}]\n"), 0o600)
	os.WriteFile(bad, []byte("forwards:\n  - pod: a\n    ports: [99999]\n    bogus: 1\n"), 0o600)
	code, out, errOut := runMain(t, "validate", "-f", good, bad)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(out, "good.yaml: pod/a: ports 1:1 on 127.0.0.1") {
		t.Errorf("stdout lacks the good file's summary:\n%s", out)
	}
	want := []string{
		bad + `:3:13: invalid port "99999": 99999 is out of range 1-65535; want PORT, LOCAL:REMOTE, :REMOTE or 0:REMOTE`,
		bad + `:4:5: unknown key "bogus" in a forward`,
		"error: 1 of 2 files: invalid forwards file",
	}
	for _, w := range want {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}
}

func TestValidateMissingFile(t *testing.T) {
	code, _, errOut := runMain(t, "validate", "-f", filepath.Join(t.TempDir(), "nope.yaml"))
	if code != 1 || !strings.Contains(errOut, "no such file or directory") {
		t.Errorf("exit %d, stderr %q; want 1 and a missing-file error", code, errOut)
	}
}

func TestSchemaCommand(t *testing.T) {
	code, out, _ := runMain(t, "schema")
	if code != 0 || !strings.Contains(out, `"$schema": "http://json-schema.org/draft-07/schema#"`) {
		t.Errorf("exit %d, output %.200s", code, out)
	}
}

func TestUnknownCommand(t *testing.T) {
	code, out, errOut := runMain(t, "frobnicate")
	if code != 1 || out != "" || !strings.HasPrefix(errOut, "error: unknown command \"frobnicate\"") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// client-go logs through klog; a run routes it into its own log, in the
// chosen format, and nothing reaches stderr directly.
func TestLogFormatsAndKlogRouting(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	defer func() { os.Stderr = stderr }()

	var buf bytes.Buffer
	log, err := newLogger(&buf, "json", 0, false, false)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("from kforward")
	klog.InfoS("from client-go", "resource", "pods")
	klog.V(1).InfoS("too detailed")
	log.Debug("hidden without -v")
	klog.Flush()
	os.Stderr = stderr
	w.Close()
	stray, _ := io.ReadAll(r)

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log:\n%s\nwant two JSON records", buf.String())
	}
	for i, want := range []string{"from kforward", "from client-go"} {
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &rec); err != nil || rec["msg"] != want {
			t.Errorf("record %d: %s (%v), want JSON with msg %q", i, lines[i], err, want)
		}
	}
	if len(stray) > 0 {
		t.Errorf("written to stderr past the log: %q", stray)
	}

	buf.Reset()
	log, _ = newLogger(&buf, "text", 2, false, false) // -vv
	log.Debug("debug shown")
	klog.V(1).InfoS("klog level 1 shown")
	klog.V(2).InfoS("klog level 2 hidden")
	out := buf.String()
	if !strings.Contains(out, "level=DEBUG msg=\"debug shown\"") || !strings.Contains(out, "klog level 1 shown") || strings.Contains(out, "hidden") {
		t.Errorf("with -vv:\n%s", out)
	}

	if _, err := newLogger(&buf, "xml", 0, false, false); err == nil || err.Error() != `unknown log format "xml"; allowed: text, json` {
		t.Errorf("unknown format: %v", err)
	}
}

func TestRunInvalidFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "forwards.yaml")
	os.WriteFile(file, []byte("forwards:\n  - pod: a\n    ports: [x]\n"), 0o600)
	code, _, errOut := runMain(t, "run", "-f", file)
	if code != 1 || !strings.Contains(errOut, file+`:3:13: invalid port "x"`) {
		t.Errorf("exit %d, stderr:\n%s", code, errOut)
	}
}

// --cpuprofile writes a profile (gzip-compressed protobuf) of the run, also
// when the run ends with an error.
func TestRunCPUProfile(t *testing.T) {
	dir := t.TempDir()
	file, prof := filepath.Join(dir, "forwards.yaml"), filepath.Join(dir, "cpu.pprof")
	os.WriteFile(file, []byte("forwards:\n  - pod: a\n    ports: [x]\n"), 0o600)
	if code, _, errOut := runMain(t, "run", "-f", file, "--cpuprofile", prof); code != 1 {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut)
	}
	b, err := os.ReadFile(prof)
	if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("profile %s: %d bytes, %v; want a gzip-compressed profile", prof, len(b), err)
	}
}
