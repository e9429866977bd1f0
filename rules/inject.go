package rules

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/credproxy/credproxy/internal/secret"
)

// Values is the secret a template renders: .Value is the primary value and
// .Data every field the source returned. Printing a Values, with fmt, slog or
// encoding/json, gives [redacted], so one cannot leak by accident.
type Values struct {
	Value string
	Data  map[string]string
}

func (Values) String() string               { return secret.Redacted }
func (Values) GoString() string             { return secret.Redacted }
func (Values) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(secret.Redacted)) }
func (Values) LogValue() slog.Value         { return slog.StringValue(secret.Redacted) }
func (Values) MarshalJSON() ([]byte, error) { return []byte(`"` + secret.Redacted + `"`), nil }

// Apply runs r's injection on req: it deletes the headers in Remove, then
// sets the rule's header or query parameter to the rendered value, replacing
// whatever the agent sent there (a placeholder key is overwritten, never kept
// beside the real one). A signing rule (Sign) only deletes Remove here: the
// proxy calls SignRequest last. Errors wrap ErrInject and never contain v.
func (r *Rule) Apply(req *http.Request, v Values) error {
	for _, h := range r.Remove {
		delete(req.Header, h)
	}
	if r.Sign != nil {
		return nil // signed last, by SignRequest, once nothing else changes req
	}
	if r.value.usesValue && v.Value == "" {
		return fmt.Errorf("rule %q: %w: %w", r.Name, ErrInject, errNoValue)
	}
	s, err := r.value.exec(v)
	if err != nil {
		return fmt.Errorf("rule %q: %w: %s", r.Name, ErrInject, scrub(err.Error(), v))
	}
	if err := r.injector.inject(req, s); err != nil {
		return fmt.Errorf("rule %q: %w: %v", r.Name, ErrInject, err)
	}
	return nil
}

// injector puts a rendered value into one slot of a request.
type injector interface {
	inject(req *http.Request, value string) error
}

// headerInjector replaces one header; name is canonical.
type headerInjector struct{ name string }

func (h headerInjector) inject(req *http.Request, value string) error {
	// A CR or LF in a secret would let it forge further header lines.
	for i := 0; i < len(value); i++ {
		if c := value[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return fmt.Errorf("value for header %s holds a control character", h.name)
		}
	}
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Header[h.name] = []string{value}
	return nil
}

// queryInjector replaces one query parameter, keeping the others as sent.
type queryInjector struct{ param string }

func (q queryInjector) inject(req *http.Request, value string) error {
	req.URL.RawQuery = setQueryParam(req.URL.RawQuery, q.param, value)
	return nil
}

// setQueryParam sets key to value in a raw query, at the place of its first
// occurrence (or at the end), drops any other occurrence and leaves the
// other parameters in their order and encoding.
func setQueryParam(raw, key, value string) string {
	pair := url.QueryEscape(key) + "=" + url.QueryEscape(value)
	var b strings.Builder
	b.Grow(len(raw) + len(pair) + 1)
	done := false
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		k, _, _ := strings.Cut(part, "=")
		if uk, err := url.QueryUnescape(k); k == key || (err == nil && uk == key) {
			if done {
				continue
			}
			part, done = pair, true
		}
		if part == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(part)
	}
	if !done {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(pair)
	}
	return b.String()
}

// valueTemplate is a parsed inject value. Common shapes run on a fast path
// that renders without text/template; the rest run the template.
type valueTemplate struct {
	tmpl      *template.Template
	fast      *fastValue // nil: run tmpl
	usesValue bool       // the template reads .Value
}

var templateFuncs = template.FuncMap{"basic": basicAuth}

// errColonUser: RFC 7617 user ids cannot hold ':', the separator.
var errColonUser = errors.New("user name contains ':'")

// basicAuth renders an HTTP Basic credential (RFC 7617).
func basicAuth(user, pass string) (string, error) {
	if strings.Contains(user, ":") {
		return "", errColonUser
	}
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)), nil
}

func parseValueTemplate(name, src string) (*valueTemplate, error) {
	t, err := template.New(name).Option("missingkey=error").Funcs(templateFuncs).Parse(src)
	if err != nil {
		return nil, err
	}
	return &valueTemplate{tmpl: t, fast: fastPath(t.Tree), usesValue: strings.Contains(src, ".Value")}, nil
}

// errNoValue: a store secret with several fields and no `field:` has no
// single .Value; rendering "" would send an empty credential.
var errNoValue = errors.New("the credential has no single value: set its field: or use .Data.NAME in the template")

func (t *valueTemplate) exec(v Values) (string, error) {
	if t.fast != nil {
		return t.fast.exec(v)
	}
	var b strings.Builder
	if err := t.tmpl.Execute(&b, v); err != nil {
		return "", errors.New(withholdDetail(err.Error()))
	}
	return b.String(), nil
}

