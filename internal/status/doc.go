// Package status serves a running kforward's state to scripts, monitoring
// and `kforward status`: an HTTP endpoint (GET /status, /metrics, /healthz,
// /readyz; POST /-/reload), the client that reads it, and the ports file.
//
// Everything here is computed from runner snapshots at the moment it is
// asked for: the package keeps no state of its own about forwards, so what
// it serves cannot drift from what the runner does. It never serves a
// credential: a snapshot holds none (no kubeconfig, no token, no rest
// config), and nothing here reads one.
package status
