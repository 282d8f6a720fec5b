// Package status serves a running kforward's state to scripts, monitoring
// and `kforward status`: an HTTP endpoint (GET /status, /metrics, /healthz,
// /readyz; POST /-/reload), the client that reads it, and the ports file.
//
// Everything here is computed from runner snapshots at the moment it is
// asked for: the package keeps no state of its own about forwards, so what
// it serves cannot drift from what the runner does. It never serves a
// credential: a snapshot holds none (no kubeconfig, no token, no rest
// config), and nothing here reads one.
//
// What it serves on loopback is for this machine's programs, not for web
// pages open in its browsers: a request that came in on loopback must
// name a loopback host (DNS rebinding), and a POST from a page of another
// origin is refused (see guard). The ports file is kforward's own: it
// starts with PortsMarker, and a file at the path without it is never
// overwritten or removed.
package status
