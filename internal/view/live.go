package view

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/kforward/kforward/runner"
)

const (
	pollEvery    = 250 * time.Millisecond // how soon a change shows
	refreshEvery = time.Second            // how often the table is redrawn anyway
)

// Live is the live view: a bubbletea program, inline (never the alternate
// screen), that draws Table about once a second, and at once (within
// pollEvery) when a forward's state, pod, addresses or last error, or the
// last reload, changed. Log lines written to Writer scroll above it.
type Live struct {
	Wide bool // the wide table (set before Run)

	out         io.Writer
	in          io.Reader
	snapshot    func() (runner.Snapshot, error)
	onInterrupt func()
	color       bool                // NO_COLOR not set when it was made
	opts        []tea.ProgramOption // tests: a fixed window size

	mu      sync.Mutex
	running bool     // lines go to the program, not straight to out
	queue   []string // complete lines waiting for the program
	partial []byte   // the start of a line not ended yet
	wake    chan struct{}
}

// NewLive returns the live view of snapshot, drawn on out and reading keys
// from in (nil: no keys; a terminal is put in raw mode while the view
// runs, so Ctrl-C arrives as a key, not SIGINT). Pass the terminal itself
// as out: its size and colour support are read from it. The table has no
// colour when NO_COLOR is set to anything but "" (https://no-color.org).
//
// snapshot is called about four times a second from goroutines of the
// view, two at once at the very end, so it must be safe for concurrent
// use; an error it returns is shown on the header line above the last
// table (`kforward status --watch` when nothing answers). onInterrupt is
// called on Ctrl-C and q, on the view's event loop: it must not block.
func NewLive(out io.Writer, in io.Reader, snapshot func() (runner.Snapshot, error), onInterrupt func()) *Live {
	return &Live{out: out, in: in, snapshot: snapshot, onInterrupt: onInterrupt, color: os.Getenv("NO_COLOR") == "",
		wake: make(chan struct{}, 1)}
}

// Writer returns an io.Writer for log output: each complete line is
// printed above the table without tearing it; before Run starts or after
// it ends, lines go straight to out. A line is held until its newline.
// While the view runs, anything written to the terminal some other way
// (stderr included) tears the table: route every log through here.
func (l *Live) Writer() io.Writer { return (*liveWriter)(l) }

type liveWriter Live

func (w *liveWriter) Write(p []byte) (int, error) {
	l := (*Live)(w)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	i := bytes.LastIndexByte(l.partial, '\n')
	if i < 0 {
		return len(p), nil
	}
	done := string(l.partial[:i])
	l.partial = append(l.partial[:0], l.partial[i+1:]...)
	if !l.running {
		_, err := io.WriteString(l.out, done+"\n")
		return len(p), err
	}
	l.queue = append(l.queue, strings.Split(done, "\n")...)
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// take empties the queue of complete lines.
func (l *Live) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queue
	l.queue = nil
	return q
}

// Run draws until ctx ends, then draws the final table once more, which
// stays in the terminal (and its scrollback) under the log lines, and
// returns. Keys do not end it: Ctrl-C and q call onInterrupt, and the
// caller ends ctx when it is done.
func (l *Live) Run(ctx context.Context) error {
	m := newModel(l.snapshot, l.onInterrupt, time.Now)
	m.wide, m.color = l.Wide, l.color
	opts := append([]tea.ProgramOption{
		tea.WithOutput(l.out),
		tea.WithInput(l.in),
		// SIGINT and SIGTERM are the caller's: a Ctrl-C it does not see as
		// a key (input not a terminal) must reach it, not end the view.
		tea.WithoutSignalHandler(),
	}, l.opts...)
	p := tea.NewProgram(m, opts...)

	l.mu.Lock()
	l.running = true
	l.mu.Unlock()

	exited := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { l.pump(ctx, p, exited) })
	_, err := p.Run()
	close(exited)
	wg.Wait()

	l.mu.Lock()
	l.running = false
	var rest []byte
	for _, line := range l.queue { // written while the program was ending
		rest = append(rest, line+"\n"...)
	}
	l.queue = nil
	l.mu.Unlock()
	if len(rest) > 0 {
		_, _ = l.out.Write(rest)
	}
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// pump hands queued log lines to the program, in order, and when ctx ends
// the last of them and the final snapshot, then lets the program quit.
func (l *Live) pump(ctx context.Context, p *tea.Program, exited <-chan struct{}) {
	send := func() {
		if lines := l.take(); len(lines) > 0 {
			p.Send(tea.Println(strings.Join(lines, "\n"))())
		}
	}
	for {
		select {
		case <-exited:
			return
		case <-l.wake:
			send()
		case <-ctx.Done():
			send()
			snap, err := l.snapshot()
			p.Send(finalMsg{snapMsg{snap: snap, err: err, at: time.Now()}})
			return
		}
	}
}

