package config

// The types in this file are the shape of forwards.yaml exactly as written.
// The decoder (decode.go) and the JSON Schema (schema.go) are both derived
// from them by reflection on their `yaml` and `doc` tags, so the file format,
// its strictness and its schema cannot drift apart.

type file struct {
	Kubeconfig string   `yaml:"kubeconfig" doc:"Path to the kubeconfig file. Default: client-go's loading rules ($KUBECONFIG, then ~/.kube/config). A relative path is relative to this file; ~ is the home directory."`
	Defaults   settings `yaml:"defaults" doc:"Settings every forward inherits unless it sets them itself."`
	Forwards   []entry  `yaml:"forwards" doc:"The forwards to keep running. At least one." required:"true"`

	Fields map[string]Pos `yaml:"-"`
}

// settings are the keys allowed both under defaults and on each forward.
type settings struct {
	Context        string    `yaml:"context" doc:"kubeconfig context. Default: the kubeconfig's current context."`
	Namespace      string    `yaml:"namespace" doc:"Namespace of the target. Default: the context's namespace, else \"default\"."`
	Address        addresses `yaml:"address" doc:"Local address or list of addresses to listen on. Default: 127.0.0.1. \"localhost\" means 127.0.0.1 and ::1, as in kubectl."`
	Transport      string    `yaml:"transport" doc:"Upstream protocol: auto (WebSocket, falling back to SPDY), websocket or spdy. Default: auto." enum:"auto,websocket,spdy"`
	Reconnect      reconnect `yaml:"reconnect" doc:"Backoff between reconnect attempts: exponential with jitter from initial to max."`
	Health         health    `yaml:"health" doc:"End-to-end health check of the upstream tunnel."`
	ConnectTimeout duration  `yaml:"connectTimeout" doc:"How long an accepted local connection may wait for a ready pod before it is closed. Default: 10s."`
	ClientBuffer   size      `yaml:"clientBuffer" doc:"How much of the pod's data may wait in memory for a local client that reads slower than the pod sends; past it the rest waits on disk (diskBuffer). All connections of a forward's tunnel together keep at most 8 times this in memory. Bytes, or with a unit (KiB, MiB, GiB), from 64KiB to 1GiB. Default: 16MiB."`
	DiskBuffer     diskSize  `yaml:"diskBuffer" doc:"How much of the pod's data may wait on disk, in temporary files removed as they are read, for all of a forward's slow clients together. Past it the tunnel's reading waits for the slowest client, as kubectl's always does, and new connections get a new tunnel. Nothing is ever dropped for a client that reads. 0 keeps nothing on disk. Bytes, or with a unit (KiB, MiB, GiB), up to 64GiB. Default: 1GiB."`
	StallTimeout   duration  `yaml:"stallTimeout" doc:"How long a local client may read nothing at all of the data waiting for it before its connection, and only that one, is closed. Default: 2m."`

	At     Pos            `yaml:"-"`
	Fields map[string]Pos `yaml:"-"`
}

type reconnect struct {
	Initial duration `yaml:"initial" doc:"First delay after a failure. Default: 250ms."`
	Max     duration `yaml:"max" doc:"Longest delay between attempts. Default: 30s."`

	Fields map[string]Pos `yaml:"-"`
}

type health struct {
	Interval duration `yaml:"interval" doc:"Time between health checks of the tunnel. Default: 10s."`
	Timeout  duration `yaml:"timeout" doc:"A health check that takes longer than this marks the tunnel dead. Default: 5s."`

	Fields map[string]Pos `yaml:"-"`
}

// entry is one item of forwards. Exactly one target key must be set.
type entry struct {
	Name        string            `yaml:"name" doc:"Unique name of the forward. Default: derived from the target, e.g. service/api."`
	Pod         string            `yaml:"pod" doc:"Target: a pod by name." group:"target"`
	Service     string            `yaml:"service" doc:"Target: a service; its port maps to the pod's targetPort as in kubectl." group:"target"`
	Deployment  string            `yaml:"deployment" doc:"Target: a ready pod of a deployment." group:"target"`
	StatefulSet string            `yaml:"statefulset" doc:"Target: a ready pod of a statefulset." group:"target"`
	DaemonSet   string            `yaml:"daemonset" doc:"Target: a ready pod of a daemonset." group:"target"`
	ReplicaSet  string            `yaml:"replicaset" doc:"Target: a ready pod of a replicaset." group:"target"`
	Selector    map[string]string `yaml:"selector" doc:"Target: a ready pod matching all of these labels." group:"target"`
	Ports       []portSpec        `yaml:"ports" doc:"Port mappings in kubectl syntax: \"5000\", \"6000:5000\", \":5000\" or \"0:5000\" (free local port); the remote side may be a port name (\"8080:http\")." required:"true"`
	Settings    settings          `yaml:",inline"`

	At     Pos            `yaml:"-"`
	Fields map[string]Pos `yaml:"-"`
}
