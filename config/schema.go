package config

import (
	"encoding/json"
	"reflect"
	"strings"
)

// schemer is implemented by value types whose YAML form is not their Go
// shape (a port is an integer or a string, an address a string or a list).
type schemer interface {
	schema() map[string]any
}

// Schema returns the JSON Schema (draft-07) of forwards.yaml, generated from
// the same types the decoder fills, for editors using yaml-language-server.
func Schema() []byte {
	s := schemaOf(reflect.TypeFor[file]())
	s["$schema"] = "http://json-schema.org/draft-07/schema#"
	s["$id"] = "https://github.com/kforward/kforward/forwards.schema.json"
	s["title"] = "kforward forwards.yaml"
	out, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		panic(err) // only maps, slices and strings: cannot fail
	}
	return append(out, '\n')
}

func schemaOf(t reflect.Type) map[string]any {
	if s, ok := reflect.New(t).Interface().(schemer); ok {
		return s.schema()
	}
	switch t.Kind() {
	case reflect.Struct:
		props := map[string]any{}
		var required, oneOf []any
		addFields(t, props, &required, &oneOf)
		s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if len(required) > 0 {
			s["required"] = required
		}
		if len(oneOf) > 0 {
			s["oneOf"] = oneOf
		}
		return s
	case reflect.Slice:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem()), "minItems": 1}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem()), "minProperties": 1}
	case reflect.String:
		return map[string]any{"type": "string"}
	}
	panic("config: no schema for " + t.String())
}

func addFields(t reflect.Type, props map[string]any, required, oneOf *[]any) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-" || !f.IsExported():
			continue
		case opts == "inline":
			addFields(f.Type, props, required, oneOf)
			continue
		}
		s := schemaOf(f.Type)
		if doc := f.Tag.Get("doc"); doc != "" {
			s["description"] = doc
		}
		if enum := f.Tag.Get("enum"); enum != "" {
			var values []any
			for _, v := range strings.Split(enum, ",") {
				values = append(values, v)
			}
			s["enum"] = values
		}
		if f.Tag.Get("required") == "true" {
			*required = append(*required, name)
		}
		if f.Tag.Get("group") == "target" {
			*oneOf = append(*oneOf, map[string]any{"required": []any{name}})
		}
		props[name] = s
	}
}
