package view

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"testing/slogtest"
	"time"
)

var logTime = time.Date(2025, 6, 1, 12, 3, 4, 0, time.UTC)

func record(level slog.Level, msg string, args ...any) slog.Record {
	r := slog.NewRecord(logTime, level, msg, 0)
	r.Add(args...)
	return r
}

func TestLogHandlerLine(t *testing.T) {
	tests := []struct {
		name string
		r    slog.Record
		want string
	}{
		{"attrs as the text handler writes them", record(slog.LevelWarn, "reconnecting", "forward", "api", "err", "dial tcp 10.0.0.5:8080: connection refused"),
			`12:03:04 WARN  reconnecting forward=api err="dial tcp 10.0.0.5:8080: connection refused"` + "\n"},
		{"no attrs", record(slog.LevelInfo, "listening"), "12:03:04 INFO  listening\n"},
		{"error level fills the width", record(slog.LevelError, "failed", "n", 3), "12:03:04 ERROR failed n=3\n"},
		{"a group attr", record(slog.LevelInfo, "reload", slog.Group("changes", "added", 1, "removed", 0)), "12:03:04 INFO  reload changes.added=1 changes.removed=0\n"},
		{"a message that would break the line is quoted", record(slog.LevelInfo, "two\nlines"), "12:03:04 INFO  \"two\\nlines\"\n"},
		{"attrs named like the built-in keys are kept", record(slog.LevelInfo, "m", "level", "x", "msg", "y"), "12:03:04 INFO  m level=x msg=y\n"},
		{"a zero time is left out", slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0), "INFO  m\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := LogHandler(&b, slog.LevelDebug, false).Handle(context.Background(), tt.r); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestLogHandlerWithAttrsAndGroup(t *testing.T) {
	var b bytes.Buffer
	base := LogHandler(&b, slog.LevelInfo, false)
	h := base.WithAttrs([]slog.Attr{slog.String("forward", "api")}).WithGroup("conn").WithAttrs([]slog.Attr{slog.Int("id", 7)})
	log := slog.New(h)
	log.LogAttrs(context.Background(), slog.LevelInfo, "closed", slog.Int64("bytes", 512))
	slog.New(base).Info("plain", "k", "v") // the parent is not changed by its children
	got := strings.Split(b.String(), "\n")
	// slog.Logger stamps the real time: compare after it.
	for i, want := range []string{"INFO  closed forward=api conn.id=7 conn.bytes=512", "INFO  plain k=v"} {
		if _, rest, _ := strings.Cut(got[i], " "); rest != want {
			t.Errorf("line %d: got %q, want %q after the time", i, got[i], want)
		}
	}
}

func TestLogHandlerLevel(t *testing.T) {
	var b bytes.Buffer
	var level slog.LevelVar
	level.Set(slog.LevelWarn)
	log := slog.New(LogHandler(&b, &level, false))
	log.Info("hidden")
	log.Warn("shown")
	level.Set(slog.LevelDebug)
	log.Debug("shown too")
	if got := b.String(); strings.Contains(got, "hidden") || !strings.Contains(got, "WARN  shown") || !strings.Contains(got, "DEBUG shown too") {
		t.Errorf("got %q: want INFO dropped at WARN, then DEBUG shown once the level is lowered", got)
	}
}

func TestLogHandlerColor(t *testing.T) {
	for _, tt := range []struct {
		level slog.Level
		want  string
	}{
		{slog.LevelError, "\x1b[31mERROR\x1b[m"},
		{slog.LevelWarn, "\x1b[33mWARN\x1b[m"},
		{slog.LevelInfo, "\x1b[32mINFO\x1b[m"},
		{slog.LevelDebug, "\x1b[2mDEBUG\x1b[m"},
	} {
		var b bytes.Buffer
		_ = LogHandler(&b, slog.LevelDebug, true).Handle(context.Background(), record(tt.level, "m", "k", "v"))
		if !strings.Contains(b.String(), tt.want) || !strings.HasPrefix(b.String(), "\x1b[2m12:03:04\x1b[m ") {
			t.Errorf("got %q, want a faint time and %q", b.String(), tt.want)
		}
		b.Reset()
		_ = LogHandler(&b, slog.LevelDebug, false).Handle(context.Background(), record(tt.level, "m", "k", "v"))
		if strings.IndexByte(b.String(), 0x1b) >= 0 {
			t.Errorf("without color: got %q", b.String())
		}
	}
}

func TestLogHandlerOneWritePerRecord(t *testing.T) {
	var w countingWriter
	log := slog.New(LogHandler(&w, slog.LevelInfo, false))
	log.Info("a", "k", 1)
	log.Warn("b")
	if w.writes != 2 || !strings.HasSuffix(w.buf.String(), "\n") {
		t.Errorf("got %d writes (%q), want one whole line per record", w.writes, w.buf.String())
	}
}

type countingWriter struct {
	buf    bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.buf.Write(p)
}

// TestLogHandlerConforms runs the standard library's handler tests, reading
// each line back: [time] LEVEL msg key=value... with dotted group keys.
func TestLogHandlerConforms(t *testing.T) {
	var b bytes.Buffer
	slogtest.Run(t, func(*testing.T) slog.Handler {
		b.Reset()
		return LogHandler(&b, slog.LevelInfo, false)
	}, func(t *testing.T) map[string]any {
		return parseLine(t, strings.TrimSuffix(b.String(), "\n"))
	})
}

func parseLine(t *testing.T, line string) map[string]any {
	m := map[string]any{}
	fields := strings.Fields(line)
	if len(fields) > 0 {
		if _, err := time.Parse("15:04:05", fields[0]); err == nil {
			m[slog.TimeKey] = fields[0]
			fields = fields[1:]
		}
	}
	if len(fields) < 2 {
		t.Fatalf("line %q: no level and message", line)
	}
	m[slog.LevelKey], m[slog.MessageKey] = fields[0], fields[1]
	rest := strings.Join(fields[2:], " ")
	for rest != "" {
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			t.Fatalf("line %q: no = in %q", line, rest)
		}
		var value string
		if strings.HasPrefix(after, `"`) {
			q, err := strconv.QuotedPrefix(after)
			if err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			value, _ = strconv.Unquote(q)
			after = after[len(q):]
		} else {
			value, after, _ = strings.Cut(after, " ")
			after = " " + after
		}
		rest = strings.TrimPrefix(after, " ")
		group := m
		parts := strings.Split(key, ".")
		for _, g := range parts[:len(parts)-1] {
			sub, ok := group[g].(map[string]any)
			if !ok {
				sub = map[string]any{}
				group[g] = sub
			}
			group = sub
		}
		group[parts[len(parts)-1]] = value
	}
	return m
}
