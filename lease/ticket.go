package lease

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	sec "github.com/credproxy/credproxy/internal/secret"
)

// Ticket is what one request gets: copies of the lease's value and data. It
// prints and logs with the value redacted. Pass it back to Unauthorized when
// the upstream rejects it.
type Ticket struct {
	LeaseID    string
	Credential string
	Identity   string // the identity the ticket was issued to
	Value      string
	Data       map[string]string
}

// use stamps a use of l and returns the Ticket for it.
func (l *lease) use(now time.Time, identity string, u Use) Ticket {
	if now.After(l.lastUsed) { // now was read before the lock: never move back
		l.lastUsed = now
	}
	l.lastIdentity, l.lastUse = identity, u
	t := Ticket{LeaseID: l.id, Credential: l.cred.Name, Identity: identity, Value: string(l.value)}
	t.Data = make(map[string]string, len(l.data))
	for k, v := range l.data {
		t.Data[k] = string(v)
	}
	return t
}

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
