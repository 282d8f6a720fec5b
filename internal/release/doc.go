// Package release holds the tests of kforward's release configuration:
// .goreleaser.yaml (goreleaser check) and the krew manifest
// plugins/forward.yaml. It has no code of its own; the repository's root
// has no Go package, and this is where release tooling would go.
package release
