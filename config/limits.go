package config

import (
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
)

// A forwards file is read whole and parsed on every reload, so one bad save
// must not be able to exhaust a running process. Three limits bound the
// work: the file's size, how much its aliases may repeat, and how many
// listeners it may ask for. Without aliases, decoding is linear in the file;
// with them, a small file can name one big node thousands of times
// (measured: a 180 KB file with one 3,000-label selector behind an anchor,
// referenced by 3,000 forwards, took 3 s and 620 MB to accept). Defaults
// multiply too: an address list in defaults applies to every forward.
const (
	// MaxFileSize is the largest forwards file accepted, in bytes. A file of
	// a thousand forwards is about 100 KB.
	MaxFileSize = 1 << 20

	// maxAliasNodes is how many YAML nodes (keys, values and list items)
	// aliases may repeat in all, counted with every alias expanded, nested
	// ones too. It is about as many nodes as a 1 MiB file can hold written
	// out, so aliases can at most double the work of the largest file,
	// while a thousand forwards that each repeat a few anchored settings
	// use a few percent of it.
	maxAliasNodes = 500_000

	// maxListeners is how many local listeners (a port on an address) a
	// file may ask for, counting those a forward inherits from defaults.
	// Each is a socket the runner opens and keeps.
	maxListeners = 100_000
)

// ReadFile reads the forwards file at path, refusing one larger than
// MaxFileSize without reading past the limit.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		size := "more than " + fmt.Sprint(MaxFileSize) + " bytes"
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			size = fmt.Sprint(st.Size()) + " bytes"
		}
		e := tooBig(size)
		e.File = path
		return nil, e
	}
	return data, nil
}

func checkSize(data []byte) *Error {
	if len(data) > MaxFileSize {
		return tooBig(fmt.Sprint(len(data)) + " bytes")
	}
	return nil
}

func tooBig(size string) *Error {
	return Pos{1, 1}.errorf("the file is %s; a forwards file may be at most 1 MiB (%d bytes)", size, MaxFileSize)
}

// aliasCounter counts the nodes that aliases repeat, without expanding
// them: the expanded size of each anchored node is computed once, so the
// count costs one pass over the tree however much the aliases multiply.
type aliasCounter struct {
	sizes    map[*yaml.Node]int  // expanded size of anchored nodes, capped
	busy     map[*yaml.Node]bool // anchored nodes being sized: an alias to one is a cycle
	repeated int
	err      *Error
}

// checkAliases refuses a document whose aliases, expanded, repeat more than
// maxAliasNodes nodes, or one with an alias inside the node it names. The
// error is at the alias that went over.
func checkAliases(root *yaml.Node) *Error {
	c := &aliasCounter{sizes: map[*yaml.Node]int{}, busy: map[*yaml.Node]bool{}}
	c.walk(root)
	return c.err
}

// walk visits the tree as written and adds each alias's expanded size.
func (c *aliasCounter) walk(n *yaml.Node) {
	if c.err != nil {
		return
	}
	if n.Kind == yaml.AliasNode {
		size := c.size(n)
		if c.err != nil {
			return
		}
		c.repeated = capped(c.repeated + size)
		if c.repeated > maxAliasNodes {
			c.err = Pos{n.Line, n.Column}.errorf("alias *%s repeats %s nodes, which takes what aliases repeat past %d; aliases may repeat at most %d keys, values and list items in all",
				n.Value, countString(size), maxAliasNodes, maxAliasNodes)
		}
		return
	}
	for _, child := range n.Content {
		c.walk(child)
	}
}

// size is the number of nodes n stands for with aliases expanded, capped
// just past the limit (nested aliases can stand for exponentially many).
func (c *aliasCounter) size(n *yaml.Node) int {
	if c.err != nil {
		return 0
	}
	if n.Kind == yaml.AliasNode {
		if c.busy[n.Alias] {
			c.err = Pos{n.Line, n.Column}.errorf("alias *%s is inside the node it refers to, which would repeat without end; an alias may only refer to a node that does not contain it", n.Value)
			return 0
		}
		return c.size(n.Alias)
	}
	if s, ok := c.sizes[n]; ok {
		return s
	}
	if n.Anchor != "" {
		c.busy[n] = true
		defer delete(c.busy, n)
	}
	total := 1
	for _, child := range n.Content {
		total = capped(total + c.size(child))
	}
	if n.Anchor != "" {
		c.sizes[n] = total
	}
	return total
}

func capped(n int) int { return min(n, maxAliasNodes+1) }

func countString(n int) string {
	if n > maxAliasNodes {
		return fmt.Sprintf("more than %d", maxAliasNodes)
	}
	return fmt.Sprint(n)
}
