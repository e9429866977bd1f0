package proxy

import (
	"fmt"
	"net/url"

	"github.com/credproxy/credproxy/rules"
)

// Explanation is what credproxy would do with a request, decided by the same
// code as a real request (handleConnect's intercept choice, decideRule) but
// without reading any credential. It names rules, credentials and slots,
// never a value.
type Explanation struct {
	// Action is tunnel (HTTPS passed through untouched), pass (forwarded
	// without a credential), inject, sign, or refuse.
	Action      string `json:"action"`
	Destination string `json:"destination"`
	Rule        string `json:"rule,omitempty"`
	Credential  string `json:"credential,omitempty"`
	Scope       string `json:"scope,omitempty"`  // the credential's: shared, identity or task
	Inject      string `json:"inject,omitempty"` // the slot: "header Authorization", "query key", "sign aws_sigv4"
	Purpose     string `json:"purpose,omitempty"`
	// Problem, Status and Detail describe a refusal as the agent would get it.
	Problem string `json:"problem,omitempty"`
	Status  int    `json:"status,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// Explain says what cfg does with method target (an absolute http:// or
// https:// URL) sent by identity. An error means the target itself is not
// a request credproxy could be sent.
func Explain(cfg *rules.Config, method, target, identity string) (Explanation, error) {
	u, err := url.Parse(target)
	if err != nil || !u.IsAbs() || u.Host == "" || u.User != nil {
		return Explanation{}, fmt.Errorf("url %q: want an absolute http:// or https:// URL without credentials", target)
	}
	port := map[string]int{"http": 80, "https": 443}[u.Scheme]
	if port == 0 {
		return Explanation{}, fmt.Errorf("url %q: scheme %q: credproxy proxies http and https", target, u.Scheme)
	}
	dest, err := rules.ParseDest(u.Host, port)
	if err != nil {
		return Explanation{}, err
	}
	e := Explanation{Destination: dest.String()}
	if u.Scheme == "https" && !cfg.Intercepts(dest) {
		if cfg.Unmatched == rules.UnmatchedDeny {
			return e.refused(unmatchedDenied(dest.String())), nil
		}
		e.Action = "tunnel"
		return e, nil
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	rule, ref := decideRule(cfg, &route{dest: dest, scheme: u.Scheme, identity: identity}, method, path)
	switch {
	case ref != nil:
		return e.refused(ref), nil
	case rule == nil:
		e.Action = "pass"
		return e, nil
	}
	e.Action, e.Rule, e.Credential, e.Purpose = "inject", rule.Name, rule.Credential, rule.Purpose
	if c := cfg.Credentials[rule.Credential]; c != nil {
		e.Scope = c.Scope
	}
	switch {
	case rule.Sign != nil:
		e.Action, e.Inject = "sign", "sign aws_sigv4"
	case rule.Inject.Header != "":
		e.Inject = "header " + rule.Inject.Header
	default:
		e.Inject = "query " + rule.Inject.Query
	}
	return e, nil
}

func (e Explanation) refused(r *refusal) Explanation {
	e.Action, e.Rule, e.Problem, e.Status, e.Detail = "refuse", r.rule, r.kind.slug, r.status, r.reason
	return e
}
