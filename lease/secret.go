package lease

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
)

const redacted = "[redacted]"

// secret is a credential value the manager holds. It is bytes, not a string,
// so that the manager can zero its copy when the lease ends; it prints as
// [redacted] through fmt, slog and encoding/json so that it cannot leak into a
// log line or an error by accident.
type secret []byte

func (s secret) String() string               { return redacted }
func (s secret) Format(f fmt.State, _ rune)   { _, _ = io.WriteString(f, redacted) }
func (s secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (s secret) MarshalJSON() ([]byte, error) { return json.Marshal(redacted) }
func (s secret) GoString() string             { return redacted }
func (s secret) wipe()                        { clear(s) }

// Format prints a Ticket with its value and data redacted, for every verb:
// a ticket logged with %v or %+v must not spill the credential.
func (t Ticket) Format(f fmt.State, _ rune) {
	_, _ = fmt.Fprintf(f, "{LeaseID:%s Credential:%s Identity:%s Value:%s}",
		t.LeaseID, t.Credential, t.Identity, redacted)
}

// LogValue keeps the value out of slog output.
func (t Ticket) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("lease_id", t.LeaseID),
		slog.String("credential", t.Credential),
		slog.String("identity", t.Identity),
		slog.String("value", redacted),
	)
}

// MarshalJSON keeps the value out of JSON.
func (t Ticket) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{
		"lease_id": t.LeaseID, "credential": t.Credential,
		"identity": t.Identity, "value": redacted,
	})
}
