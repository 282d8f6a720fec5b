package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/internal/netx"
	"github.com/kforward/kforward/runner"
)

// DefaultAddr is where a running kforward serves its status, and where
// `kforward status` looks for it.
const DefaultAddr = "127.0.0.1:7355"

// Source is what the endpoint serves; *runner.Runner is one.
type Source interface {
	Snapshot() runner.Snapshot
	Reload(ctx context.Context) (runner.Reload, error)
	// Loaded is closed once the forwards file is loaded and its forwards
	// started; before that a snapshot's empty list says nothing about
	// readiness.
	Loaded() <-chan struct{}
}

// Handler serves src's state over HTTP, to this machine's programs only
// unless it listens elsewhere (see guard).
func Handler(src Source) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collector{src},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, src.Snapshot())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-src.Loaded():
		default:
			http.Error(w, "not ready: the forwards file is not loaded yet", http.StatusServiceUnavailable)
			return
		}
		notReady := NotReady(src.Snapshot().Forwards)
		if len(notReady) == 0 {
			fmt.Fprintln(w, "ok: every forward is active")
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, line := range notReady {
			fmt.Fprintln(w, line)
		}
	})
	mux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, r *http.Request) {
		res, err := src.Reload(r.Context())
		if err != nil {
			http.Error(w, "not reloaded: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		code := http.StatusOK
		if !res.Successful {
			code = http.StatusUnprocessableEntity
		}
		if strings.Contains(r.Header.Get("Accept"), "application/json") {
			writeJSON(w, code, res)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		fmt.Fprintln(w, ReloadLine(res))
		for _, e := range res.Errors {
			fmt.Fprintln(w, e)
		}
	})
	return guard(mux)
}

// NotReady names each forward that is not active, and why: one line each,
// sorted by name (as the snapshot is).
func NotReady(forwards []forward.Status) []string {
	var out []string
	for _, s := range forwards {
		if s.State == forward.Active {
			continue
		}
		line := s.Name + ": " + string(s.State)
		switch {
		case s.State == forward.WaitingForPod && s.LastError == "":
			line += ": " + noPod(s.Target)
		case s.State == forward.Checking:
			line += fmt.Sprintf(": the tunnel has not answered for %s (was kforward asleep?); checking it", time.Since(s.HealthyAt).Round(time.Second))
		case s.LastError != "":
			line += ": " + s.LastError
		}
		out = append(out, line)
	}
	return out
}

// noPod says what a forward waiting for a pod of target waits for: a
// pod target needs its pod Running; the others take a Ready pod, else a
// Running one.
func noPod(target string) string {
	if strings.HasPrefix(target, "pod/") {
		return "no running pod of " + target
	}
	return "no ready or running pod of " + target
}

// ReloadLine says in one line what a reload did.
func ReloadLine(res runner.Reload) string {
	if !res.Successful {
		return fmt.Sprintf("not reloaded (%d problem(s)); nothing changed", len(res.Errors))
	}
	return fmt.Sprintf("reloaded: %d added, %d removed, %d restarted, %d unchanged",
		res.Added, res.Removed, res.Restarted, res.Unchanged)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// CheckAddr refuses a status address that is mistyped, or that would be
// reachable from other machines without saying so. The port must be a
// number from 1 to 65535 (a status endpoint needs a port known in
// advance), the host an IP address or "localhost": a name would be bound
// on whatever it resolves to. A non-loopback host is accepted only when
// explicit (given on the command line); an empty host (":7355", every
// interface) never is.
func CheckAddr(addr string, explicit bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("status address %q: want IP:PORT, e.g. %s", addr, DefaultAddr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("status address %q: the port must be a number from 1 to 65535", addr)
	}
	switch {
	case host == "":
		return fmt.Errorf("status address %q listens on every interface; give the address to mean it (0.0.0.0%s), or use 127.0.0.1", addr, addr)
	case isLoopback(host):
		return nil
	case !isIP(host):
		return fmt.Errorf("status address %q: give an IP address (127.0.0.1, or the one to listen on) or localhost, not a host name", addr)
	case !explicit:
		return fmt.Errorf("status address %q is reachable from other machines; give it on the command line (--status-addr) to mean it", addr)
	}
	return nil
}

// isLoopback reports whether host (no port, no brackets) is "localhost" or
// a loopback IP.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func isIP(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}

// Serve serves h on addr until ctx ends. An address that cannot be bound
// (another kforward has it) is a warning, not an error: forwarding matters
// more than its status. It returns once the server has stopped.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if netx.AddrInUse(err) {
			log.Warn("status endpoint not served: the address is already in use (another kforward?); choose one with --status-addr", "addr", addr)
		} else {
			log.Warn("status endpoint not served", "addr", addr, "err", err)
		}
		return
	}
	if !isLoopback(mustHost(addr)) {
		log.Warn("the status endpoint is reachable from other machines", "addr", ln.Addr().String())
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	log.Debug("serving status", "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("status endpoint stopped", "err", err)
	}
	<-done
}

func mustHost(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	return host
}
