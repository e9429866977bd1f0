package vault

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/credproxy/credproxy/lease"
)

// vaultError is a failed Vault call: "vault: <op> <path>: <Vault's message>".
// Vault's messages describe the failure, never a secret value, and the
// request URL (which api.ResponseError prints) is left out.
type vaultError struct {
	op, path, msg string
	kind          error // lease.ErrDenied, lease.ErrPermanent or nil
	err           error // the client's error
}

func (e *vaultError) Error() string { return "vault: " + e.op + " " + e.path + ": " + e.msg }

func (e *vaultError) Unwrap() []error {
	if e.kind == nil {
		return []error{e.err}
	}
	return []error{e.kind, e.err}
}

// permanentPhrases are Vault's answers to a renewal that can never succeed.
var permanentPhrases = []string{
	"lease not found",
	"invalid lease",
	"lease expired",
	"lease is expired",
	"not renewable",
}

// wrapErr classifies a Vault client error for the manager: 403 is a policy
// denial (lease.ErrDenied), a dead lease is lease.ErrPermanent, and anything
// else (sealed, 5xx, connection refused, timeouts) is plain, so it is retried.
func wrapErr(op, path string, err error) error {
	if err == nil {
		return nil
	}
	var ve *vaultError
	if errors.As(err, &ve) {
		if ve.op == op && ve.path == path {
			return err
		}
		// A login inside this call failed: name both.
		return &vaultError{op: op, path: path, msg: ve.op + " " + ve.path + ": " + ve.msg, kind: ve.kind, err: ve.err}
	}
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return &vaultError{op: op, path: path, msg: err.Error(), err: err}
	}
	msg := cleanMsg(re.Errors)
	if re.RawError && len(msg) > 200 {
		msg = msg[:200] + "…" // an HTML page from something in front of Vault
	}
	if msg == "" {
		msg = http.StatusText(re.StatusCode)
	}
	e := &vaultError{op: op, path: path, msg: msg, err: err}
	switch {
	case re.StatusCode == http.StatusForbidden:
		e.kind = lease.ErrDenied
	case op == "login" && re.StatusCode >= 400 && re.StatusCode < 500:
		// approle/kubernetes credentials refused: retrying in a loop won't help
		e.kind = lease.ErrDenied
		e.msg = fmt.Sprintf("%s (HTTP %d)", msg, re.StatusCode)
	case isPermanent(msg):
		e.kind = lease.ErrPermanent
	default:
		e.msg = fmt.Sprintf("%s (HTTP %d)", msg, re.StatusCode)
	}
	return e
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
