package rules

import (
	"errors"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// ErrInject marks a rule whose injection could not run on a request, such as
// a template naming a .Data field the credential does not have. The proxy
// answers 502; the message never holds the credential's value.
var ErrInject = errors.New("credential injection failed")

// ErrAmbiguousPath marks a request path that servers may resolve in different
// ways: a dot-segment in any encoding (%2e%2e, ..%2F, ..;), a backslash, a
// bad percent-escape or a control byte. Match returns it only for a host that
// has a rule; the proxy answers 400 rather than forward a path whose rule was
// decided on one reading while the upstream acts on another.
var ErrAmbiguousPath = errors.New("ambiguous request path")

// ErrIdentity marks a request that a rule would match but for the caller's
// identity, which the rule's identities do not list. Match returns it with
// that rule; the proxy answers 403 naming the rule, never forwarding the
// request uncredentialed as though no rule had named it.
var ErrIdentity = errors.New("rule not for this identity")

// ConfigError is one problem in a config file, located by line and by the
// dotted path of the field, like `rules[2].inject.header`.
type ConfigError struct {
	File  string
	Line  int    // 1-based; 0 when unknown
	Field string // "" for a YAML syntax error
	Msg   string
}

// Error formats the problem as FILE:LINE: FIELD: MSG.
func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(oneLine(e.Field))
		b.WriteString(": ")
	}
	b.WriteString(oneLine(e.Msg))
	return b.String()
}

// oneLine escapes control characters (a key spelled with a CR or newline in
// it), so that every problem stays one FILE:LINE: line.
func oneLine(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) < 0 {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// ConfigErrors is every problem found in one file, in line order: Load
// reports them all at once rather than one per attempt.
type ConfigErrors []*ConfigError

// Error joins the problems with newlines.
func (es ConfigErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap lets errors.As find a single *ConfigError.
func (es ConfigErrors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

func (es ConfigErrors) sort() {
	sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
}
