package edit

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kforward/kforward/config"
)

// doc is a forwards file as its lines, with the node tree that says where
// the forwards list and its items are. Edits splice lines; the tree only
// locates.
type doc struct {
	path  string
	lines []string // split at "\n"; a CRLF file's "\r" stays on its line
	final bool     // the file ended with a line break
	crlf  bool

	root *yaml.Node // the top-level mapping; nil for a file of comments only
	key  *yaml.Node // the forwards key; nil when there is none
	seq  *yaml.Node // its value
}

func parse(path string, data []byte) (*doc, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(data, &n); err != nil {
		// config says where, as file:line:col.
		if _, perr := config.ParseFile(path, data); perr != nil {
			return nil, perr
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	text := string(data)
	d := &doc{path: path, final: strings.HasSuffix(text, "\n")}
	d.lines = strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	d.crlf = strings.HasSuffix(d.lines[0], "\r")
	if n.Kind != yaml.DocumentNode || len(n.Content) == 0 {
		return d, nil // comments only
	}
	d.root = n.Content[0]
	if d.root.Kind != yaml.MappingNode || d.root.Style&yaml.FlowStyle != 0 {
		return nil, fmt.Errorf("%s:%d:%d: the file must be a mapping written one key per line, with forwards: in it", path, d.root.Line, d.root.Column)
	}
	for i := 0; i+1 < len(d.root.Content); i += 2 {
		if d.root.Content[i].Value == "forwards" {
			d.key, d.seq = d.root.Content[i], d.root.Content[i+1]
			break
		}
	}
	return d, nil
}

// items are the forwards list's items; none when it is empty or null.
func (d *doc) items() []*yaml.Node {
	if d.seq == nil || d.seq.Kind != yaml.SequenceNode {
		return nil
	}
	return d.seq.Content
}

func (d *doc) dashCol() int { return d.seq.Column - 1 }

// dashLine is the index of the line with item's dash: its own line, or one
// above for an item that starts on the line after its dash.
func (d *doc) dashLine(item *yaml.Node) int {
	col := d.dashCol()
	for l := item.Line - 1; l >= d.seq.Line-1; l-- {
		r := []rune(d.lines[l])
		if len(r) > col && r[col] == '-' && strings.TrimSpace(string(r[:col])) == "" {
			return l
		}
	}
	return item.Line - 1
}

// listEnd is the index of the first line after the forwards list: the
// next top-level key's, or the end of the file.
func (d *doc) listEnd() int {
	for i := 0; i+1 < len(d.root.Content); i += 2 {
		if d.root.Content[i] == d.key && i+2 < len(d.root.Content) {
			return d.root.Content[i+2].Line - 1
		}
	}
	return len(d.lines)
}

// end is the index of item i's last line. Blank lines and comments no
// deeper than the dashes before the next item (or after the list) are not
// the item's: they are the next one's heading, or stand on their own. A
// comment indented like the item's keys is the item's.
func (d *doc) end(i int) int {
	items := d.items()
	bound := d.listEnd()
	if i+1 < len(items) {
		bound = d.dashLine(items[i+1])
	}
	start := d.dashLine(items[i])
	j := bound - 1
	for j > start && (blank(d.lines[j]) || isComment(d.lines[j]) && indent(d.lines[j]) <= d.dashCol()) {
		j--
	}
	return j
}

// start is the index of item i's first line: its dash, or the comments
// right above it (no blank line between), which are its heading.
func (d *doc) start(i int) int {
	s := d.dashLine(d.items()[i])
	low := d.key.Line - 1
	if i > 0 {
		low = d.end(i - 1)
	}
	for s-1 > low && isComment(d.lines[s-1]) {
		s--
	}
	return s
}

// names are the names of the forwards in file order: config's, or for a
// file config refuses, the same rule applied to the nodes (name:, else
// KIND/TARGET) without expanding ${VAR}.
func (d *doc) names(data []byte) []string {
	items := d.items()
	if cfg, err := config.ParseFile(d.path, data); err == nil && len(cfg.Forwards) == len(items) {
		names := make([]string, len(items))
		for i, f := range cfg.Forwards {
			names[i] = f.Name
		}
		return names
	}
	names := make([]string, len(items))
	for i, item := range items {
		names[i] = nodeName(item)
	}
	return names
}

func nodeName(item *yaml.Node) string {
	if item.Kind == yaml.AliasNode {
		item = item.Alias
	}
	if item.Kind != yaml.MappingNode {
		return ""
	}
	values := map[string]*yaml.Node{}
	for i := 0; i+1 < len(item.Content); i += 2 {
		v := item.Content[i+1]
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if _, dup := values[item.Content[i].Value]; !dup {
			values[item.Content[i].Value] = v
		}
	}
	if n, ok := values["name"]; ok && n.Kind == yaml.ScalarNode && n.Value != "" {
		return n.Value
	}
	for _, k := range kinds {
		if n, ok := values[string(k)]; ok {
			return string(k) + "/" + n.Value
		}
	}
	if n, ok := values["selector"]; ok && n.Kind == yaml.MappingNode {
		labels := map[string]string{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			labels[n.Content[i].Value] = n.Content[i+1].Value
		}
		return "selector/" + config.SelectorString(labels)
	}
	return ""
}

// remove returns the file without item i and its heading, taking one
// blank line with it where it stood between two.
func (d *doc) remove(i int) []byte {
	s, e := d.start(i), d.end(i)
	prevBlank := s > 0 && blank(d.lines[s-1])
	nextBlank := e+1 < len(d.lines) && blank(d.lines[e+1])
	switch {
	case prevBlank && (nextBlank || e+1 == len(d.lines) || i == len(d.items())-1):
		s-- // what follows the list stays right under it
	case nextBlank && s-1 == d.key.Line-1:
		e++ // the first item: no blank line under forwards:
	}
	return d.splice(s, e+1, nil)
}

// add returns the file with f after the last forward.
func (d *doc) add(f Forward) ([]byte, error) {
	st := d.style()
	switch {
	case d.root == nil:
		// Comments only: the list goes after them.
		return d.splice(len(d.lines), len(d.lines), d.list(f, 0, st)), nil
	case d.key == nil:
		var lines []string
		if d.blankBeforeKeys() {
			lines = append(lines, "")
		}
		return d.splice(len(d.lines), len(d.lines), append(lines, d.list(f, d.indent(), st)...)), nil
	}
	if d.seq.Kind == yaml.ScalarNode && d.seq.Tag == "!!null" || d.seq.Kind == yaml.SequenceNode && len(d.seq.Content) == 0 {
		return d.addFirst(f, st)
	}
	if d.seq.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s:%d:%d: forwards must be a list", d.path, d.seq.Line, d.seq.Column)
	}
	if d.seq.Style&yaml.FlowStyle != 0 {
		return nil, fmt.Errorf("%s:%d:%d: forwards is written as a flow list [...]; write it one item per line (- service: ...) to add to it", d.path, d.seq.Line, d.seq.Column)
	}
	items := d.items()
	last := len(items) - 1
	at := d.end(last) + 1
	var lines []string
	if d.blankBetweenItems() {
		lines = append(lines, "")
	}
	offset := 2 // from the dash to the item's keys
	if item := items[last]; item.Kind == yaml.MappingNode && item.Style&yaml.FlowStyle == 0 && item.Column-1-d.dashCol() >= 2 {
		offset = item.Column - 1 - d.dashCol()
	}
	lines = append(lines, item(f.lines(st), d.dashCol(), offset)...)
	return d.splice(at, at, lines), nil
}

// addFirst adds f to a forwards: that is null or [] (config refuses such a
// file, but adding to it makes it whole).
func (d *doc) addFirst(f Forward, st style) ([]byte, error) {
	keyLine := d.key.Line - 1
	if d.seq.Line != d.key.Line && !(d.seq.Tag == "!!null" && d.seq.Value == "") {
		return nil, fmt.Errorf("%s:%d:%d: write forwards' value on its line to add to it", d.path, d.seq.Line, d.seq.Column)
	}
	line := []rune(d.lines[keyLine])
	if d.seq.Value != "" || d.seq.Kind == yaml.SequenceNode {
		// Take the value token (~, null, []) off the key's line; a comment
		// after it stays.
		from := d.seq.Column - 1
		to := from + len([]rune(d.seq.Value))
		if d.seq.Kind == yaml.SequenceNode {
			to = from + strings.IndexRune(string(line[from:]), ']') + 1
		}
		rest := strings.TrimLeft(string(line[to:]), " ")
		head := strings.TrimRight(string(line[:from]), " ")
		if rest != "" && rest != "\r" {
			head += " "
		}
		d.lines[keyLine] = head + rest
	}
	indent := d.key.Column - 1 + d.indent()
	return d.splice(keyLine+1, keyLine+1, item(f.lines(st), indent, 2)), nil
}

// list is a new forwards: key with f under it, the key at column col.
func (d *doc) list(f Forward, unit int, st style) []string {
	if unit == 0 {
		unit = 2
	}
	return append([]string{"forwards:"}, item(f.lines(st), unit, 2)...)
}

// item indents an item's lines: a dash at dashCol, its keys offset past it.
func item(lines []string, dashCol, offset int) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		if i == 0 {
			out[i] = strings.Repeat(" ", dashCol) + "-" + strings.Repeat(" ", offset-1) + l
		} else {
			out[i] = strings.Repeat(" ", dashCol+offset) + l
		}
	}
	return out
}

