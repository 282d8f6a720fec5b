# kforward: the two commands that matter are `make demo` and `make test`.
GO ?= go

.PHONY: all build test vet unit fuzz schema demo demo-down

all: build

build:
	$(GO) build -o bin/kforward ./cmd/kforward

# Every test: vet, unit tests, and the end-to-end tests against a real local
# control plane (built on first use into $$KFORWARD_E2E_CACHE, default
# ~/.cache/kforward-e2e).
test: vet
	$(GO) test -race -count=1 -timeout 60m ./...

vet:
	$(GO) vet ./...

# Fast tests only: no control plane.
unit:
	$(GO) test -race -count=1 -short ./...

fuzz:
	cd config && $(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 60s .

# Regenerate the JSON Schema of forwards.yaml from the config types.
schema:
	$(GO) run ./cmd/kforward schema > forwards.schema.json
