// Command bench measures kforward against kubectl port-forward on the local
// control plane of package e2e/cluster, side by side in one run:
//
//	go run ./e2e/cmd/bench [--json FILE] [--kforward PATH] [flags]
//
// Every scenario runs for each forwarder on the same pod, in alternating
// rounds (A B C D E A B C D E ...), so that noise on a shared machine hits
// all of them alike; the table shows the median of the rounds and the
// kforward/kubectl ratios. See BENCHMARKS.md for the method.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kforward/kforward/e2e/cluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		err = errors.New("interrupted; every process the run started is stopped")
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

var allScenarios = []string{"download", "upload", "parallel", "connect", "rate", "slow", "paced", "uplink", "recovery", "reload", "scale"}

type options struct {
	kforward     string
	baseline     string
	kubectl      string
	json         string
	scenarios    []string
	rounds       int
	size         int64
	parallel     int
	conns        int
	rateFor      time.Duration
	rateConns    int
	msg          int
	slowEvery    time.Duration
	slowWindow   time.Duration
	pacedSize    int64
	pacedRate    int
	uplinkSize   int64
	uplinkRate   int
	uplinkDelay  time.Duration
	reloads      int
	scale        int
	scaleKubectl int
	idle         time.Duration
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.kforward, "kforward", "", "kforward binary to measure (default: build ./cmd/kforward into a temporary directory)")
	fs.StringVar(&o.baseline, "baseline", "", "also measure this kforward binary (say, main before a change) as before-ws and before-spdy, in the same rounds")
	fs.StringVar(&o.kubectl, "kubectl", "kubectl", "kubectl binary; when not found, kforward is measured alone")
	fs.StringVar(&o.json, "json", "", "also write the raw figures to this file")
	only := fs.String("scenarios", strings.Join(allScenarios, ","), "scenarios to run, comma-separated")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of each scenario (the table shows medians)")
	sizeMiB := fs.Int64("size-mib", 256, "bytes per throughput transfer, MiB")
	fs.IntVar(&o.parallel, "parallel", 8, "parallel connections in the parallel throughput scenario")
	fs.IntVar(&o.conns, "conns", 500, "new connections in the latency scenario")
	fs.DurationVar(&o.rateFor, "rate-for", 10*time.Second, "duration of each request-rate measurement")
	fs.IntVar(&o.rateConns, "rate-conns", 50, "concurrent connections in the second request-rate measurement")
	fs.IntVar(&o.msg, "msg", 64, "request and response size in the request-rate scenario, bytes")
	fs.DurationVar(&o.slowEvery, "slow-every", 250*time.Millisecond, "interval between requests in the slow-reader scenario")
	fs.DurationVar(&o.slowWindow, "slow-for", 20*time.Second, "duration of the slow-reader scenario")
	pacedMiB := fs.Int64("paced-mib", 64, "bytes the paced reader downloads, MiB")
	fs.IntVar(&o.pacedRate, "paced-rate", 8<<20, "bytes per second the paced reader reads")
	uplinkMiB := fs.Int64("uplink-mib", 16, "bytes uploaded over the slow uplink, MiB")
	fs.IntVar(&o.uplinkRate, "uplink-rate", 512<<10, "the slow uplink's rate, bytes per second")
	fs.DurationVar(&o.uplinkDelay, "uplink-delay", 20*time.Millisecond, "the slow uplink's one-way delay (each direction)")
	fs.IntVar(&o.reloads, "reloads", 20, "reloads per round in the reload scenario")
	fs.IntVar(&o.scale, "scale", 200, "forwards (and pods) in the scale scenario")
	fs.IntVar(&o.scaleKubectl, "scale-kubectl", 20, "kubectl processes measured in the scale scenario (extrapolated to --scale)")
	fs.DurationVar(&o.idle, "idle", 30*time.Second, "idle window of the scale and idle-cost scenarios")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			return o, fmt.Errorf("unknown scenario %q; known: %s", s, strings.Join(allScenarios, ", "))
		}
		o.scenarios = append(o.scenarios, s)
	}
	o.size = *sizeMiB << 20
	o.pacedSize, o.uplinkSize = *pacedMiB<<20, *uplinkMiB<<20
	switch {
	case o.pacedSize < 1, o.pacedRate < 1, o.uplinkSize < 1, o.uplinkRate < 1, o.uplinkDelay < 0:
		return o, errors.New("the paced and uplink sizes and rates must be positive")
	case o.rounds < 1, o.size < 1, o.parallel < 1, o.conns < 1, o.rateConns < 1, o.msg < 1, o.reloads < 1,
		o.scale < 1, o.scaleKubectl < 1 || o.scaleKubectl > o.scale:
		return o, errors.New("counts and sizes must be positive, and --scale-kubectl at most --scale")
	case o.rateFor <= 0, o.slowEvery <= 0, o.slowWindow < o.slowEvery, o.idle <= 0:
		return o, errors.New("durations must be positive, and --slow-for at least --slow-every")
	}
	return o, nil
}

