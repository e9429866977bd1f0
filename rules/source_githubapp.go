package rules

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// SourceGitHubApp is the `type:` of a source that mints GitHub App
// installation tokens.
const SourceGitHubApp = "github_app"

// Defaults of a github_app source.
const (
	DefaultGitHubBaseURL = "https://api.github.com"
	DefaultGitHubTimeout = 10 * time.Second
)

// GitHubApp is the type-specific part of a `sources:` entry of type
// github_app. Its credentials take no path: the value is a fresh
// installation token, minted with the app's key.
type GitHubApp struct {
	AppID          int64
	InstallationID int64
	PrivateKeyFile string // absolute; checked at load to hold an RSA key (PKCS#1 or PKCS#8 PEM)
	BaseURL        string // default DefaultGitHubBaseURL; GHES: https://HOST/api/v3
	// Permissions and Repositories narrow every token below the
	// installation's grant: {contents: read}, [repo-name, …].
	Permissions  map[string]string
	Repositories []string
	Timeout      time.Duration // one call to GitHub, default DefaultGitHubTimeout
}

// githubAppSource decodes e when its type is github_app; otherwise it
// returns nil and sources() reads e as a vault source.
func (l *loader) githubAppSource(e entry) *Source {
	if sourceType(e.value) != SourceGitHubApp {
		return nil
	}
	f := l.fields(e.value, e.field, "type", "appID", "installationID", "privateKeyFile", "baseURL",
		"caFile", "permissions", "repositories", "timeout")
	g := &GitHubApp{
		AppID:          int64(l.integer(f["appID"], join(e.field, "appID"), 0)),
		InstallationID: int64(l.integer(f["installationID"], join(e.field, "installationID"), 0)),
		PrivateKeyFile: l.filePath(f["privateKeyFile"], join(e.field, "privateKeyFile"), ""),
		BaseURL:        strings.TrimRight(l.str(f["baseURL"], join(e.field, "baseURL"), DefaultGitHubBaseURL), "/"),
		Repositories:   l.strs(f["repositories"], join(e.field, "repositories")),
		Timeout:        l.duration(f["timeout"], join(e.field, "timeout"), DefaultGitHubTimeout),
	}
	for _, p := range l.entries(f["permissions"], join(e.field, "permissions")) {
		if v, ok := l.scalar(p.value, p.field); ok {
			if g.Permissions == nil {
				g.Permissions = map[string]string{}
			}
			g.Permissions[p.key] = v
		} else if p.value == nil {
			l.errf(p.field, "empty: want read or write")
		}
	}
	return &Source{
		Name:      e.key,
		Type:      SourceGitHubApp,
		CAFile:    l.filePath(f["caFile"], join(e.field, "caFile"), ""),
		GitHubApp: g,
		Line:      l.line(e.field),
	}
}

var (
	permissionName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	repoName       = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// checkGitHubAppSource checks a github_app source, its key file included:
// a key that cannot sign would otherwise only show at the first request.
func (l *loader) checkGitHubAppSource(s *Source, field string) {
	g := s.GitHubApp
	for key, id := range map[string]int64{"appID": g.AppID, "installationID": g.InstallationID} {
		switch {
		case !l.has(join(field, key)):
			l.errf(join(field, key), "required for type github_app: a positive integer")
		case id <= 0:
			l.errf(join(field, key), "must be a positive integer, not %d", id)
		}
	}
	if g.PrivateKeyFile == "" {
		l.errf(join(field, "privateKeyFile"), "required for type github_app: the app's private key (PEM)")
	} else if err := checkRSAKeyFile(g.PrivateKeyFile); err != nil {
		l.errf(join(field, "privateKeyFile"), "%v", err)
	}
	if err := checkGitHubBaseURL(g.BaseURL); err != nil {
		l.errf(join(field, "baseURL"), "%v", err)
	}
	if s.CAFile != "" {
		if _, err := os.Stat(s.CAFile); err != nil {
			l.errf(join(field, "caFile"), "%v", err)
		}
	}
	for _, name := range sortedKeys(g.Permissions) {
		pf := join(join(field, "permissions"), name)
		if !permissionName.MatchString(name) {
			l.errf(pf, "bad permission name %q: want a GitHub permission such as contents or pull_requests", name)
		}
		if v := g.Permissions[name]; v != "read" && v != "write" && v != "admin" {
			l.errf(pf, "must be read, write or admin, not %q", v)
		}
	}
	for i, r := range g.Repositories {
		if !repoName.MatchString(r) {
			l.errf(index(join(field, "repositories"), i), "bad repository name %q: want the name alone, without the owner", r)
		}
	}
	if g.Timeout <= 0 {
		l.errf(join(field, "timeout"), "must be positive, not %v", g.Timeout)
	}
}

// checkRSAKeyFile reports whether path holds an RSA private key as GitHub
// hands them out (PKCS#1) or converted (PKCS#8). Its errors never quote
// the file's content.
func checkRSAKeyFile(path string) error {
	b, err := readSmallFile(path, 64<<10)
	if err != nil {
		return fmt.Errorf("cannot read %s: %v", path, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return fmt.Errorf("%s is not PEM: want the private key (.pem) GitHub generates for the app", path)
	}
	if _, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return nil
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return fmt.Errorf("%s: the %q PEM block is not a private key in PKCS#1 or PKCS#8 form", path, blk.Type)
	}
	kind := "a non-RSA"
	switch k.(type) {
	case *rsa.PrivateKey:
		return nil
	case *ecdsa.PrivateKey:
		kind = "an ECDSA"
	case ed25519.PrivateKey:
		kind = "an Ed25519"
	}
	return fmt.Errorf("%s holds %s key; GitHub App keys are RSA", path, kind)
}

// checkGitHubBaseURL wants https: the app JWT and the tokens would otherwise
// cross the network in clear. Plain http is for a loopback test server.
func checkGitHubBaseURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		return fmt.Errorf("want an https:// URL such as %s (GHES: https://HOST/api/v3), not %q", DefaultGitHubBaseURL, s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("want a URL with no credentials, query or fragment, not %q", s)
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && (hostPattern{host: strings.ToLower(u.Hostname())}).loopback():
		return nil
	}
	return fmt.Errorf("must be https:// (http:// only on loopback), not %q", s)
}

// checkGitHubAppCredential checks a credential of a github_app source: it
// has no path or field, since its value is the minted token.
func (l *loader) checkGitHubAppCredential(cr *Credential, field string) {
	for _, k := range []struct{ key, value string }{{"path", cr.Path}, {"field", cr.Field}, {"env", cr.Env}, {"file", cr.File}} {
		if k.value != "" {
			l.errf(join(field, k.key), "does not apply to a github_app source: the value is a minted installation token")
		}
	}
}