// Details of text/template errors known not to quote the data.
var safeDetails = []string{"map has no entry for key ", "can't evaluate field ", "error calling basic: "}

// withholdDetail keeps the location of an exec error (`template: NAME:L:C:
// executing "NAME" at <NODE>`, all from the config) but drops a detail that
// may quote the value it choked on, as "range can't iterate over VALUE" does.
func withholdDetail(msg string) string {
	loc, detail, ok := strings.Cut(msg, ">: ")
	if !ok {
		return "template failed"
	}
	for _, p := range safeDetails {
		if strings.HasPrefix(detail, p) {
			return msg
		}
	}
	return loc + ">: detail withheld, it may quote the credential"
}

// fastValue renders PREFIX{{ F }}SUFFIX or PREFIX{{ basic F F }}SUFFIX where
// each F is .Value or .Data.key, with the same results as the template.
type fastValue struct {
	prefix, suffix string
	basic          bool
	a, b           fieldRef // b only with basic
}

// fieldRef is .Value, or .Data.key when data is set.
type fieldRef struct {
	data bool
	key  string
}

func (f fieldRef) get(v Values) (string, error) {
	if !f.data {
		return v.Value, nil
	}
	s, ok := v.Data[f.key]
	if !ok {
		return "", fmt.Errorf("map has no entry for key %q", f.key)
	}
	return s, nil
}

func (f *fastValue) exec(v Values) (string, error) {
	a, err := f.a.get(v)
	if err != nil {
		return "", err
	}
	if !f.basic {
		if f.prefix == "" && f.suffix == "" {
			return a, nil
		}
		return f.prefix + a + f.suffix, nil
	}
	b, err := f.b.get(v)
	if err != nil {
		return "", err
	}
	if strings.Contains(a, ":") {
		return "", fmt.Errorf("basic: %w", errColonUser)
	}
	var stack [128]byte
	raw := append(append(append(stack[:0], a...), ':'), b...)
	enc := base64.StdEncoding
	out := make([]byte, 0, len(f.prefix)+len("Basic ")+enc.EncodedLen(len(raw))+len(f.suffix))
	out = append(append(out, f.prefix...), "Basic "...)
	out = append(enc.AppendEncode(out, raw), f.suffix...)
	return string(out), nil
}

// fastPath recognises the shapes fastValue renders; nil for anything else.
func fastPath(tree *parse.Tree) *fastValue {
	var f fastValue
	nodes := tree.Root.Nodes
	if len(nodes) > 0 && nodes[0].Type() == parse.NodeText {
		f.prefix, nodes = string(nodes[0].(*parse.TextNode).Text), nodes[1:]
	}
	if n := len(nodes); n > 0 && nodes[n-1].Type() == parse.NodeText {
		f.suffix, nodes = string(nodes[n-1].(*parse.TextNode).Text), nodes[:n-1]
	}
	if len(nodes) != 1 || nodes[0].Type() != parse.NodeAction {
		return nil
	}
	pipe := nodes[0].(*parse.ActionNode).Pipe
	if len(pipe.Decl) > 0 || len(pipe.Cmds) != 1 {
		return nil
	}
	args := pipe.Cmds[0].Args
	var ok bool
	switch {
	case len(args) == 1:
		f.a, ok = fieldOf(args[0])
		return pick(&f, ok)
	case len(args) == 3 && isIdent(args[0], "basic"):
		f.basic = true
		var okB bool
		f.a, ok = fieldOf(args[1])
		f.b, okB = fieldOf(args[2])
		return pick(&f, ok && okB)
	}
	return nil
}

func pick(f *fastValue, ok bool) *fastValue {
	if !ok {
		return nil
	}
	return f
}

func isIdent(n parse.Node, name string) bool {
	id, ok := n.(*parse.IdentifierNode)
	return ok && id.Ident == name
}

func fieldOf(n parse.Node) (fieldRef, bool) {
	fn, ok := n.(*parse.FieldNode)
	switch {
	case !ok:
		return fieldRef{}, false
	case len(fn.Ident) == 1 && fn.Ident[0] == "Value":
		return fieldRef{}, true
	case len(fn.Ident) == 2 && fn.Ident[0] == "Data":
		return fieldRef{data: true, key: fn.Ident[1]}, true
	}
	return fieldRef{}, false
}

// scrub masks every secret in v found in msg, raw or encoded (an error may
// quote it with %q, or as a Basic credential's base64), so that an error from a
// template can be shown without showing what it was rendering. The rule
// injects these values itself, so short ones are masked too (MinInjectLen).
func scrub(msg string, v Values) string {
	values := make([]string, 0, 1+len(v.Data))
	values = append(values, v.Value)
	for _, s := range v.Data {
		values = append(values, s)
	}
	return secret.NewScrubberMin(secret.MinInjectLen, values...).String(msg)
}