// indent is the file's indentation step: how far its first nested block
// mapping or list is indented under its key; 2 when it has none.
func (d *doc) indent() int {
	for i := 0; i+1 < len(d.root.Content); i += 2 {
		k, v := d.root.Content[i], d.root.Content[i+1]
		if (v.Kind == yaml.MappingNode || v.Kind == yaml.SequenceNode) && v.Style&yaml.FlowStyle == 0 && v.Line > k.Line && v.Column > k.Column {
			return v.Column - k.Column
		}
	}
	return 2
}

// blankBeforeKeys reports whether the file separates its top-level keys
// with blank lines (above any comment that heads a key).
func (d *doc) blankBeforeKeys() bool {
	for i := 2; i < len(d.root.Content); i += 2 {
		l := d.root.Content[i].Line - 2
		for l >= 0 && isComment(d.lines[l]) {
			l--
		}
		if l >= 0 && blank(d.lines[l]) {
			return true
		}
	}
	return false
}

// blankBetweenItems reports whether every two forwards have a blank line
// between them, so a new one should too.
func (d *doc) blankBetweenItems() bool {
	items := d.items()
	if len(items) < 2 {
		return false
	}
	for i := 1; i < len(items); i++ {
		found := false
		for l := d.end(i-1) + 1; l < d.dashLine(items[i]); l++ {
			found = found || blank(d.lines[l])
		}
		if !found {
			return false
		}
	}
	return true
}

// splice replaces lines [from, to) with add and returns the file.
func (d *doc) splice(from, to int, add []string) []byte {
	lines := make([]string, 0, len(d.lines)+len(add))
	lines = append(lines, d.lines[:from]...)
	for _, l := range add {
		if d.crlf {
			l += "\r"
		}
		lines = append(lines, l)
	}
	lines = append(lines, d.lines[to:]...)
	text := strings.Join(lines, "\n")
	if d.final || len(add) > 0 && to == len(d.lines) {
		text += "\n"
	}
	return []byte(text)
}

func blank(l string) bool     { return strings.TrimSpace(l) == "" }
func isComment(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "#") }
func indent(l string) int     { return len(l) - len(strings.TrimLeft(l, " ")) }
