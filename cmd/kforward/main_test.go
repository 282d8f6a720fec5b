package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
