package forward

import (
	"context"
	"errors"
	"maps"
	"net"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v4"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
)

// aside are the pods whose dial failed for a reason of their own (the API
// server answered for them, with an error: say 500 "error dialing
// backend", their node's kubelet out of reach), each with a backoff of its
// own: until its time comes a pod is not dialled, and the next usable pod
// is, at once. A target with one pod retries it on its backoff, as before
// there was more than one.
type aside map[types.UID]*podBackoff

type podBackoff struct {
	b     *backoff.ExponentialBackOff
	until time.Time // not dialled before
}

// failed sets pod aside for its next backoff and returns how long.
func (a aside) failed(pod *corev1.Pod, newBackoff func() *backoff.ExponentialBackOff) time.Duration {
	p := a[pod.UID]
	if p == nil {
		p = &podBackoff{b: newBackoff()}
		a[pod.UID] = p
	}
	d := p.b.NextBackOff()
	p.until = time.Now().Add(d)
	return d
}

// waiting reports whether pod is set aside at now.
func (a aside) waiting(pod *corev1.Pod, now time.Time) bool {
	p := a[pod.UID]
	return p != nil && now.Before(p.until)
}

// without returns list without the pods set aside at now.
func (a aside) without(list []*corev1.Pod, now time.Time) []*corev1.Pod {
	return slices.DeleteFunc(slices.Clone(list), func(p *corev1.Pod) bool { return a.waiting(p, now) })
}

// next returns when the first pod of list set aside at now may be dialled
// again; zero if none is.
func (a aside) next(list []*corev1.Pod, now time.Time) time.Time {
	var first time.Time
	for _, p := range list {
		if a.waiting(p, now) && (first.IsZero() || a[p.UID].until.Before(first)) {
			first = a[p.UID].until
		}
	}
	return first
}

// forget drops the pods the watch no longer lists, as forgetGone does.
func (a aside) forget(list []*corev1.Pod) {
	maps.DeleteFunc(a, func(uid types.UID, _ *podBackoff) bool {
		return !slices.ContainsFunc(list, func(p *corev1.Pod) bool { return p.UID == uid })
	})
}

// podFault reports whether a failed dial says something about its pod
// rather than about the way to the API server: not a connection that
// failed, a request refused for credentials, nor an API server too busy
// or not ready (429, 503): those hold for every pod alike, and the forward
// backs off as a whole. Nor the forward's own end (ctx). A dial
// that timed out counts: a pod whose node is black-holed answers so, and
// if it is the API server that hangs, pods are tried in turn, one dial
// timeout each, with no burst.
func podFault(ctx context.Context, err error) bool {
	var opErr *net.OpError
	var denied unauthorized
	return ctx.Err() == nil && !errors.As(err, &opErr) && !errors.As(err, &denied) &&
		!apierrors.IsTooManyRequests(err) && !apierrors.IsServiceUnavailable(err)
}
