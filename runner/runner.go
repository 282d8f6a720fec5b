// Package runner runs the forwards of a file and keeps them in step with
// it: it starts them all, watches the file, and applies every valid edit as
// a diff by forward name. Forwards share one API client per (kubeconfig,
// context) and one pod watch per namespace.
package runner

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/forward"
)

// Forward is a forward as the runner drives it; *forward.Forward is one.
type Forward interface {
	Run(ctx context.Context) error
	Status() forward.Status
	StopAccepting()
}

// Options configure a Runner.
type Options struct {
	File   string          // the forwards file; its directory is watched
	Out    io.Writer       // one line per forward on start and after each reload
	Log    *slog.Logger    // nil: slog.Default()
	Reload <-chan struct{} // each receive reloads the file (SIGHUP)
	Grace  time.Duration   // on shutdown, how long open connections may finish
}

// Runner runs the forwards of one file. Create it with New, run it with Run.
type Runner struct {
	opts Options
	log  *slog.Logger
	// start resolves a forward's cluster and builds it, waiting on ctx, the
	// forward's life; life is the runner's (shared clients and watches
	// live at most that long). The forward lets go of them with the
	// returned func once it has stopped.
	start    func(ctx, life context.Context, spec config.Forward) (Forward, func(), error)
	clusters *clusters
	trust    *trust
	debounce time.Duration // how long the file must be quiet before it is read

	requests chan chan<- Reload // Reload's requests to the file watch
	loaded   chan struct{}      // closed once the file is loaded and its forwards started
	stopped  chan struct{}      // closed when Run stops reading the file: Reload fails from then on
	stopOnce sync.Once

	applyMu     sync.Mutex                   // one change to the forwards at a time: a reload, a kubeconfig's change
	kubeconfigs map[clientKey]seenKubeconfig // in use, as last read; guarded by applyMu

	mu       sync.Mutex
	forwards map[string]*running
	said     map[string]bool // start errors logged since the last reload
	asked    map[string]bool // approvals asked for in the log: each once, reloads or not
	started  time.Time
	last     Reload    // the last reload, or the start
	lastOK   time.Time // when the file was last applied
}

// running is one started forward.
type running struct {
	spec   config.Forward
	cancel context.CancelFunc
	done   chan struct{} // closed when its goroutine has returned

	mu    sync.Mutex
	fwd   Forward // nil until its cluster is resolved
	err   error   // why it is not running
	errAt time.Time
}

func (rf *running) state() (Forward, error) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	return rf.fwd, rf.err
}

// startErr is why the forward is not running, if it is not.
func (rf *running) startErr() error {
	_, err := rf.state()
	return err
}

// New returns a runner for opts.File.
func New(opts Options) *Runner {
	r := &Runner{opts: opts, log: opts.Log, debounce: debounce, forwards: map[string]*running{}, kubeconfigs: map[clientKey]seenKubeconfig{}, requests: make(chan chan<- Reload), loaded: make(chan struct{}), stopped: make(chan struct{})}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.opts.Out == nil {
		r.opts.Out = io.Discard
	}
	r.trust = newTrust(opts.File)
	r.clusters = newClusters(r.trust)
	r.start = func(ctx, life context.Context, spec config.Forward) (Forward, func(), error) {
		env, release, err := r.clusters.env(ctx, life, spec)
		if err != nil {
			return nil, nil, err
		}
		env.Log = r.log
		return forward.New(spec, env), release, nil
	}
	return r
}

// Run loads the file and starts every forward in it, then applies each
// change to the file until ctx ends; then it stops accepting connections,
// gives open ones the grace period, and stops every forward. An invalid
// file at start is an error (see config.Errors); later it changes nothing.
func (r *Runner) Run(ctx context.Context) error {
	defer r.stopOnce.Do(func() { close(r.stopped) })
	f, err := watchFile(r.opts.File, r.debounce)
	if err != nil {
		return err
	}
	defer f.close()
	cfg, err := f.load()
	if err != nil {
		return err
	}
	// The forwards outlive ctx by the grace period: shutdown ends them.
	// Then life ends what is still shared (a build that never finished),
	// and Run returns once that has stopped too.
	life, end := context.WithCancel(context.WithoutCancel(ctx))
	defer r.clusters.wait()
	defer end()
	c := r.apply(life, cfg)
	r.record(Reload{Trigger: TriggerStart, Successful: true, Changes: c})
	r.printSummary(ctx)
	close(r.loaded)
	follow, stopFollowing := context.WithCancel(ctx)
	var following sync.WaitGroup
	following.Go(func() { r.followKubeconfigs(follow, life) })
	err = f.run(ctx, r.opts.Reload, r.requests, r.log, func(cfg *config.Config, err error, trigger string) Reload {
		res := Reload{Trigger: trigger}
		switch {
		case errors.Is(err, errGone):
			r.log.Warn(errGone.Error(), "file", r.opts.File)
		case err != nil:
			for _, e := range errorLines(err) {
				r.log.Error("invalid forwards file; nothing changed", "err", e)
			}
		}
		if err != nil {
			res.Errors = errorLines(err)
			return r.record(res)
		}
		res.Successful, res.Changes = true, r.apply(life, cfg)
		r.log.Info("reloaded", "file", r.opts.File, "added", names(res.AddedNames), "removed", names(res.RemovedNames),
			"restarted", names(res.RestartedNames), "unchanged", res.Unchanged)
		res = r.record(res)
		r.printSummary(ctx)
		return res
	})
	r.stopOnce.Do(func() { close(r.stopped) }) // no more reloads during the grace period
	stopFollowing()
	following.Wait() // it starts forwards: not while they are shut down
	r.shutdown()
	return err
}

