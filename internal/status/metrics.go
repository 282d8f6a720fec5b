package status

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kforward/kforward/forward"
)

// The metrics, named as Prometheus's conventions ask (units in the name,
// _total for counters); the reload ones as Prometheus names its own.
var (
	upDesc = prometheus.NewDesc("kforward_forward_up",
		"1 when the forward is active: its listeners are bound and its tunnel to a pod is up.", []string{"forward"}, nil)
	infoDesc = prometheus.NewDesc("kforward_forward_info",
		"Always 1; labels say what the forward targets.", []string{"forward", "target", "namespace", "context"}, nil)
	activeDesc = prometheus.NewDesc("kforward_connections_active",
		"Open local connections.", []string{"forward"}, nil)
	totalDesc = prometheus.NewDesc("kforward_connections_total",
		"Local connections accepted.", []string{"forward"}, nil)
	connErrDesc = prometheus.NewDesc("kforward_connection_errors_total",
		"Local connections that ended in error, by reason.", []string{"forward", "reason"}, nil)
	bytesDesc = prometheus.NewDesc("kforward_bytes_total",
		`Bytes carried: direction="in" from the pod to local clients, "out" from local clients to the pod.`, []string{"forward", "direction"}, nil)
	onDiskDesc = prometheus.NewDesc("kforward_disk_buffered_bytes",
		"The pod's data waiting on disk for local clients that read slower than it comes (diskBuffer).", []string{"forward"}, nil)
	reconnectsDesc = prometheus.NewDesc("kforward_reconnects_total",
		"Times the tunnel to a pod failed and was dialled again.", []string{"forward"}, nil)
	dialDesc = prometheus.NewDesc("kforward_upstream_dial_seconds",
		"Time to upgrade a connection to a pod through the API server, failed attempts included.", []string{"forward"}, nil)
	healthDesc = prometheus.NewDesc("kforward_health_check_seconds",
		"Round trip of health checks (pings through the API server to the kubelet) that passed.", []string{"forward"}, nil)
	reloadOKDesc = prometheus.NewDesc("kforward_config_last_reload_successful",
		"Whether the last reading of the forwards file was applied (1) or refused (0).", nil, nil)
	reloadTimeDesc = prometheus.NewDesc("kforward_config_last_reload_success_timestamp_seconds",
		"When the forwards file was last applied, in seconds since the epoch.", nil, nil)
)

// connErrReasons are every reason label, so each series exists from the start.
var connErrReasons = []string{forward.ErrNoPod, forward.ErrRemotePort, forward.ErrClientStalled, forward.ErrStream}

// collector turns a snapshot into metrics at each scrape; a forward removed
// from the file takes its series with it.
type collector struct{ src Source }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{upDesc, infoDesc, activeDesc, totalDesc, connErrDesc, bytesDesc, onDiskDesc,
		reconnectsDesc, dialDesc, healthDesc, reloadOKDesc, reloadTimeDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	snap := c.src.Snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	for _, s := range snap.Forwards {
		up := 0.0
		if s.State == forward.Active {
			up = 1
		}
		gauge(upDesc, up, s.Name)
		gauge(infoDesc, 1, s.Name, s.Target, s.Namespace, s.Context)
		gauge(activeDesc, float64(s.Active), s.Name)
		counter(totalDesc, float64(s.Total), s.Name)
		for _, reason := range connErrReasons {
			counter(connErrDesc, float64(s.ConnErrors[reason]), s.Name, reason)
		}
		counter(bytesDesc, float64(s.BytesIn), s.Name, "in")
		counter(bytesDesc, float64(s.BytesOut), s.Name, "out")
		gauge(onDiskDesc, float64(s.OnDisk), s.Name)
		counter(reconnectsDesc, float64(s.Reconnects), s.Name)
		ch <- histogram(dialDesc, s.DialSeconds, s.Name)
		ch <- histogram(healthDesc, s.HealthSeconds, s.Name)
	}
	ok := 0.0
	if snap.LastReload.Successful {
		ok = 1
	}
	gauge(reloadOKDesc, ok)
	if !snap.LastApply.IsZero() {
		gauge(reloadTimeDesc, float64(snap.LastApply.UnixNano())/1e9)
	}
}

func histogram(d *prometheus.Desc, h forward.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		buckets[b] = h.Counts[i]
	}
	if len(h.Bounds) == 0 { // a forward that never ran: an empty histogram
		buckets = nil
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum, buckets, slices.Clone(labels)...)
}
