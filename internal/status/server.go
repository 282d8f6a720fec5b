package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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
}

// Handler serves src's state over HTTP.
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
	return mux
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
			line += ": no ready pod of " + s.Target
		case s.LastError != "":
			line += ": " + s.LastError
		}
		out = append(out, line)
	}
	return out
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

// CheckAddr refuses a status address that would be reachable from other
// machines without saying so: the host must be a loopback address or
// "localhost", unless explicit (an IP or name given on the command line).
// An empty host (":7355", every interface) is never accepted implicitly.
func CheckAddr(addr string, explicit bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("status address %q: %w", addr, err)
	}
	switch {
	case host == "":
		return fmt.Errorf("status address %q listens on every interface; give the address to mean it (0.0.0.0%s), or use 127.0.0.1", addr, addr)
	case isLoopback(host):
		return nil
	case !explicit:
		return fmt.Errorf("status address %q is reachable from other machines; give it on the command line (--status-addr) to mean it", addr)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
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
