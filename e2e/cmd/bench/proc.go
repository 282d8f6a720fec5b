package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a forwarding process (kforward or kubectl) started by the
// harness. Its CPU time and memory are read from /proc while it runs, the
// same way for every forwarder.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *output
	done chan struct{} // closed once the process has exited and been reaped
}

// started records the PID of every process the harness starts, so a test
// can check that none outlives the run.
var started struct {
	sync.Mutex
	pids []int
}

// startProc starts path with args; its output is kept (the tail, for error
// messages) and watched for marker.
func startProc(name, path string, args, env []string, marker string) (*proc, error) {
	out := &output{marker: marker, marked: make(chan struct{})}
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group keeps a Ctrl-C in the terminal from reaching
	// the forwarder before the harness has read its figures and stops it;
	// Pdeathsig kills it if the harness itself dies without cleaning up.
	// (Pdeathsig follows the OS thread that started the child, and Go only
	// ends a thread when a goroutine locked to it exits, which the harness
	// never does.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	started.Lock()
	started.pids = append(started.pids, cmd.Process.Pid)
	started.Unlock()
	p := &proc{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { // exits when the process does; stop makes sure it does
		cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to end (SIGTERM), kills it if it has not within
// 5 s, and returns once it is reaped. Safe to call more than once.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(5 * time.Second):
	}
	p.cmd.Process.Kill()
	<-p.done
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times; it is 100 on
// every Linux architecture Go supports (sysconf would need cgo).
const clockTicks = 100

// cpu returns the CPU time (user + system) the process has used so far.
func (p *proc) cpu() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
	if err != nil {
		return 0, fmt.Errorf("cpu of %s: %w", p.name, err)
	}
	// The command name, in parentheses, may hold spaces: count from after it.
	i := bytes.LastIndexByte(data, ')')
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("cpu of %s: short /proc stat", p.name)
	}
	var ticks int64
	for _, f := range fields[11:13] { // utime, stime
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu of %s: %w", p.name, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// rss returns the process's resident memory in bytes (VmRSS).
func (p *proc) rss() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0, fmt.Errorf("rss of %s: %w", p.name, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("rss of %s: %w", p.name, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("rss of %s: no VmRSS", p.name)
}

// failure describes a process that should be running but is not, or did
// not do what was expected, with the tail of its output.
func (p *proc) failure(what string) error {
	state := "running"
	if p.exited() {
		state = p.cmd.ProcessState.String()
	}
	return fmt.Errorf("%s %s (%s); output:\n%s", p.name, what, state, p.out.tail())
}

// output keeps the tail of a process's output and closes marked the first
// time marker appears in it.
type output struct {
	marker string
	marked chan struct{}

	mu   sync.Mutex
	buf  []byte
	seen bool
}

const outputTail = 16 << 10

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = append(o.buf, p...)
	if !o.seen && o.marker != "" && bytes.Contains(o.buf, []byte(o.marker)) {
		o.seen = true
		close(o.marked)
	}
	if len(o.buf) > 2*outputTail {
		o.buf = append(o.buf[:0], o.buf[len(o.buf)-outputTail:]...)
	}
	return len(p), nil
}

func (o *output) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	const max = 3000
	if len(o.buf) > max {
		return string(o.buf[len(o.buf)-max:])
	}
	return string(o.buf)
}
