package view

import (
	"slices"
	"testing"

	"github.com/kforward/kforward/forward"
)

func TestEnv(t *testing.T) {
	tests := []struct {
		name     string
		forwards []forward.Status
		want     string
	}{
		{
			name: "names and remotes upper-cased and sanitised, one line per mapping",
			forwards: []forward.Status{{
				Name:  "api-gw.v2",
				Ports: []forward.PortStatus{{Local: 5000, Remote: "http"}, {Local: 49152, Remote: "grpc-web"}, {Local: 9100, Remote: "9100"}},
			}},
			want: "API_GW_V2_PORT=5000\n" +
				"API_GW_V2_PORT_HTTP=5000\n" +
				"API_GW_V2_PORT_GRPC_WEB=49152\n" +
				"API_GW_V2_PORT_9100=9100\n",
		},
		{
			name: "sorted by name; unbound forwards skipped",
			forwards: []forward.Status{
				{Name: "web", Ports: []forward.PortStatus{{Local: 8080, Remote: "8080"}}},
				{Name: "pending", Ports: []forward.PortStatus{{Local: 0, Remote: "5000"}}},
				{Name: "half", Ports: []forward.PortStatus{{Local: 7000, Remote: "a"}, {Local: 0, Remote: "b"}}},
				{Name: "api", Ports: []forward.PortStatus{{Local: 5000, Remote: "http"}}},
				{Name: "noports"},
			},
			want: "API_PORT=5000\nAPI_PORT_HTTP=5000\nWEB_PORT=8080\nWEB_PORT_8080=8080\n",
		},
		{
			name:     "a name starting with a digit stays a shell assignment",
			forwards: []forward.Status{{Name: "1st", Ports: []forward.PortStatus{{Local: 1234, Remote: "80"}}}},
			want:     "_1ST_PORT=1234\n_1ST_PORT_80=1234\n",
		},
		{name: "nothing bound, nothing written", forwards: nil, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Env(tt.forwards); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestEnvIsStable(t *testing.T) {
	a := []forward.Status{
		{Name: "b", Ports: []forward.PortStatus{{Local: 2, Remote: "x"}}},
		{Name: "a", Ports: []forward.PortStatus{{Local: 1, Remote: "x"}}},
	}
	b := []forward.Status{a[1], a[0]}
	if Env(a) != Env(b) {
		t.Errorf("order of input changed the output:\n%s\n%s", Env(a), Env(b))
	}
	if a[0].Name != "b" {
		t.Error("Env reordered its argument")
	}
}

// Names that sanitise alike: the first line in Env's order keeps the
// variable, whatever order the forwards come in, and the rest are named.
func TestEnvCollisions(t *testing.T) {
	forwards := []forward.Status{
		{Name: "web_1", Ports: []forward.PortStatus{{Local: 8081, Remote: "80"}, {Local: 8443, Remote: "443"}}},
		{Name: "api", Ports: []forward.PortStatus{{Local: 8080, Remote: "80"}, {Local: 9090, Remote: "80"}}},
		{Name: "web-1", Ports: []forward.PortStatus{{Local: 7070, Remote: "80"}}},
	}
	want := "API_PORT=8080\nAPI_PORT_80=8080\n" +
		"WEB_1_PORT=7070\nWEB_1_PORT_80=7070\n" +
		"WEB_1_PORT_443=8443\n"
	wantCollisions := []string{
		"API_PORT_80: api 9090:80 collides with api 8080:80",
		"WEB_1_PORT: web_1 collides with web-1",
		"WEB_1_PORT_80: web_1 8081:80 collides with web-1 7070:80",
	}
	for range 3 {
		if got := Env(forwards); got != want {
			t.Errorf("got:\n%s\nwant:\n%s", got, want)
		}
		if got := EnvCollisions(forwards); !slices.Equal(got, wantCollisions) {
			t.Errorf("collisions:\n got %q\nwant %q", got, wantCollisions)
		}
		slices.Reverse(forwards)
	}
	if got := EnvCollisions(forwards[:1]); len(got) != 0 {
		t.Errorf("collisions of one forward with distinct ports: %q", got)
	}
}

// Every state that is neither working nor broken for good is yellow, as
// the README says: checking (after a sleep) among them.
func TestStateColours(t *testing.T) {
	p := paint(true)
	yellow := p.yellow("x")
	for _, s := range []forward.State{forward.WaitingForPod, forward.Reconnecting, forward.Checking} {
		if got := p.state(s, "x"); got != yellow {
			t.Errorf("state %s painted %q, want yellow %q", s, got, yellow)
		}
	}
	if got := p.state(forward.Active, "x"); got != p.green("x") {
		t.Errorf("active painted %q", got)
	}
}
