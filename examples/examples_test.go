// Package examples holds forwards files users can copy; this test keeps
// every one of them valid.
package examples

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kforward/kforward/config"
)

func TestExamplesAreValid(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "demo/forwards.yaml")
	if len(files) < 4 {
		t.Fatalf("found only %v", files)
	}
	for _, path := range files {
		t.Run(path, func(t *testing.T) {
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Forwards) == 0 {
				t.Error("no forwards")
			}
			data, _ := os.ReadFile(path)
			modeline := "# yaml-language-server: $schema=" + filepath.ToSlash(rel(t, filepath.Dir(path), "../forwards.schema.json"))
			if !strings.HasPrefix(string(data), modeline+"\n") {
				t.Errorf("first line is not the schema modeline %q", modeline)
			}
		})
	}
}

func rel(t *testing.T, dir, target string) string {
	r, err := filepath.Rel(dir, target)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
