package rules

import (
	"crypto/sha256"
	"crypto/subtle"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/credproxy/credproxy/internal/secret"
)

// MinClientTokenBytes is the shortest client token accepted: anything that
// reaches the proxy port could guess a short one and act as that agent.
const MinClientTokenBytes = 16

// Client is one agent from `clients:` that authenticates to the proxy with
// Proxy-Authorization: Basic base64(Name:token). Its name is the identity
// that rules, leases and the audit trail see.
type Client struct {
	Name      string
	TokenFile string // absolute; "" when the token comes from TokenEnv
	TokenEnv  string
	// Token is read once at load, trimmed of surrounding whitespace. It is a
	// secret.Value, so a Client (or a Config) never prints it.
	Token secret.Value
	Line  int
}

// clients decodes `clients:`, a list of {name, tokenFile | tokenEnv}, and
// reads each token.
func (l *loader) clients(n *yaml.Node) []*Client {
	var out []*Client
	for i, item := range l.items(n, "clients") {
		field := index("clients", i)
		f := l.fields(item, field, "name", "tokenFile", "tokenEnv")
		c := &Client{
			Name:      l.str(f["name"], join(field, "name"), ""),
			TokenFile: l.filePath(f["tokenFile"], join(field, "tokenFile"), ""),
			TokenEnv:  l.str(f["tokenEnv"], join(field, "tokenEnv"), ""),
			Line:      item.Line,
		}
		c.Token = l.clientToken(c, field)
		out = append(out, c)
	}
	return out
}

// clientToken reads c's token from its file or env var. Errors name the
// file or variable and the token's length, never its content.
func (l *loader) clientToken(c *Client, field string) secret.Value {
	var raw, key string
	switch {
	case c.TokenFile != "" && c.TokenEnv != "":
		l.errf(join(field, "tokenEnv"), "set tokenFile or tokenEnv, not both")
		return nil
	case c.TokenFile != "":
		key = "tokenFile"
		b, err := readSmallFile(c.TokenFile, 64<<10)
		if err != nil {
			l.errf(join(field, key), "cannot read %s: %v", c.TokenFile, err)
			return nil
		}
		raw = string(b)
	case c.TokenEnv != "":
		key = "tokenEnv"
		v, ok := os.LookupEnv(c.TokenEnv)
		if !ok {
			l.errf(join(field, key), "environment variable %s is not set", c.TokenEnv)
			return nil
		}
		raw = v
	default:
		l.errf(field, "needs one of tokenFile or tokenEnv")
		return nil
	}
	tok := strings.TrimSpace(raw)
	if len(tok) < MinClientTokenBytes {
		l.errf(join(field, key), "token is %d bytes after trimming whitespace; want at least %d", len(tok), MinClientTokenBytes)
		return nil
	}
	return secret.NewValue(tok)
}

// checkClients checks names, and that rules restricted to identities name
// configured clients: with `clients:` set, no other identity can exist, so
// any other name is a typo that would lock the rule.
func (l *loader) checkClients(c *Config) {
	names := map[string]int{}
	for i, cl := range c.Clients {
		field := join(index("clients", i), "name")
		switch first, dup := names[cl.Name]; {
		case cl.Name == "":
			l.errf(field, "required")
		case !isClientName(cl.Name):
			l.errf(field, "bad client name %q: use letters, digits, '.', '_' and '-'", cl.Name)
		case dup:
			l.errf(field, "duplicate client name %q (first at line %d)", cl.Name, first)
		default:
			names[cl.Name] = cl.Line
		}
	}
	if len(c.Clients) == 0 {
		return
	}
	for i, r := range c.Rules {
		for j, id := range r.Identities {
			if _, ok := names[id]; !ok && id != "" {
				l.errf(index(join(index("rules", i), "identities"), j),
					"unknown client %q: with clients set, identities must name clients (%s)", id, strings.Join(sortedKeys(names), ", "))
			}
		}
	}
}

// isClientName: a name goes into a proxy URL's userinfo and the audit trail.
func isClientName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}

// RequiresAuth reports whether agents must authenticate (`clients:` is set).
func (c *Config) RequiresAuth() bool { return len(c.Clients) > 0 }

// Authenticate returns the name of the client whose name and token are user
// and pass. It compares SHA-256 digests in constant time against every
// client, whatever matches or not, so neither the time taken nor the
// lengths compared tell a caller how close a guess was or which names exist.
func (c *Config) Authenticate(user, pass string) (name string, ok bool) {
	u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
	found := 0 // index+1 of the matching client
	for i, cl := range c.Clients {
		n, t := sha256.Sum256([]byte(cl.Name)), sha256.Sum256(cl.Token)
		eq := subtle.ConstantTimeCompare(u[:], n[:]) & subtle.ConstantTimeCompare(p[:], t[:])
		// A client whose token failed to load has a nil Token: never let the
		// digest of "" match an empty password.
		eq &= subtle.ConstantTimeLessOrEq(MinClientTokenBytes, len(cl.Token))
		found = subtle.ConstantTimeSelect(eq, i+1, found)
	}
	if found == 0 {
		return "", false
	}
	return c.Clients[found-1].Name, true
}
