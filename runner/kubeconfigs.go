package runner

import (
	"context"
	"path/filepath"
	"slices"
	"time"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/internal/kube"
)

// A kubeconfig changes under a running kforward when `kind` or `minikube`
// makes its cluster again: a new CA, server port or client certificate.
// client-go reads a kubeconfig once, so the client built from it would be
// kept until kforward restarts. The runner follows each (kubeconfig,
// context) its forwards use: when what the context connects to changes,
// the forwards on it restart, and with them their client and pod watches
// are built again; forwards on other contexts are not touched. A change to
// an inline token alone restarts nothing (the client reads it again, see
// internal/kube). A kubeconfig the forwards file names is followed by its
// whole content: any change needs approval again, so its forwards stop
// and wait for it.

// kubeconfigCheck is how often the kubeconfigs in use are looked at: a
// stat of each file, and a read only when one changed.
const kubeconfigCheck = time.Second

// seenKubeconfig is what a (kubeconfig, context) said when last read.
type seenKubeconfig struct {
	sum   string   // "": could not be read
	files []string // the files it was read from
	stamp string   // their sizes and times then
}

// fingerprint reads what k connects to now; ok is false when it cannot be
// read (a file caught half-written: look again later).
func (r *Runner) fingerprint(k clientKey) (seen seenKubeconfig, ok bool) {
	if !r.trust.own(k.kubeconfig) {
		abs, err := filepath.Abs(k.kubeconfig)
		if err != nil {
			return seen, false
		}
		seen.files, seen.stamp = []string{abs}, stamps([]string{abs})
		data, err := kube.ReadKubeconfig(abs)
		if err != nil {
			return seen, false
		}
		seen.sum = sum(data)
		return seen, true
	}
	s, files, err := kube.Fingerprint(k.kubeconfig, k.context)
	if err != nil {
		seen.files = files
		seen.stamp = stamps(files)
		return seen, false
	}
	seen.sum, seen.files, seen.stamp = s, files, stamps(files)
	return seen, true
}

func stamps(files []string) string {
	var s string
	for _, f := range files {
		s += f + "=" + fileStamp(f) + ";"
	}
	return s
}

// usedKubeconfigs notes what each (kubeconfig, context) the forwards of
// cfg use says now, for those not noted yet, and forgets those no longer
// used. Called with applyMu held, before the forwards on a new one start.
func (r *Runner) usedKubeconfigs(cfg *config.Config) {
	used := map[clientKey]bool{}
	for _, f := range cfg.Forwards {
		used[clientKey{f.Kubeconfig, f.Context}] = true
	}
	for k := range r.kubeconfigs {
		if !used[k] {
			delete(r.kubeconfigs, k)
		}
	}
	for k := range used {
		if _, ok := r.kubeconfigs[k]; !ok {
			seen, _ := r.fingerprint(k)
			r.kubeconfigs[k] = seen
		}
	}
}

// followKubeconfigs restarts the forwards on each (kubeconfig, context)
// whose content changed, until ctx ends; the forwards it starts live on
// life.
func (r *Runner) followKubeconfigs(ctx, life context.Context) {
	tick := time.NewTicker(kubeconfigCheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		r.applyMu.Lock()
		for k, was := range r.kubeconfigs {
			if stamps(was.files) == was.stamp && was.sum != "" {
				continue
			}
			now, ok := r.fingerprint(k)
			if !ok {
				continue // unreadable for now: what runs keeps running
			}
			r.kubeconfigs[k] = now
			if now.sum != was.sum {
				r.restartOn(life, k)
			}
		}
		r.applyMu.Unlock()
	}
}

// restartOn restarts every forward on k. Called with applyMu held.
func (r *Runner) restartOn(life context.Context, k clientKey) {
	var stop []*running
	r.mu.Lock()
	for name, rf := range r.forwards {
		if (clientKey{rf.spec.Kubeconfig, rf.spec.Context}) == k {
			stop = append(stop, rf)
			delete(r.forwards, name)
		}
	}
	r.mu.Unlock()
	if len(stop) == 0 {
		return
	}
	names := make([]string, len(stop))
	for i, rf := range stop {
		names[i] = rf.spec.Name
	}
	slices.Sort(names)
	kubeconfig, kubeContext := k.kubeconfig, k.context
	if kubeconfig == "" {
		kubeconfig = "yours"
	}
	if kubeContext == "" {
		kubeContext = "current"
	}
	r.log.Info("kubeconfig changed; restarting the forwards on its context", "kubeconfig", kubeconfig, "context", kubeContext, "restarted", names)
	stopAll(stop, 0) // the last of them lets go of the old client
	for _, rf := range stop {
		r.startOne(life, rf.spec)
	}
}
