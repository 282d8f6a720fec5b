package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// quick is a generous bound on refusing or accepting a hostile file: the
// point is that the work is bounded, not how fast it is (the race detector
// and a busy machine slow it down many times).
const quick = 3 * time.Second

// selectorBomb is the file from issue 12: one selector of n labels behind an
// anchor, referenced by n forwards. Valid, 180 KB for n = 3000, and it
// stood for 18 million nodes.
func selectorBomb(n int) string {
	var b strings.Builder
	b.WriteString("forwards:\n  - name: f0\n    ports: [1000]\n    selector: &labels\n")
	for i := range n {
		fmt.Fprintf(&b, "      l%d: v\n", i)
	}
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "  - {name: f%d, ports: [%d], selector: *labels}\n", i, 1000+i)
	}
	return b.String()
}

// nestedBomb is the billion laughs: each level repeats the one before ten
// times, so a few hundred bytes stand for 10^levels nodes. The levels sit
// under a key the decoder does not know, which must not matter: aliases are
// counted before decoding, wherever they are.
func nestedBomb(levels int) string {
	var b strings.Builder
	b.WriteString("defaults:\n  address: &l0 [127.0.0.1, 127.0.0.1, 127.0.0.1, 127.0.0.1, 127.0.0.1, 127.0.0.1, 127.0.0.1, 127.0.0.1, 127.0.0.1, 127.0.0.1]\n")
	b.WriteString("levels:\n")
	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "  - &l%d [", i)
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*l%d", i-1)
		}
		b.WriteString("]\n")
	}
	b.WriteString("forwards: [{pod: a, ports: [1]}]\n")
	return b.String()
}

// TestAliasLimit checks that a file whose aliases expand past the limit is
// refused at the alias that went over, quickly and before decoding.
func TestAliasLimit(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"selector", selectorBomb(3000),
			"f.yaml:3088:42: alias *labels repeats 6001 nodes, which takes what aliases repeat past 500000; aliases may repeat at most 500000 keys, values and list items in all"},
		{"nested", nestedBomb(40),
			"f.yaml:8:25: alias *l4 repeats 111111 nodes, which takes what aliases repeat past 500000; aliases may repeat at most 500000 keys, values and list items in all"},
		{"cycle", "defaults: {address: &a [127.0.0.1, *a]}\nforwards: [{pod: a, ports: [1]}]\n",
			"f.yaml:1:36: alias *a is inside the node it refers to, which would repeat without end; an alias may only refer to a node that does not contain it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := ParseFile("f.yaml", []byte(tt.data))
			elapsed := time.Since(start)
			if err == nil {
				t.Fatalf("%s (%d bytes) accepted after %v", tt.name, len(tt.data), elapsed)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n got: %v\nwant: %s", err, tt.want)
			}
			if elapsed > quick {
				t.Errorf("refused after %v, want well under %v", elapsed, quick)
			}
		})
	}
}

// realFile is a big but ordinary file: n forwards that share their
// settings through anchors, as people write them.
func realFile(n int) string {
	var b strings.Builder
	b.WriteString(`defaults:
  namespace: shop
  reconnect: &backoff {initial: 500ms, max: 1m}
forwards:
  - name: f0
    selector: &labels {app: shop, tier: backend, team: payments, env: dev}
    address: &addrs [localhost, 10.0.0.1]
    health: &health {interval: 5s, timeout: 2s}
    ports: [10000]
`)
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "  - {name: f%d, selector: *labels, address: *addrs, health: *health, reconnect: *backoff, ports: [%d, \":http\"]}\n", i, 10000+i)
	}
	return b.String()
}

func TestAliasesInRealFiles(t *testing.T) {
	data := realFile(1000)
	start := time.Now()
	cfg, err := ParseFile("f.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > quick {
		t.Errorf("accepted after %v, want well under %v", elapsed, quick)
	}
	if len(cfg.Forwards) != 1000 {
		t.Fatalf("got %d forwards, want 1000", len(cfg.Forwards))
	}
	last := cfg.Forwards[999]
	if got := last.Target.String(); got != "selector/app=shop,env=dev,team=payments,tier=backend" {
		t.Errorf("last forward's target = %s, want the anchored selector", got)
	}
	if got := fmt.Sprint(last.Addresses, last.Health, last.Reconnect); got != "[127.0.0.1 ::1 10.0.0.1] {5s 2s} {500ms 1m0s}" {
		t.Errorf("last forward's settings = %s, want the anchored ones", got)
	}
}