// strings lists the options for the JSON report.
func (o options) strings() map[string]string {
	return map[string]string{
		"scenarios": strings.Join(o.scenarios, ","), "rounds": strconv.Itoa(o.rounds),
		"size": strconv.FormatInt(o.size, 10), "parallel": strconv.Itoa(o.parallel), "conns": strconv.Itoa(o.conns),
		"rateFor": o.rateFor.String(), "rateConns": strconv.Itoa(o.rateConns), "msg": strconv.Itoa(o.msg),
		"slowEvery": o.slowEvery.String(), "slowFor": o.slowWindow.String(), "reloads": strconv.Itoa(o.reloads),
		"pacedSize": strconv.FormatInt(o.pacedSize, 10), "pacedRate": strconv.Itoa(o.pacedRate),
		"uplinkSize": strconv.FormatInt(o.uplinkSize, 10), "uplinkRate": strconv.Itoa(o.uplinkRate), "uplinkDelay": o.uplinkDelay.String(),
		"scale": strconv.Itoa(o.scale), "scaleKubectl": strconv.Itoa(o.scaleKubectl), "idle": o.idle.String(),
	}
}

// forwarder is one column of the table.
type forwarder struct {
	Name      string
	kind      kind
	transport string // websocket or spdy
	binary    string // kforward's, when not the one measured (--baseline)
}

type kind int

const (
	direct kind = iota
	kforwardKind
	kubectlKind
)

func forwarders(withKubectl bool, baseline string) []forwarder {
	fs := []forwarder{
		{"direct", direct, "", ""},
		{"kforward-ws", kforwardKind, "websocket", ""},
		{"kforward-spdy", kforwardKind, "spdy", ""},
	}
	if baseline != "" {
		fs = append(fs, forwarder{"before-ws", kforwardKind, "websocket", baseline}, forwarder{"before-spdy", kforwardKind, "spdy", baseline})
	}
	if withKubectl {
		fs = append(fs, forwarder{"kubectl-ws", kubectlKind, "websocket", ""}, forwarder{"kubectl-spdy", kubectlKind, "spdy", ""})
	}
	return fs
}

// bench is one run of the harness.
type bench struct {
	o        options
	c        *cluster.Cluster
	ns       string
	kforward string
	kubectl  string // "" when not found
	fs       []forwarder
	tmp      string
	via      string // a kubeconfig through e2e/netem, while a scenario uses one
	log      io.Writer
	res      results
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	b := &bench{o: o, log: stderr}
	if b.tmp, err = os.MkdirTemp("", "kforward-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.tmp)

	b.kforward = o.kforward
	if b.kforward == "" {
		b.kforward = filepath.Join(b.tmp, "kforward")
		b.logf("building kforward")
		build := exec.CommandContext(ctx, "go", "build", "-o", b.kforward, "github.com/kforward/kforward/cmd/kforward")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build kforward: %w\n%s", err, out)
		}
	} else if b.kforward, err = filepath.Abs(b.kforward); err != nil {
		return err
	}
	if path, err := exec.LookPath(o.kubectl); err == nil {
		b.kubectl = path
	} else {
		b.logf("%s not found (%v): measuring kforward alone", o.kubectl, err)
	}
	if o.baseline != "" {
		if o.baseline, err = filepath.Abs(o.baseline); err != nil {
			return err
		}
	}
	b.fs = forwarders(b.kubectl != "", o.baseline)
	machine := b.machine(ctx)

	b.logf("starting the local control plane")
	b.c, err = cluster.Start(ctx, cluster.Options{Progress: stderr})
	if err != nil {
		return fmt.Errorf("start cluster: %w", err)
	}
	defer b.c.Stop()
	if err := b.setup(ctx); err != nil {
		return err
	}

	start := time.Now()
	for _, name := range o.scenarios {
		began := time.Now()
		if err := b.scenario(ctx, name); err != nil {
			return err // only the context's end stops the run; failures are samples
		}
		// The open file count shows a leak early: through kwok, a
		// connection the pod does not close lives on (see session.go).
		fds, _ := os.ReadDir("/proc/self/fd")
		b.logf("scenario %s took %s (%d open files)", name, time.Since(began).Round(100*time.Millisecond), len(fds))
	}
	b.logf("done in %s", time.Since(start).Round(time.Second))

	fmt.Fprintf(stdout, "kforward benchmark, %d rounds, %s\n", o.rounds, time.Now().UTC().Format("2006-01-02"))
	for _, k := range []string{"cpu", "kernel", "go", "kubectl", "control plane", "kforward", "before"} {
		if machine[k] == "" {
			continue
		}
		fmt.Fprintf(stdout, "%-14s %s\n", k+":", machine[k])
	}
	fmt.Fprintln(stdout)
	writeTable(stdout, o, b.fs, b.res.all())
	if o.json != "" {
		if err := writeJSON(o.json, o, machine, b.fs, b.res.all()); err != nil {
			return err
		}
	}
	if n := b.res.failed(); n > 0 {
		return fmt.Errorf("%d measurements failed (see the log above)", n)
	}
	return nil
}

