package rules

import (
	"net"
	"net/url"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// SourceOAuth2 is the `type` of an OAuth 2.0 token source.
const SourceOAuth2 = "oauth2"

// OAuth2 grants a source of type oauth2 may use.
var oauth2Grants = []string{"client_credentials", "refresh_token", "jwt_bearer"}

// OAuth2Source is the type-specific part of a `sources:` entry of type
// oauth2: where and how an access token is minted. Credentials that name the
// source get the access token as their value (no path).
type OAuth2Source struct {
	Grant            string   // client_credentials (default), refresh_token or jwt_bearer
	TokenURL         string   // the token endpoint; jwt_bearer with keyFile may take the key's token_uri
	ClientID         string   // the client (and, for jwt_bearer with privateKeyFile, the JWT's issuer)
	ClientSecretFile string   // client_credentials (required), refresh_token (optional)
	Scopes           []string // asked for at the token endpoint
	Audience         string   // the `audience` parameter, or the JWT's aud for jwt_bearer
	RefreshTokenFile string   // refresh_token: read at start, rotated tokens written back
	KeyFile          string   // jwt_bearer: a Google service-account JSON key
	PrivateKeyFile   string   // jwt_bearer: a PEM private key (instead of keyFile)
	RevocationURL    string   // RFC 7009 endpoint; "" = tokens are left to expire
}

// sourceType peeks at a `sources:` entry's type without recording lines,
// so that the entry is then read with its own type's field list.
func sourceType(n *yaml.Node) string {
	if n = resolve(n); n == nil || n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "type" {
			if v := resolve(n.Content[i+1]); v != nil && v.Kind == yaml.ScalarNode {
				return v.Value
			}
		}
	}
	return ""
}

func (l *loader) oauth2Source(e entry) *Source {
	f := l.fields(e.value, e.field, "type", "grant", "tokenURL", "clientID", "clientSecretFile",
		"scopes", "audience", "refreshTokenFile", "keyFile", "privateKeyFile", "revocationURL", "caFile")
	field := func(k string) string { return join(e.field, k) }
	return &Source{
		Name:   e.key,
		Type:   SourceOAuth2,
		CAFile: l.filePath(f["caFile"], field("caFile"), ""),
		Line:   l.line(e.field),
		OAuth2: &OAuth2Source{
			Grant:            l.str(f["grant"], field("grant"), "client_credentials"),
			TokenURL:         l.str(f["tokenURL"], field("tokenURL"), ""),
			ClientID:         l.str(f["clientID"], field("clientID"), ""),
			ClientSecretFile: l.filePath(f["clientSecretFile"], field("clientSecretFile"), ""),
			Scopes:           l.strs(f["scopes"], field("scopes")),
			Audience:         l.str(f["audience"], field("audience"), ""),
			RefreshTokenFile: l.filePath(f["refreshTokenFile"], field("refreshTokenFile"), ""),
			KeyFile:          l.filePath(f["keyFile"], field("keyFile"), ""),
			PrivateKeyFile:   l.filePath(f["privateKeyFile"], field("privateKeyFile"), ""),
			RevocationURL:    l.str(f["revocationURL"], field("revocationURL"), ""),
		},
	}
}

// checkOAuth2Source checks an oauth2 source: the grant, the files it needs
// (which must exist: a missing key is a start-up error, not a 502 later),
// and its endpoints.
func (l *loader) checkOAuth2Source(s *Source) {
	field := join("sources", s.Name)
	at := func(k string) string { return join(field, k) }
	o := s.OAuth2
	// need reports a required file that is missing or unreadable.
	need := func(key, path, why string) {
		if path == "" {
			l.errf(at(key), "required for %s", why)
			return
		}
		l.checkReadable(at(key), path)
	}
	only := func(key, value, grants string) {
		if value != "" {
			l.errf(at(key), "only applies to grant %s, not %s", grants, o.Grant)
		}
	}
	switch o.Grant {
	case "client_credentials":
		if o.ClientID == "" {
			l.errf(at("clientID"), "required for grant client_credentials")
		}
		need("clientSecretFile", o.ClientSecretFile, "grant client_credentials")
		only("refreshTokenFile", o.RefreshTokenFile, "refresh_token")
	case "refresh_token":
		if o.ClientID == "" {
			l.errf(at("clientID"), "required for grant refresh_token")
		}
		need("refreshTokenFile", o.RefreshTokenFile, "grant refresh_token")
		if o.ClientSecretFile != "" {
			l.checkReadable(at("clientSecretFile"), o.ClientSecretFile)
		}
	case "jwt_bearer":
		switch {
		case o.KeyFile != "" && o.PrivateKeyFile != "":
			l.errf(at("privateKeyFile"), "set keyFile or privateKeyFile, not both")
		case o.KeyFile != "":
			l.checkReadable(at("keyFile"), o.KeyFile)
		case o.PrivateKeyFile != "":
			l.checkReadable(at("privateKeyFile"), o.PrivateKeyFile)
			if o.ClientID == "" {
				l.errf(at("clientID"), "required with privateKeyFile: it issues the JWT")
			}
		default:
			l.errf(at("keyFile"), "required for grant jwt_bearer: a service-account JSON key (or privateKeyFile)")
		}
		only("clientSecretFile", o.ClientSecretFile, "client_credentials or refresh_token")
		only("refreshTokenFile", o.RefreshTokenFile, "refresh_token")
	default:
		l.errf(at("grant"), "must be %s, not %q", strings.Join(oauth2Grants, ", "), o.Grant)
	}
	if o.Grant != "jwt_bearer" {
		only("keyFile", o.KeyFile, "jwt_bearer")
		only("privateKeyFile", o.PrivateKeyFile, "jwt_bearer")
	}
	switch {
	case o.TokenURL != "":
		l.checkEndpoint(at("tokenURL"), o.TokenURL)
	case o.Grant != "jwt_bearer" || o.KeyFile == "":
		l.errf(at("tokenURL"), "required")
	}
	if o.RevocationURL != "" {
		l.checkEndpoint(at("revocationURL"), o.RevocationURL)
	}
	if s.CAFile != "" {
		l.checkReadable(at("caFile"), s.CAFile)
	}
}

// checkEndpoint requires https, except to a loopback address (a local test
// or sidecar provider): the endpoint is sent the client's secret.
func (l *loader) checkEndpoint(field, raw string) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		l.errf(field, "want an https:// URL, not %q", raw)
	case u.User != nil:
		l.errf(field, "must not carry credentials in the URL; use clientSecretFile")
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		l.errf(field, "must be https (http only to a loopback address): it is sent the client's credentials")
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (l *loader) checkReadable(field, path string) {
	f, err := os.Open(path)
	if err != nil {
		l.errf(field, "%v", err)
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		l.errf(field, "%s is a directory", path)
	}
}

// checkOAuth2Credential: the value of an oauth2 credential is the access
// token; there is no secret path or field to pick.
func (l *loader) checkOAuth2Credential(cr *Credential, field string) {
	if cr.Path != "" {
		l.errf(join(field, "path"), "does not apply to oauth2 source %s: the value is its access token", cr.Source)
	}
	if cr.Field != "" {
		l.errf(join(field, "field"), "does not apply to oauth2 source %s: the value is its access token", cr.Source)
	}
}
