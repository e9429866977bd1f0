package secret

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
)

// Value is a credential value. It is bytes, not a string, so that its holder
// can zero it (Wipe) when the lease ends; it prints as [redacted] through
// fmt (every verb, %#v too), slog, encoding/json and text marshalling, so it
// cannot reach a log line, an error or an API answer by accident. Reveal is
// the one way to the raw value: grep for it to audit who sends it where.
//
// fmt cannot call methods on an unexported struct field, so keep a Value in
// an exported field, or give the struct its own formatters.
type Value []byte

// NewValue copies s into a Value.
func NewValue(s string) Value { return Value(s) }

// Reveal returns the raw value, for the one place that sends it upstream.
func (v Value) Reveal() string { return string(v) }

// Wipe zeroes the value's bytes. Copies made by Reveal are not reached.
func (v Value) Wipe() { clear(v) }

func (Value) String() string               { return Redacted }
func (Value) GoString() string             { return Redacted }
func (Value) Format(f fmt.State, _ rune)   { _, _ = io.WriteString(f, Redacted) }
func (Value) LogValue() slog.Value         { return slog.StringValue(Redacted) }
func (Value) MarshalJSON() ([]byte, error) { return json.Marshal(Redacted) }
func (Value) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