// snapMsg is a snapshot taken at a moment, or why there is none.
type snapMsg struct {
	snap runner.Snapshot
	err  error
	at   time.Time
}

// finalMsg is the last snapshot: draw it and quit.
type finalMsg struct{ snapMsg }

// model is the live view's state. It shows snap as of shownAt; newer
// snapshots replace it when something a person waits for changed, or once
// refreshEvery has passed.
type model struct {
	snapshot    func() (runner.Snapshot, error)
	onInterrupt func()
	clock       func() time.Time

	snap    runner.Snapshot
	err     error
	shownAt time.Time // when snap (or err) was taken; the table's clock
	rates   Rates
	ratedAt time.Time
	width   int
	height  int
	wide    bool
	color   bool
}

func newModel(snapshot func() (runner.Snapshot, error), onInterrupt func(), clock func() time.Time) *model {
	return &model{snapshot: snapshot, onInterrupt: onInterrupt, clock: clock}
}

// fetch takes a snapshot after d, off the event loop: `status --watch`
// fetches it over HTTP.
func (m *model) fetch(d time.Duration) tea.Cmd {
	get := func() tea.Msg {
		s, err := m.snapshot()
		return snapMsg{snap: s, err: err, at: m.clock()}
	}
	if d == 0 {
		return get
	}
	return tea.Tick(d, func(time.Time) tea.Msg { return get() })
}

func (m *model) Init() tea.Cmd { return m.fetch(0) }

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tea.KeyPressMsg:
		switch msg.String() {
		case "ctrl+c", "q":
			if m.onInterrupt != nil {
				m.onInterrupt()
			}
		}
	case snapMsg:
		if m.shownAt.IsZero() || msg.at.Sub(m.shownAt) >= refreshEvery-pollEvery/2 || changed(m.snap, m.err, msg) {
			m.show(msg)
		}
		return m, m.fetch(pollEvery)
	case finalMsg:
		m.show(msg.snapMsg)
		return m, tea.Quit
	}
	return m, nil
}

// show makes msg the snapshot on screen. A failed fetch keeps the last
// table under the error.
func (m *model) show(msg snapMsg) {
	m.err, m.shownAt = msg.err, msg.at
	if msg.err != nil {
		return
	}
	m.snap = msg.snap
	if m.ratedAt.IsZero() || msg.at.Sub(m.ratedAt) >= refreshEvery-pollEvery/2 {
		m.rates.Add(msg.snap, msg.at)
		m.ratedAt = msg.at
	}
}

// changed reports whether msg differs from what is shown in something a
// person waits for: the fetch failing or recovering, the last reload, the
// set of forwards, or a forward's state, pod, addresses or last error.
func changed(snap runner.Snapshot, err error, msg snapMsg) bool {
	if (err == nil) != (msg.err == nil) || (err != nil && err.Error() != msg.err.Error()) {
		return true
	}
	if msg.err != nil {
		return false
	}
	a, b := snap, msg.snap
	if !a.LastReload.At.Equal(b.LastReload.At) || a.LastReload.Successful != b.LastReload.Successful || len(a.Forwards) != len(b.Forwards) {
		return true
	}
	for i := range a.Forwards {
		f, g := a.Forwards[i], b.Forwards[i]
		if f.Name != g.Name || f.State != g.State || f.Pod != g.Pod || f.LastError != g.LastError ||
			!f.LastErrorAt.Equal(g.LastErrorAt) || !slices.Equal(f.Addresses, g.Addresses) {
			return true
		}
	}
	return false
}

func (m *model) View() tea.View {
	if m.shownAt.IsZero() {
		// Nothing fetched yet. Not empty: a line printed above an empty
		// view would overwrite the line before it.
		return tea.NewView("…\n")
	}
	width := m.width
	if width <= 0 {
		width = 80
	}
	height := 0
	if m.height > 1 {
		height = m.height - 1 // the line the cursor waits on
	}
	return tea.NewView(Table(m.snap, &m.rates, m.shownAt, width, Options{Wide: m.wide, Color: m.color, Height: height, Err: m.err}))
}
