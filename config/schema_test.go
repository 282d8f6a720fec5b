package config

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// TestSchemaUpToDate keeps the committed forwards.schema.json (which the
// examples' yaml-language-server modelines point at) generated from the types.
func TestSchemaUpToDate(t *testing.T) {
	got, err := os.ReadFile("../forwards.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, Schema()) {
		t.Error("forwards.schema.json is stale: run make schema")
	}
}

func TestSchemaCoversEveryKey(t *testing.T) {
	var s struct {
		Properties map[string]struct {
			Properties map[string]any `json:"properties"`
			Items      struct {
				Properties map[string]any `json:"properties"`
				OneOf      []any          `json:"oneOf"`
			} `json:"items"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(Schema(), &s); err != nil {
		t.Fatal(err)
	}
	forward := s.Properties["forwards"].Items
	for _, key := range []string{"name", "pod", "service", "deployment", "statefulset", "daemonset", "replicaset", "selector", "ports", "context", "namespace", "address", "transport", "reconnect", "health", "connectTimeout", "clientBuffer", "diskBuffer", "stallTimeout"} {
		if _, ok := forward.Properties[key]; !ok {
			t.Errorf("schema of a forward lacks %q", key)
		}
	}
	if len(forward.OneOf) != 7 {
		t.Errorf("schema of a forward has %d target alternatives, want 7", len(forward.OneOf))
	}
	for _, key := range []string{"context", "namespace", "address", "transport", "reconnect", "health", "connectTimeout", "clientBuffer", "diskBuffer", "stallTimeout"} {
		if _, ok := s.Properties["defaults"].Properties[key]; !ok {
			t.Errorf("schema of defaults lacks %q", key)
		}
	}
}