// Loaded returns a channel closed once Run has loaded the file and started
// its forwards; never, if the file could not be loaded.
func (r *Runner) Loaded() <-chan struct{} { return r.loaded }

// Reload reads the file again now, even if it did not change, and returns
// what came of it. It fails only when the runner is not running.
func (r *Runner) Reload(ctx context.Context) (Reload, error) {
	reply := make(chan Reload, 1)
	select {
	case r.requests <- reply:
	case <-r.stopped:
		return Reload{}, errStopped
	case <-ctx.Done():
		return Reload{}, ctx.Err()
	}
	select {
	case res := <-reply:
		return res, nil
	case <-r.stopped: // Run stopped before applying what it read
		select {
		case res := <-reply:
			return res, nil
		default:
			return Reload{}, errStopped
		}
	case <-ctx.Done():
		return Reload{}, ctx.Err()
	}
}

// errorLines is err as lines: one per problem for an invalid file
// (file:line:col: message), else the one message.
func errorLines(err error) []string {
	errs := config.Errors(err)
	if len(errs) == 0 {
		return []string{err.Error()}
	}
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = e.Error()
	}
	return lines
}

// Changes counts what a reload did to the forwards, and names them.
type Changes struct {
	Added          int      `json:"added"`
	Removed        int      `json:"removed"`
	Restarted      int      `json:"restarted"`
	Unchanged      int      `json:"unchanged"`
	AddedNames     []string `json:"addedNames,omitempty"`
	RemovedNames   []string `json:"removedNames,omitempty"`
	RestartedNames []string `json:"restartedNames,omitempty"`
}

