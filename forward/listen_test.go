package forward

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// localhost is what config makes of "address: localhost".
var localhost = []string{"127.0.0.1", "::1"}

// needIPv6 skips a test on a host that cannot listen on ::1.
func needIPv6(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	ln.Close()
}

// noIPv6 listens as a host without IPv6 loopback does: ::1 cannot be bound.
func noIPv6(network, address string) (net.Listener, error) {
	if strings.HasPrefix(address, "[::1]:") {
		return nil, &net.OpError{Op: "listen", Net: network, Err: os.NewSyscallError("bind", syscall.EADDRNOTAVAIL)}
	}
	return net.Listen(network, address)
}

// 1. On a host without IPv6 loopback, localhost is bound on 127.0.0.1
// alone, as kubectl does, with one warning naming ::1 and why.
func TestLocalhostWithoutIPv6(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"http": 80, "echo": 7000}))
	s := spec(":http", ":echo")
	s.Addresses = localhost
	log := &testLog{}
	f := New(s, k.env(pods, log))
	f.listenTCP = noIPv6
	run(t, f)

	st := waitState(t, f, Active)
	if len(st.Addresses) != 2 || !strings.HasPrefix(st.Addresses[0], "127.0.0.1:") || !strings.HasPrefix(st.Addresses[1], "127.0.0.1:") {
		t.Fatalf("bound %v, want both ports on 127.0.0.1 only", st.Addresses)
	}
	if pod := mustGet(t, st.Addresses[0]); pod != "a" {
		t.Fatalf("answered by %q, want a", pod)
	}
	var warnings []string
	for line := range strings.Lines(log.String()) {
		if strings.Contains(line, "::1") {
			warnings = append(warnings, strings.TrimSpace(line))
		}
	}
	if len(warnings) != 1 {
		t.Fatalf("%d log lines about ::1, want one warning:\n%s", len(warnings), log)
	}
	for _, want := range []string{"level=WARN", "not listening on ::1", "forward=web", "cannot assign requested address"} {
		if !strings.Contains(warnings[0], want) {
			t.Errorf("warning %q does not say %q", warnings[0], want)
		}
	}
}

// 1. A port in use on either address of localhost is still an error: the
// forward fails with "already in use", binds neither, and binds both once
// the port is free.
func TestLocalhostPortInUse(t *testing.T) {
	for _, busyOn := range localhost {
		t.Run(busyOn, func(t *testing.T) {
			needIPv6(t)
			busy, port := busyPortFreeOn(t, busyOn, otherLoopback(busyOn))
			k := newFakeKubelet(t)
			pods := newFakePods(k.addPod("a", t0, map[string]int32{"http": 80}))
			s := spec(fmt.Sprintf("%d:http", port))
			s.Addresses = localhost
			f, _ := start(t, s, k.env(pods, &testLog{}))

			st := waitState(t, f, Failed)
			want := net.JoinHostPort(busyOn, strconv.Itoa(port)) + " is already in use"
			if st.LastError != want || len(st.Addresses) != 0 {
				t.Fatalf("status %q with addresses %v, want error %q and nothing bound", st.LastError, st.Addresses, want)
			}
			busy.Close()
			st = waitState(t, f, Active)
			wantAddrs := []string{fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("[::1]:%d", port)}
			if fmt.Sprint(st.Addresses) != fmt.Sprint(wantAddrs) {
				t.Fatalf("bound %v, want %v", st.Addresses, wantAddrs)
			}
		})
	}
}

// 1. A free port chosen on 127.0.0.1 that something holds on ::1 is
// dropped for one free on both, at once, instead of failing forever.
func TestLocalhostFreePortTakenOnIPv6(t *testing.T) {
	needIPv6(t)
	busy, port := busyPortFreeOn(t, "::1", "127.0.0.1")
	defer busy.Close()
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"http": 80}))
	s := spec(":http")
	s.Addresses = localhost
	s.Reconnect.Initial, s.Reconnect.Max = time.Hour, time.Hour // a retry would not come in time
	f := New(s, k.env(pods, &testLog{}))
	first := true
	f.listenTCP = func(network, address string) (net.Listener, error) {
		if address == "127.0.0.1:0" && first { // the kernel's choice: the port busy on ::1
			first = false
			address = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		}
		return net.Listen(network, address)
	}
	run(t, f)

	st := waitState(t, f, Active)
	chosen := st.Ports[0].Local
	want := []string{fmt.Sprintf("127.0.0.1:%d", chosen), fmt.Sprintf("[::1]:%d", chosen)}
	if chosen == port || fmt.Sprint(st.Addresses) != fmt.Sprint(want) {
		t.Fatalf("chose port %d, bound %v; want a port other than %d, on both addresses", chosen, st.Addresses, port)
	}
	if pod := mustGet(t, st.Addresses[1]); pod != "a" {
		t.Fatalf("answered by %q on ::1, want a", pod)
	}
}

func otherLoopback(addr string) string {
	if addr == "::1" {
		return "127.0.0.1"
	}
	return "::1"
}

// busyPortFreeOn listens on a port of addr that is free on other.
func busyPortFreeOn(t *testing.T, addr, other string) (net.Listener, int) {
	t.Helper()
	for range 100 {
		busy, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := busy.Addr().(*net.TCPAddr).Port
		if probe, err := net.Listen("tcp", net.JoinHostPort(other, strconv.Itoa(port))); err == nil {
			probe.Close()
			t.Cleanup(func() { busy.Close() })
			return busy, port
		}
		busy.Close()
	}
	t.Fatalf("no port busy on %s and free on %s in 100 tries", addr, other)
	return nil, 0
}

// A forward that listens beyond loopback says so, once per listener,
// naming where; one on loopback says nothing of the kind.
func TestBeyondLoopbackWarns(t *testing.T) {
	k := newFakeKubelet(t)
	pods := newFakePods(k.addPod("a", t0, map[string]int32{"http": 80, "echo": 7000}))
	s := spec(":http", ":echo")
	s.Addresses = []string{"0.0.0.0"}
	log := &testLog{}
	f := New(s, k.env(pods, log))
	run(t, f)
	st := waitState(t, f, Active)

	var warnings []string
	for line := range strings.Lines(log.String()) {
		if strings.Contains(line, "reachable from other machines") {
			warnings = append(warnings, strings.TrimSpace(line))
		}
	}
	var want []string
	for _, a := range st.Addresses {
		host, port, _ := net.SplitHostPort(a)
		if net.ParseIP(host).IsUnspecified() { // 0.0.0.0 listens on [::] too
			want = append(want, "reachable from other machines on :"+port)
		}
	}
	if len(want) != 2 || len(warnings) != 2 {
		t.Fatalf("addresses %v; warnings:\n%s", st.Addresses, strings.Join(warnings, "\n"))
	}
	for i, w := range warnings {
		if !strings.Contains(w, "level=WARN") || !strings.Contains(w, "forward=web") || !strings.Contains(w, `msg="`+want[i]+`"`) {
			t.Errorf("warning %q, want a WARN of forward=web saying %q", w, want[i])
		}
	}

	quiet := &testLog{}
	loop := New(spec(":http"), k.env(pods, quiet))
	run(t, loop)
	waitState(t, loop, Active)
	if strings.Contains(quiet.String(), "reachable from other machines") {
		t.Errorf("a loopback forward warned:\n%s", quiet)
	}
}
