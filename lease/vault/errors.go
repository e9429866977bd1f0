package vault

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/credproxy/credproxy/internal/secret"
	"github.com/credproxy/credproxy/lease"
)

// vaultError is the text of a failed Vault call: "vault: <op> <path>:
// <Vault's message>". Vault's JSON messages describe the failure, never a
// secret value (and are masked of the client's login secrets anyway); a
// non-JSON body and the request URL, which api.ResponseError prints, are
// left out.
type vaultError struct {
	op, path, msg string
	err           error // a transport or context error; never an *api.ResponseError, whose text quotes the body
}

func (e *vaultError) Error() string { return "vault: " + e.op + " " + e.path + ": " + e.msg }
func (e *vaultError) Unwrap() error { return e.err }

// permanentPhrases are Vault's answers to a renewal that can never succeed.
var permanentPhrases = []string{
	"lease not found",
	"invalid lease",
	"lease expired",
	"lease is expired",
	"not renewable",
}

// wrapErr turns a Vault client error into a *lease.SourceError the manager
// can classify: 403 is a policy denial (lease.ErrDenied), a dead lease is
// lease.ErrPermanent, and anything else (sealed, 5xx, connection refused,
// timeouts) has no kind, so it is retried. Text that came from the store is
// masked by scrub (nil masks nothing).
func wrapErr(op, path string, err error, scrub *secret.Scrubber) error {
	if err == nil {
		return nil
	}
	var se *lease.SourceError
	var ve *vaultError
	if errors.As(err, &se) && errors.As(se.Err, &ve) {
		if ve.op == op && ve.path == path {
			return err
		}
		// A login inside this call failed: name both.
		inner := &vaultError{op: op, path: path, msg: ve.op + " " + ve.path + ": " + ve.msg, err: ve.err}
		return &lease.SourceError{Status: se.Status, Kind: se.Kind, Err: inner}
	}
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return &lease.SourceError{Err: &vaultError{op: op, path: path, msg: scrub.String(err.Error()), err: err}}
	}
	// A non-JSON body (an HTML page from a proxy in front of Vault) is
	// dropped whole: it can quote the request's headers, X-Vault-Token too.
	var msg string
	if !re.RawError {
		msg = scrub.String(cleanMsg(re.Errors))
	}
	if msg == "" {
		msg = cmp.Or(http.StatusText(re.StatusCode), "error")
	}
	e := &vaultError{op: op, path: path, msg: msg}
	out := &lease.SourceError{Status: re.StatusCode, Err: e}
	switch {
	case re.StatusCode == http.StatusForbidden:
		out.Kind = lease.ErrDenied
	case op == "login" && re.StatusCode >= 400 && re.StatusCode < 500:
		// approle/kubernetes credentials refused: retrying in a loop won't help
		out.Kind = lease.ErrDenied
		e.msg = fmt.Sprintf("%s (HTTP %d)", msg, re.StatusCode)
	case isPermanent(msg):
		out.Kind = lease.ErrPermanent
	default:
		e.msg = fmt.Sprintf("%s (HTTP %d)", msg, re.StatusCode)
	}
	return out
}

var multiErrHeader = regexp.MustCompile(`^\d+ errors? occurred:$`)

// cleanMsg joins Vault's error strings on one line, unwrapping go-multierror's
// "1 error occurred:\n\t* permission denied\n\n" layout.
func cleanMsg(errs []string) string {
	var parts []string
	for _, e := range errs {
		for line := range strings.Lines(e) {
			line = strings.TrimSpace(line)
			if line == "" || multiErrHeader.MatchString(line) {
				continue
			}
			parts = append(parts, strings.TrimPrefix(line, "* "))
		}
	}
	return strings.Join(parts, "; ")
}

func isPermanent(msg string) bool {
	msg = strings.ToLower(msg)
	for _, p := range permanentPhrases {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// isForbidden reports a 403: a policy denial, or a token Vault no longer
// accepts (expired, revoked); both say "permission denied".
func isForbidden(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}
