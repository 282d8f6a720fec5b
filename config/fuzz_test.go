package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes the loader panic, and that whatever
// it accepts is internally consistent.
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
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parse(data, func(string) (string, bool) { return "v", true })
		if err != nil {
			if len(Errors(err)) == 0 {
				t.Fatalf("error without position: %v", err)
			}
			return
		}
		if len(cfg.Forwards) == 0 {
			t.Fatal("accepted a file without forwards")
		}
		for _, fw := range cfg.Forwards {
			if fw.Name == "" || len(fw.Ports) == 0 || len(fw.Addresses) == 0 {
				t.Fatalf("accepted an incomplete forward: %+v", fw)
			}
		}
	})
}
