package lease

import (
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
