package view

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/kforward/kforward/forward"
	"github.com/kforward/kforward/internal/testutil"
	"github.com/kforward/kforward/runner"
)

// newTestModel is a live view's model at 120x40 with the first snapshot
// shown, taken at now.
func newTestModel(t *testing.T, interrupt func()) *model {
	t.Helper()
	m := newModel(func() (runner.Snapshot, error) { return fixture(), nil }, interrupt, func() time.Time { return now })
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	if _, cmd := m.Update(snapMsg{snap: fixture(), at: now}); cmd == nil {
		t.Fatal("after a snapshot, no command to poll for the next one")
	}
	return m
}

func content(m *model) string { return ansi.Strip(m.View().Content) }

func TestLiveKeysCallOnInterruptAndDoNotQuit(t *testing.T) {
	for _, key := range []tea.KeyPressMsg{
		{Code: 'c', Mod: tea.ModCtrl},
		{Code: 'q', Text: "q"},
	} {
		t.Run(key.String(), func(t *testing.T) {
			calls := 0
			m := newTestModel(t, func() { calls++ })
			for range 2 {
				_, cmd := m.Update(key)
				if cmd != nil {
					if _, quit := cmd().(tea.QuitMsg); quit {
						t.Fatalf("%s quit the view", key)
					}
				}
			}
			if calls != 2 {
				t.Errorf("%s twice: onInterrupt called %d times, want 2", key, calls)
			}
			if !strings.Contains(content(m), "api") {
				t.Errorf("the table is gone after %s:\n%s", key, content(m))
			}
		})
	}
}

func TestLiveRedrawsOnChangeAtOnceAndOtherwiseEverySecond(t *testing.T) {
	m := newTestModel(t, nil)
	s := fixture()
	send := func(after time.Duration) {
		t.Helper()
		c := s
		c.Forwards = slices.Clone(s.Forwards) // each snapshot is a copy, as the runner's are
		if _, cmd := m.Update(snapMsg{snap: c, at: now.Add(after)}); cmd == nil {
			t.Fatal("polling stopped")
		}
	}

	s.Forwards[0].BytesIn += 5 * miB // counters only
	send(250 * time.Millisecond)
	if got := content(m); !strings.Contains(got, "12.3 MiB") {
		t.Fatalf("counters alone redrew the table within the second:\n%s", got)
	}

	s.Forwards[0].State, s.Forwards[0].RetryAt = forward.Reconnecting, now.Add(5*time.Second)
	send(500 * time.Millisecond)
	if got := content(m); !strings.Contains(got, "reconnecting in 5s") || !strings.Contains(got, "17.3 MiB") {
		t.Fatalf("a state change did not show at once:\n%s", got)
	}

	s.Forwards[0].BytesIn += 5 * miB
	send(1250 * time.Millisecond)
	if got := content(m); !strings.Contains(got, "17.3 MiB") {
		t.Fatalf("redrawn again 750ms after the last:\n%s", got)
	}
	send(1500 * time.Millisecond)
	if got := content(m); !strings.Contains(got, "22.3 MiB") || !strings.Contains(got, "reconnecting in 4s") {
		t.Fatalf("not redrawn a second after the last (counters, countdown):\n%s", got)
	}
}

