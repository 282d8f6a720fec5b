package view

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
)

// LogHandler returns a compact human log handler, for the lines above the
// live view:
//
//	12:03:04 WARN  reconnecting forward=api err="dial tcp …: connection refused"
//
// the time as 15:04:05, the level padded to five (coloured when color),
// the message, then the attributes exactly as slog's text handler writes
// them (groups as prefixes, quoting where needed). One Write per record.
func LogHandler(w io.Writer, level slog.Leveler, color bool) slog.Handler {
	if level == nil {
		level = slog.LevelInfo
	}
	h := &logHandler{out: &logOut{w: w}, level: level, color: paint(color)}
	// The text handler writes the attributes; it is given records without
	// a time and with an empty message, so its line always starts with
	// `level=X msg=""`, which Handle cuts off.
	h.attrs = slog.NewTextHandler(&h.out.buf, &slog.HandlerOptions{Level: slog.Level(math.MinInt)})
	return h
}

type logHandler struct {
	out   *logOut
	attrs slog.Handler
	level slog.Leveler
	color paint
}

// logOut is shared by a handler and those derived from it (WithAttrs,
// WithGroup): one buffer and one lock for the writer.
type logOut struct {
	mu  sync.Mutex
	buf bytes.Buffer
	w   io.Writer
}

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = h.attrs.WithAttrs(as)
	return &c
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.attrs = h.attrs.WithGroup(name)
	return &c
}

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	bare := slog.NewRecord(time.Time{}, r.Level, "", r.PC)
	r.Attrs(func(a slog.Attr) bool {
		bare.AddAttrs(a)
		return true
	})

	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.buf.Reset()
	if err := h.attrs.Handle(ctx, bare); err != nil {
		return err
	}
	attrs := strings.TrimSuffix(h.out.buf.String(), "\n")
	attrs = strings.TrimPrefix(attrs, "level="+r.Level.String()+` msg=""`)

	var line strings.Builder
	if !r.Time.IsZero() {
		line.WriteString(h.color.faint(r.Time.Format("15:04:05")) + " ")
	}
	lvl := r.Level.String()
	pad := strings.Repeat(" ", max(0, 5-len(lvl)))
	line.WriteString(h.color.level(r.Level, lvl) + pad + " ")
	line.WriteString(message(r.Message))
	line.WriteString(attrs)
	line.WriteByte('\n')
	_, err := io.WriteString(h.out.w, line.String())
	return err
}

func (p paint) level(l slog.Level, s string) string {
	switch {
	case l >= slog.LevelError:
		return p.red(s)
	case l >= slog.LevelWarn:
		return p.yellow(s)
	case l >= slog.LevelInfo:
		return p.green(s)
	}
	return p.faint(s)
}

// message is the record's message as is, unless it would break the line
// or the terminal: then quoted.
func message(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}
