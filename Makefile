# kforward: the two commands that matter are `make demo` and `make test`.
GO ?= go

.PHONY: all build test tools vet unit soak bench fuzz schema demo demo-down

all: build

build:
	$(GO) build -o bin/kforward ./cmd/kforward

# Every test: vet, unit tests, and the end-to-end tests against a real local
# control plane (built on first use into $$KFORWARD_E2E_CACHE, default
# ~/.cache/kforward-e2e).
test: vet tools
	$(GO) test -race -count=1 -timeout 60m ./...

# What the tests need from outside Go (Debian packages): tmux, the real
# terminal the live view's end-to-end test runs kforward in; strace, which
# watches what files kforward opens and what it runs (e2e/safety_test.go);
# PostgreSQL, a real database behind a pod, read by pg_dump and psql
# through kforward (e2e/postgres_test.go).
tools:
	@command -v tmux >/dev/null || { echo "installing tmux (apt-get)"; apt-get update -qq && apt-get install -y -qq tmux; }
	@command -v strace >/dev/null || { echo "installing strace (apt-get)"; apt-get update -qq && apt-get install -y -qq strace; }
	@{ command -v pg_dump >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; } || { echo "installing postgresql (apt-get)"; apt-get update -qq && apt-get install -y -qq postgresql; }

vet:
	$(GO) vet ./...

# The fault tests of e2e at length: more faults, more connections, longer
# pauses (KFORWARD_SOAK=1; see soak in e2e/helpers_test.go). make test runs
# the same tests in their short form.
soak: tools
	KFORWARD_SOAK=1 $(GO) test -race -count=1 -timeout 120m -run 'Fault|Soak' -v ./e2e/

# Fast tests only: no control plane.
unit:
	$(GO) test -race -count=1 -short ./...

# kforward against kubectl port-forward on the local control plane, side by
# side (figures, not pass/fail; see BENCHMARKS.md). Flags go in BENCHFLAGS,
# e.g. make bench BENCHFLAGS='--json bench.json --kforward /path/to/kforward'.
bench:
	$(GO) run ./e2e/cmd/bench $(BENCHFLAGS)

fuzz:
	cd config && $(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 60s -fuzzminimizetime 5s .

# Regenerate the JSON Schema of forwards.yaml from the config types.
schema:
	$(GO) run ./cmd/kforward schema > forwards.schema.json

# Bring up the local control plane (built on first use), create the demo
# workloads and run kforward in the foreground. Ctrl-C stops kforward; the
# cluster stays up until `make demo-down`.
demo: build
	$(GO) run ./e2e/cmd/devcluster up
	$(GO) run ./e2e/cmd/devcluster apply -f examples/demo/workloads.yaml
	KUBECONFIG=$(CURDIR)/.devcluster/kubeconfig ./bin/kforward run -f examples/demo/forwards.yaml

demo-down:
	$(GO) run ./e2e/cmd/devcluster down

# Releases (.goreleaser.yaml). goreleaser is built from the Go module proxy
# on first use (about 8 minutes on two cores) into the tools cache,
# $$KFORWARD_TOOLS_CACHE or ~/.cache/kforward-tools, keyed by version.
# internal/release's test reads the pinned version from this line.
GORELEASER_VERSION ?= v2.16.0
TOOLS_CACHE ?= $(or $(KFORWARD_TOOLS_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kforward-tools)
GORELEASER := $(TOOLS_CACHE)/goreleaser-$(GORELEASER_VERSION)/goreleaser

$(GORELEASER):
	GOBIN=$(dir $@) GOWORK=off $(GO) install github.com/goreleaser/goreleaser/v2@$(GORELEASER_VERSION)

# Check .goreleaser.yaml (also a test in internal/release).
release-check: $(GORELEASER)
	$(GORELEASER) check

# Build every release archive locally into bin/release/, publishing nothing.
# Slow (six cross-builds), so not part of make test.
release-snapshot: $(GORELEASER)
	$(GORELEASER) release --snapshot --clean
