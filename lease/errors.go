package lease

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	isecret "github.com/credproxy/credproxy/internal/secret"
)

// SourceError is a Source's failure in a shape the manager can classify
// without reading the store's text: the store's HTTP status and a kind.
// Sources return it for every failure that came from the store. Err is for
// logs and the audit trail: it must already be free of the source's own
// secrets (login tokens, secret IDs) and never quote a raw store body, since
// an error page in front of a store can quote the request's headers.
type SourceError struct {
	Status int   // the store's HTTP status; 0 when it gave none (unreachable, timeout)
	Kind   error // ErrDenied, ErrPermanent, or nil for a transient failure (retried)
	Err    error // what failed, e.g. "vault: read database/creds/ro: Vault is sealed"
}

func (e *SourceError) Error() string { return e.Err.Error() }

func (e *SourceError) Unwrap() []error {
	if e.Kind == nil {
		return []error{e.Err}
	}
	return []error{e.Kind, e.Err}
}

// credError is every error Get returns: it names the credential and its
// source so that PublicMessage can build fixed text from the pair.
type credError struct {
	credential, source string
	err                error
}

func (e *credError) Error() string { return fmt.Sprintf("credential %q: %v", e.credential, e.err) }
func (e *credError) Unwrap() error { return e.err }
func credErr(c *credEntry, err error) error {
	return &credError{credential: c.Name, source: c.SourceName, err: err}
}

// scrubbedError is a source's error with every value the manager holds
// masked in its text. The chain below it (for errors.Is and As) is kept.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// scrubSourceErr masks, in err's text, every lease value the manager holds
// plus the values of g (a grant being renewed or revoked, perhaps already
// dropped): an error page that echoes a request must not carry a credential
// into the log, the audit trail or an HTTP answer.
func (m *Manager) scrubSourceErr(err error, g Grant) error {
	if err == nil {
		return nil
	}
	vals := []string{g.Value}
	for _, v := range g.Data {
		vals = append(vals, v)
	}
	m.mu.Lock()
	for _, l := range m.leases {
		vals = append(vals, string(l.value))
		for _, v := range l.data {
			vals = append(vals, string(v))
		}
	}
	m.mu.Unlock()
	return &scrubbedError{msg: isecret.NewScrubber(vals...).String(err.Error()), err: err}
}

// PublicMessage turns an error returned by Manager.Get into fixed text that
// may be shown to the agent: the credential's name, its source's name and at
// most the class of the store's HTTP status. It never includes the store's
// text, which can quote anything (an HTML page echoing X-Vault-Token), so
// the proxy answers with this and logs the (scrubbed) error itself.
func PublicMessage(err error) string {
	if err == nil {
		return ""
	}
	name, store := "", "the secret store"
	var ce *credError
	if errors.As(err, &ce) {
		name = ce.credential
		if ce.source != "" {
			store = "store " + ce.source
		}
	}
	status := 0
	var se *SourceError
	if errors.As(err, &se) {
		status = se.Status
	}
	var what string
	var te *taskError
	switch {
	case errors.As(err, &te):
		what = te.msg // names the task and the caller only
	case errors.Is(err, ErrUnknownCredential):
		what = "unknown"
	case errors.Is(err, ErrClosed):
		what = "lease manager is shutting down"
	case errors.Is(err, ErrDenied):
		what = "access denied by " + store
	case errors.Is(err, context.DeadlineExceeded):
		what = "source timed out"
	case errors.Is(err, context.Canceled):
		what = "request cancelled while acquiring"
	case errors.Is(err, errRevokedWhileAcquiring):
		what = "lease revoked while being acquired"
	default:
		what = store + " unavailable"
	}
	if status >= 100 && status < 600 && status != http.StatusOK {
		what += fmt.Sprintf(" (HTTP %dxx)", status/100)
	}
	return fmt.Sprintf("credential %q: %s", name, what)
}