func TestLiveChanged(t *testing.T) {
	base := fixture()
	tests := []struct {
		name   string
		change func(*runner.Snapshot)
		want   bool
	}{
		{"nothing", func(*runner.Snapshot) {}, false},
		{"counters", func(s *runner.Snapshot) { s.Forwards[0].BytesOut++; s.Forwards[0].Total++ }, false},
		{"state", func(s *runner.Snapshot) { s.Forwards[1].State = forward.Active }, true},
		{"pod", func(s *runner.Snapshot) { s.Forwards[0].Pod = "api-7d9f8b6c5-zzzzz" }, true},
		{"addresses", func(s *runner.Snapshot) { s.Forwards[4].Addresses = []string{"127.0.0.1:8080"} }, true},
		{"last error", func(s *runner.Snapshot) { s.Forwards[0].LastError = "EOF" }, true},
		{"last error again", func(s *runner.Snapshot) { s.Forwards[0].LastErrorAt = now }, true},
		{"reload", func(s *runner.Snapshot) { s.LastReload.At = now }, true},
		{"forward added", func(s *runner.Snapshot) { s.Forwards = append(s.Forwards, forward.Status{Name: "zz"}) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := fixture()
			tt.change(&next)
			if got := changed(base, nil, snapMsg{snap: next}); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLiveFetchErrorShowsOnHeaderAndKeepsTable(t *testing.T) {
	m := newTestModel(t, nil)
	m.Update(snapMsg{err: errors.New("no kforward running at 127.0.0.1:7355"), at: now.Add(300 * time.Millisecond)})
	got := content(m)
	header, _, _ := strings.Cut(got, "\n")
	if !strings.HasPrefix(header, "no kforward running at 127.0.0.1:7355") || !strings.Contains(got, "api-7d9f8b6c5-x2kqz") {
		t.Fatalf("want the error on the header line above the last table, got:\n%s", got)
	}
	m.Update(snapMsg{snap: fixture(), at: now.Add(600 * time.Millisecond)})
	if got := content(m); strings.Contains(got, "no kforward") {
		t.Fatalf("the error stayed after a snapshot came:\n%s", got)
	}
}

func TestLiveFinalSnapshotIsDrawnThenQuits(t *testing.T) {
	m := newTestModel(t, nil)
	last := fixture()
	last.Forwards = last.Forwards[:1]
	last.Forwards[0].Name = "last-one"
	_, cmd := m.Update(finalMsg{snapMsg{snap: last, at: now.Add(100 * time.Millisecond)}})
	if cmd == nil {
		t.Fatal("no quit after the final snapshot")
	}
	if _, ok := cmd().(tea.QuitMsg); !ok {
		t.Fatal("the final snapshot's command is not quit")
	}
	if got := content(m); !strings.Contains(got, "last-one") {
		t.Fatalf("the final snapshot is not drawn:\n%s", got)
	}
}

func TestLiveViewFitsTerminal(t *testing.T) {
	m := newTestModel(t, nil)
	m.Update(tea.WindowSizeMsg{Width: 70, Height: 6})
	lines := strings.Split(strings.TrimSuffix(content(m), "\n"), "\n")
	if len(lines) > 5 {
		t.Errorf("%d lines in a 6-line terminal (one is kept for the cursor):\n%s", len(lines), content(m))
	}
	for _, l := range lines {
		if ansi.StringWidth(l) > 70 {
			t.Errorf("line wider than 70: %q", l)
		}
	}
	if !strings.Contains(lines[len(lines)-1], "more") {
		t.Errorf("rows that did not fit are not counted: %q", lines[len(lines)-1])
	}
}

func TestLiveWriterOutsideRunWritesWholeLines(t *testing.T) {
	var out bytes.Buffer
	l := NewLive(&out, nil, nil, nil)
	w := l.Writer()
	for _, s := range []string{"one\ntw", "o", "\nthree\nfour\n", "fi"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got, want := out.String(), "one\ntwo\nthree\nfour\n"; got != want {
		t.Errorf("got %q, want %q (the partial line fi held back)", got, want)
	}
}

func TestLiveWriterWhileRunningQueuesLinesInOrder(t *testing.T) {
	var out bytes.Buffer
	l := NewLive(&out, nil, nil, nil)
	l.running = true
	w := l.Writer()
	w.Write([]byte("a\nb"))
	w.Write([]byte("c\nd\n"))
	w.Write([]byte("e"))
	if got := l.take(); strings.Join(got, "|") != "a|bc|d" {
		t.Errorf("queued %q, want a, bc, d (e still partial)", got)
	}
	if out.Len() != 0 {
		t.Errorf("wrote %q past the running view", out.String())
	}
	select {
	case <-l.wake:
	default:
		t.Error("the pump was not woken")
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func TestLiveRunPrintsLogAboveAndEndsWithContext(t *testing.T) {
	var out testutil.Buffer // the terminal's side: written by the renderer, read by the test
	var fetched atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snapshot := func() (runner.Snapshot, error) {
		fetched.Add(1)
		s := fixture()
		if ctx.Err() != nil {
			s.Forwards[0].Name = "final-api"
		}
		return s, nil
	}
	l := NewLive(&out, nil, snapshot, nil)
	l.opts = []tea.ProgramOption{tea.WithWindowSize(120, 30), tea.WithEnvironment([]string{"TERM=xterm-256color"})}
	l.Writer().Write([]byte("before the view\n"))

	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	eventually(t, "the first snapshot", func() bool { return fetched.Load() > 0 && strings.Contains(out.String(), "grafana") })
	l.Writer().Write([]byte("a log line\nand another\n"))
	eventually(t, "the log lines", func() bool { return strings.Contains(out.String(), "and another") })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	l.Writer().Write([]byte("after the view\n"))

	got := out.String()
	before, logged, final, after := strings.Index(got, "before the view"), strings.Index(got, "a log line\x1b[K\r\nand another"),
		strings.LastIndex(got, "final-api"), strings.Index(got, "after the view\n")
	if before < 0 || logged < 0 || final < 0 || after < 0 || !(before < logged && logged < final && final < after) {
		t.Fatalf("want in order: the line before, the log lines whole, the final table, the line after; at %d, %d, %d, %d in\n%q",
			before, logged, final, after, got)
	}
	if strings.Contains(got, "\x1b[?1049h") {
		t.Error("the view used the alternate screen")
	}
}

// NO_COLOR (https://no-color.org), set to anything, takes the colour out
// of the table; the terminal's own codes (cursor, erase) stay.
func TestLiveHonoursNoColor(t *testing.T) {
	sgr := regexp.MustCompile(`\x1b\[[0-9;:]*[1-9][0-9;:]*m`) // sets a colour or attribute; resets excluded
	for _, c := range []struct {
		noColor   string
		wantColor bool
	}{{"", true}, {"1", false}, {"0", false}} {
		t.Run("NO_COLOR="+c.noColor, func(t *testing.T) {
			t.Setenv("NO_COLOR", c.noColor)
			var out testutil.Buffer // the terminal's side: written by the renderer, read by the test
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			l := NewLive(&out, nil, func() (runner.Snapshot, error) { return fixture(), nil }, nil)
			// the program's own environment, without NO_COLOR: its colour
			// detection sees a colour terminal, so only the view can take
			// the colour out
			l.opts = []tea.ProgramOption{tea.WithWindowSize(120, 30), tea.WithEnvironment([]string{"TERM=xterm-256color", "CLICOLOR_FORCE=1"})}
			done := make(chan error, 1)
			go func() { done <- l.Run(ctx) }()
			eventually(t, "the table", func() bool { return strings.Contains(out.String(), "grafana") })
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got := sgr.FindAllString(out.String(), -1); (len(got) > 0) != c.wantColor {
				t.Errorf("colour codes %q, want colour: %v", got, c.wantColor)
			}
		})
	}
}