func (b *bench) scenario(ctx context.Context, name string) error {
	b.logf("scenario %s", name)
	switch name {
	case "download":
		return b.rounds(ctx, "", []string{"download", "cpu.download"}, b.download)
	case "upload":
		return b.rounds(ctx, "", []string{"upload", "cpu.upload"}, b.upload)
	case "parallel":
		return b.rounds(ctx, "", []string{"parallel", "cpu.parallel"}, b.parallelDownload)
	case "connect":
		return b.rounds(ctx, "", []string{"connect.p50", "connect.p99"}, b.connect)
	case "rate":
		return b.rounds(ctx, "", []string{"rate1.rps", "rate1.p50", "rate1.p99", "rateN.rps", "rateN.p50", "rateN.p99"}, b.rate)
	case "slow":
		// A short health timeout, so that kforward's answer to a stalled
		// tunnel (drop it and redial) shows within the window.
		return b.rounds(ctx, "health: {interval: 2s, timeout: 1s}", []string{"slow.share", "slow.worst"}, b.slowReader)
	case "paced":
		return b.rounds(ctx, "", []string{"paced.mb", "paced.worst", "paced.failed"}, b.pacedReader)
	case "uplink":
		return b.uplink(ctx)
	case "recovery":
		return b.recovery(ctx)
	case "reload":
		return b.reload(ctx)
	case "scale":
		return b.scaleAndIdle(ctx)
	}
	return fmt.Errorf("unknown scenario %q", name)
}

// machine describes what the figures were measured on.
func (b *bench) machine(ctx context.Context) map[string]string {
	m := map[string]string{
		"go":            runtime.Version(),
		"control plane": fmt.Sprintf("kube-apiserver %s, etcd %s, kwok %s", cluster.KubernetesVersion, cluster.EtcdVersion, cluster.KwokVersion),
		"kubectl":       "not found",
		"cpu":           "unknown",
		"kernel":        "unknown",
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = fmt.Sprintf("%s, %d cores", strings.TrimSpace(v), runtime.NumCPU())
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = "linux " + strings.TrimSpace(string(data))
	}
	version := func(path string, args ...string) string {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, path, args...).Output()
		if err != nil {
			return "unknown (" + err.Error() + ")"
		}
		return strings.Join(strings.Fields(string(out)), " ")
	}
	if b.kubectl != "" {
		v := version(b.kubectl, "version", "--client")
		if f := strings.Fields(v); len(f) > 2 && f[0] == "Client" { // "Client Version: v1.32.4 Kustomize Version: ..."
			v = f[2]
		}
		m["kubectl"] = v + " (" + b.kubectl + ")"
	}
	m["kforward"] = version(b.kforward, "version") + " (" + b.kforward + ")"
	if b.o.baseline != "" {
		m["before"] = version(b.o.baseline, "version") + " (" + b.o.baseline + ")"
	}
	return m
}
