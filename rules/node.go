package rules

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// loader reads one file's yaml.Node tree into a Config, remembering the line
// of every field it meets so that later checks can name FILE:LINE: FIELD.
type loader struct {
	file     string         // as given, for messages
	dir      string         // absolute directory of file, for relative paths
	lines    map[string]int // dotted field path -> line
	errs     ConfigErrors
	warnings []string
}

func newLoader(file string) *loader {
	dir := filepath.Dir(file)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return &loader{file: file, dir: dir, lines: map[string]int{}}
}

// line is the line of field, or of its nearest parent that was in the file
// (a missing rules[2].name is reported at rules[2]).
func (l *loader) line(field string) int {
	for {
		if n, ok := l.lines[field]; ok {
			return n
		}
		i := strings.LastIndexAny(field, ".[")
		if i < 0 {
			break
		}
		field = field[:i]
	}
	return 0
}

// has reports whether field was written in the file.
func (l *loader) has(field string) bool {
	_, ok := l.lines[field]
	return ok
}

func (l *loader) errf(field, format string, args ...any) {
	l.errs = append(l.errs, &ConfigError{
		File: l.file, Line: l.line(field), Field: field, Msg: fmt.Sprintf(format, args...),
	})
}

func (l *loader) warnf(field, format string, args ...any) {
	e := ConfigError{File: l.file, Line: l.line(field), Field: field, Msg: fmt.Sprintf(format, args...)}
	l.warnings = append(l.warnings, e.Error())
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func index(parent string, i int) string {
	return fmt.Sprintf("%s[%d]", parent, i)
}

// resolve follows an alias; nil and null come back as nil, meaning "not set".
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return nil
	}
	return n
}

// entry is one key of a mapping, in file order.
type entry struct {
	key   string
	field string
	value *yaml.Node // nil when null
}

// entries lists a mapping's keys in file order, reporting duplicates.
func (l *loader) entries(n *yaml.Node, field string) []entry {
	if n = resolve(n); n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		if l.line(field) == 0 { // the whole document, which has no key
			l.lines[field] = n.Line
		}
		l.errf(field, "expected a mapping")
		return nil
	}
	var out []entry
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		f := join(field, k.Value)
		if first, dup := l.lines[f]; dup {
			l.errs = append(l.errs, &ConfigError{File: l.file, Line: k.Line, Field: f,
				Msg: fmt.Sprintf("duplicate key (first at line %d)", first)})
			continue
		}
		l.lines[f] = k.Line
		out = append(out, entry{key: k.Value, field: f, value: resolve(n.Content[i+1])})
	}
	return out
}

// fields returns the values of mapping n by key; keys not in allowed are
// errors, since a misspelt key would otherwise be silently ignored.
func (l *loader) fields(n *yaml.Node, field string, allowed ...string) map[string]*yaml.Node {
	es := l.entries(n, field)
	out := make(map[string]*yaml.Node, len(es))
	for _, e := range es {
		if !contains(allowed, e.key) {
			l.errf(e.field, "unknown key (want one of: %s)", strings.Join(allowed, ", "))
			continue
		}
		out[e.key] = e.value
	}
	return out
}

// items returns a sequence's elements, recording each one's line.
func (l *loader) items(n *yaml.Node, field string) []*yaml.Node {
	if n = resolve(n); n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		l.errf(field, "expected a list")
		return nil
	}
	for i, c := range n.Content {
		l.lines[index(field, i)] = c.Line
	}
	return n.Content
}

// scalar returns n's text, or ok=false (with an error) when n is not one.
func (l *loader) scalar(n *yaml.Node, field string) (string, bool) {
	if n = resolve(n); n == nil {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		l.errf(field, "expected a single value (quote one that starts with { or [)")
		return "", false
	}
	return n.Value, true
}

// str returns a string field; absent, null and "" all mean def.
func (l *loader) str(n *yaml.Node, field, def string) string {
	if s, ok := l.scalar(n, field); ok && s != "" {
		return s
	}
	return def
}

// filePath is str for a path: relative paths are taken from the config's
// directory, not the process's, so a config works from any working dir.
func (l *loader) filePath(n *yaml.Node, field, def string) string {
	return l.abs(l.str(n, field, def))
}

func (l *loader) abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(l.dir, p)
}

func (l *loader) strs(n *yaml.Node, field string) []string {
	var out []string
	for i, c := range l.items(n, field) {
		if s, ok := l.scalar(c, index(field, i)); ok {
			out = append(out, s)
		} else if resolve(c) == nil {
			l.errf(index(field, i), "empty entry")
		}
	}
	return out
}

func (l *loader) duration(n *yaml.Node, field string, def time.Duration) time.Duration {
	s, ok := l.scalar(n, field)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		l.errf(field, "bad duration %q: want a Go duration such as 90s, 15m or 1h30m", s)
		return def
	}
	return d
}

func (l *loader) boolean(n *yaml.Node, field string, def bool) bool {
	if _, ok := l.scalar(n, field); !ok {
		return def
	}
	n = resolve(n)
	var b bool
	if err := n.Decode(&b); err != nil {
		l.errf(field, "expected true or false")
		return def
	}
	return b
}

func (l *loader) integer(n *yaml.Node, field string, def int) int {
	if _, ok := l.scalar(n, field); !ok {
		return def
	}
	n = resolve(n)
	var i int
	if err := n.Decode(&i); err != nil {
		l.errf(field, "expected an integer")
		return def
	}
	return i
}