// names is a list of forward names for the log: "none", or "a, b".
func names(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

// errStopped is Reload's error once Run is shutting down or has returned.
var errStopped = errors.New("kforward is stopping")

// apply makes the running forwards those of cfg, by name: removed ones
// stop, changed ones (and ones that could not start) restart, new ones
// start, and unchanged ones are not touched.
func (r *Runner) apply(ctx context.Context, cfg *config.Config) Changes {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	var c Changes
	var stop []*running
	var start []config.Forward
	inFile := map[string]bool{}
	r.mu.Lock()
	r.said = nil // a new file: say every cause again
	for _, s := range cfg.Forwards {
		inFile[s.Name] = true
		rf, ok := r.forwards[s.Name]
		switch {
		case !ok:
			c.Added++
			c.AddedNames = append(c.AddedNames, s.Name)
		case rf.spec.Equal(s) && rf.startErr() == nil:
			c.Unchanged++
			continue
		default:
			c.Restarted++
			c.RestartedNames = append(c.RestartedNames, s.Name)
			stop = append(stop, rf)
			delete(r.forwards, s.Name)
		}
		start = append(start, s)
	}
	for name, rf := range r.forwards {
		if !inFile[name] {
			c.Removed++
			c.RemovedNames = append(c.RemovedNames, name)
			stop = append(stop, rf)
			delete(r.forwards, name)
		}
	}
	slices.Sort(c.RemovedNames)
	r.mu.Unlock()

	stopAll(stop, 0)       // first: a changed forward may keep its local port
	r.usedKubeconfigs(cfg) // before their clients are built
	for _, s := range start {
		r.startOne(ctx, s)
	}
	return c
}

// startOne starts one forward in its own goroutine. One that cannot start
// (unknown context, unreachable cluster, no access, missing namespace) is
// reported and retried with backoff, so it starts once the cause is gone
// (the VPN is up, the kubeconfig fixed); it never holds up the others.
func (r *Runner) startOne(ctx context.Context, spec config.Forward) {
	fctx, cancel := context.WithCancel(ctx)
	rf := &running{spec: spec, cancel: cancel, done: make(chan struct{})}
	r.mu.Lock()
	r.forwards[spec.Name] = rf
	r.mu.Unlock()
	go func() {
		defer close(rf.done)
		f, release := r.startRetrying(fctx, ctx, rf)
		if f == nil {
			return
		}
		if release != nil {
			defer release()
		}
		if err := f.Run(fctx); err != nil && fctx.Err() == nil {
			rf.mu.Lock()
			rf.err, rf.errAt = err, time.Now()
			rf.mu.Unlock()
			r.log.Error("forward stopped", "forward", spec.Name, "err", err)
		}
	}()
}

// startRetrying starts rf's forward, retrying with the forward's own
// backoff; nil when ctx ends first. Once the forward has stopped, the
// returned func (if not nil) lets go of what it shares with others.
func (r *Runner) startRetrying(ctx, life context.Context, rf *running) (Forward, func()) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = rf.spec.Reconnect.Initial, rf.spec.Reconnect.Max, 0
	b.Reset()
	said := ""
	for {
		var f Forward
		var release func()
		err := r.trust.check(rf.spec)
		if err == nil {
			f, release, err = r.start(ctx, life, rf.spec)
		}
		rf.mu.Lock()
		rf.fwd, rf.err, rf.errAt = f, err, time.Now()
		rf.mu.Unlock()
		if err == nil {
			if said != "" {
				r.log.Info("forward started", "forward", rf.spec.Name)
			}
			return f, release
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		wait := b.NextBackOff()
		if errors.Is(err, errNeedsApproval) {
			// Said once in the whole run, reloads or not; checked again
			// often, so that it starts soon after kforward allow.
			wait = approvalCheck
			if r.firstToAsk(err.Error()) {
				r.log.Error("forward not started: it needs your approval", "forward", rf.spec.Name, "err", err)
			}
			said = err.Error()
		}
		if err.Error() != said { // say it once, not at every retry
			said = err.Error()
			if r.firstToSay(said) {
				r.log.Error("cannot start forward; retrying", "forward", rf.spec.Name, "err", err)
			} else { // the same cause (no kubeconfig, a cluster down) for many forwards: said once
				r.log.Debug("cannot start forward; retrying", "forward", rf.spec.Name, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(wait):
		}
	}
}

// approvalCheck is how often a forward that waits for approval checks
// again: a stat of the approvals file and of the kubeconfig.
const approvalCheck = time.Second

// firstToAsk reports whether msg, an approval asked for, has not been
// logged yet in this run.
func (r *Runner) firstToAsk(msg string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.asked[msg] {
		return false
	}
	if r.asked == nil {
		r.asked = map[string]bool{}
	}
	r.asked[msg] = true
	return true
}

// firstToSay reports whether no forward has logged msg as its start error
// since the file was last applied.
func (r *Runner) firstToSay(msg string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.said[msg] {
		return false
	}
	if r.said == nil {
		r.said = map[string]bool{}
	}
	r.said[msg] = true
	return true
}

// shutdown stops every forward, giving open connections the grace period.
func (r *Runner) shutdown() {
	r.mu.Lock()
	var all []*running
	for _, rf := range r.forwards {
		all = append(all, rf)
	}
	r.mu.Unlock() // kept: their last statuses (stopped) are the final picture
	if open := activeConnections(all); open > 0 && r.opts.Grace > 0 {
		r.log.Info("stopping: waiting for open connections", "connections", open, "grace", r.opts.Grace.String())
	}
	stopAll(all, r.opts.Grace)
}

// stopAll stops accepting on every forward, waits up to grace for their open
// connections to end, then stops them and waits until they have stopped.
func stopAll(all []*running, grace time.Duration) {
	for _, rf := range all {
		if f, _ := rf.state(); f != nil {
			f.StopAccepting()
		}
	}
	for deadline := time.Now().Add(grace); activeConnections(all) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	for _, rf := range all {
		rf.cancel()
	}
	for _, rf := range all {
		<-rf.done
	}
}

func activeConnections(all []*running) int64 {
	var n int64
	for _, rf := range all {
		if f, _ := rf.state(); f != nil {
			n += f.Status().Active
		}
	}
	return n
}

// isDone reports whether the forward's goroutine has returned.
func (rf *running) isDone() bool {
	select {
	case <-rf.done:
		return true
	default:
		return false
	}
}