// TestFileSizeLimit checks that a file over MaxFileSize is refused, saying
// its size and the limit, whether read by Load or passed to ParseFile, and
// that one of exactly MaxFileSize is not.
func TestFileSizeLimit(t *testing.T) {
	valid := "forwards: [{pod: a, ports: [1]}]\n"
	padded := func(size int) []byte {
		pad := "#" + strings.Repeat("x", 99) + "\n"
		b := []byte(valid + strings.Repeat(pad, (size-len(valid))/len(pad)))
		return append(b, strings.Repeat("\n", size-len(b))...)
	}

	if _, err := ParseFile("f.yaml", padded(MaxFileSize)); err != nil {
		t.Errorf("a file of exactly %d bytes: %v", MaxFileSize, err)
	}
	err := fmt.Sprint(ParseFile("f.yaml", padded(MaxFileSize+1)))
	if want := "f.yaml:1:1: the file is 1048577 bytes; a forwards file may be at most 1 MiB (1048576 bytes)"; !strings.HasSuffix(err, want) {
		t.Errorf("ParseFile of %d bytes: %s\nwant: %s", MaxFileSize+1, err, want)
	}

	path := filepath.Join(t.TempDir(), "forwards.yaml")
	if err := os.WriteFile(path, padded(3*MaxFileSize), 0o600); err != nil {
		t.Fatal(err)
	}
	_, lerr := Load(path)
	if want := path + ":1:1: the file is 3145728 bytes; a forwards file may be at most 1 MiB (1048576 bytes)"; fmt.Sprint(lerr) != want {
		t.Errorf("Load of %d bytes: %v\nwant: %s", 3*MaxFileSize, lerr, want)
	}
}

// listenerFile has a defaults address list of a addresses, which each of n
// forwards inherits: a small file that asks for a*n listeners.
func listenerFile(a, n int) string {
	var b strings.Builder
	b.WriteString("defaults:\n  address: [")
	for i := range a {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "127.0.%d.%d", i/250, i%250+1)
	}
	b.WriteString("]\nforwards:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {pod: p%d, ports: [%d]}\n", i, i+1)
	}
	return b.String()
}

// TestListenerLimit checks that defaults cannot multiply listeners without
// bound: a 29 KB file asking for 100,000 is checked quickly, and one more
// forward is refused at that forward.
func TestListenerLimit(t *testing.T) {
	start := time.Now()
	cfg, err := Parse([]byte(listenerFile(100, 1000)))
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > quick {
		t.Errorf("%d listeners checked in %v, want well under %v", len(cfg.Forwards)*100, elapsed, quick)
	}

	_, err = Parse([]byte(listenerFile(100, 1001)))
	if want := `1004:25: forward "pod/p1000" takes the file past 100000 listeners (one for each port on each address); a file may have at most 100000`; fmt.Sprint(err) != want {
		t.Errorf("error:\n got: %v\nwant: %s", err, want)
	}
}

// TestBindConflicts checks which earlier listener a new one collides with:
// the same address, or a wildcard that covers it; of several, the first.
func TestBindConflicts(t *testing.T) {
	tests := []struct {
		taken []string // in order, all on port 80
		addr  string
		want  string // the address of the bind reported, "" for none
	}{
		{[]string{"127.0.0.1"}, "127.0.0.1", "127.0.0.1"},
		{[]string{"127.0.0.1"}, "127.0.0.2", ""},
		{[]string{"::1"}, "::1", "::1"},
		{[]string{"::1"}, "::2", ""},
		{[]string{"127.0.0.1"}, "::1", ""},
		{[]string{"::1"}, "0.0.0.0", ""},
		{[]string{"0.0.0.0"}, "127.0.0.1", "0.0.0.0"},
		{[]string{"127.0.0.1"}, "0.0.0.0", "127.0.0.1"},
		{[]string{"0.0.0.0"}, "0.0.0.0", "0.0.0.0"},
		{[]string{"::"}, "127.0.0.1", "::"},
		{[]string{"::"}, "0.0.0.0", "::"},
		{[]string{"::"}, "::1", "::"},
		{[]string{"127.0.0.1"}, "::", "127.0.0.1"},
		{[]string{"::1"}, "::", "::1"},
		{[]string{"::1", "127.0.0.1"}, "::", "::1"},
		{[]string{"::1", "127.0.0.1"}, "0.0.0.0", "127.0.0.1"},
		{[]string{"127.0.0.2", "127.0.0.1"}, "0.0.0.0", "127.0.0.2"},
		{[]string{"0.0.0.0", "::1"}, "::", "0.0.0.0"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.taken, ",")+"+"+tt.addr, func(t *testing.T) {
			var bs binds
			for i, a := range tt.taken {
				if o, ok := bs.add(bind{addr: a, port: 80, forward: a}); ok {
					t.Fatalf("taking %s: collides with %s", a, o.forward)
				}
				if _, ok := bs.add(bind{addr: a, port: 81 + i}); ok {
					t.Fatalf("taking %s on another port: collides", a)
				}
			}
			o, ok := bs.add(bind{addr: tt.addr, port: 80})
			if got := map[bool]string{true: o.forward}[ok]; got != tt.want {
				t.Errorf("%s after %v collides with %q, want %q", tt.addr, tt.taken, got, tt.want)
			}
		})
	}
}
