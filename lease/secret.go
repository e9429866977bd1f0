package lease

import (
	"encoding/json"
	"fmt"
	"log/slog"

	sec "github.com/credproxy/credproxy/internal/secret"
)

// secret is a credential value the manager holds: a secret.Value, bytes the
// manager zeroes when the lease ends, printing as [redacted]. It is its own
// type so lease.go can convert a string with secret(s); each method is the
// Value's, so redaction lives in one place.
type secret sec.Value

func (s secret) String() string               { return sec.Value(s).String() }
func (s secret) GoString() string             { return sec.Value(s).GoString() }
func (s secret) Format(f fmt.State, c rune)   { sec.Value(s).Format(f, c) }
func (s secret) LogValue() slog.Value         { return sec.Value(s).LogValue() }
func (s secret) MarshalJSON() ([]byte, error) { return sec.Value(s).MarshalJSON() }
func (s secret) wipe()                        { sec.Value(s).Wipe() }

// Format prints a Ticket with its value and data redacted, for every verb:
// a ticket logged with %v or %+v must not spill the credential.
func (t Ticket) Format(f fmt.State, _ rune) {
	_, _ = fmt.Fprintf(f, "{LeaseID:%s Credential:%s Identity:%s Value:%s}",
		t.LeaseID, t.Credential, t.Identity, sec.Redacted)
}

// LogValue keeps the value out of slog output.
func (t Ticket) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("lease_id", t.LeaseID),
		slog.String("credential", t.Credential),
		slog.String("identity", t.Identity),
		slog.String("value", sec.Redacted),
	)
}

// MarshalJSON keeps the value out of JSON.
func (t Ticket) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{
		"lease_id": t.LeaseID, "credential": t.Credential,
		"identity": t.Identity, "value": sec.Redacted,
	})
}
