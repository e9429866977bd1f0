package secret

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// A Value printed any way a log line, an error or an API answer prints it
// shows [redacted], never the credential.
func TestValueNeverPrints(t *testing.T) {
	const raw = "sk-test-abcdefghijklmnop"
	v := NewValue(raw)
	type holder struct {
		V   Value
		Ptr *Value
	}
	h := holder{V: v, Ptr: &v}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("lease", "value", v, "holder", h)
	js, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := v.MarshalText()
	outputs := map[string]string{
		"%v": fmt.Sprintf("%v", v), "%s": fmt.Sprintf("%s", v), "%q": fmt.Sprintf("%q", v),
		"%x": fmt.Sprintf("%x", v), "%X": fmt.Sprintf("%X", v), "%d": fmt.Sprintf("%d", v),
		"%#v": fmt.Sprintf("%#v", v), "%+v struct": fmt.Sprintf("%+v", h), "%#v struct": fmt.Sprintf("%#v", h),
		"Sprint": fmt.Sprint(v), "error %w": fmt.Errorf("acquire: %v: %w", v, errors.New("x")).Error(),
		"slog": logged.String(), "json": string(js), "text": string(text),
	}
	for how, out := range outputs {
		if strings.Contains(out, raw) || strings.Contains(out, "736b") || !strings.Contains(out, Redacted) {
			t.Errorf("%s printed %q: want %s and no value", how, out, Redacted)
		}
	}
	if v.Reveal() != raw {
		t.Errorf("Reveal() = %q, want the raw value", v.Reveal())
	}
	v.Wipe()
	if strings.Trim(v.Reveal(), "\x00") != "" {
		t.Errorf("after Wipe the bytes are %q, want zeros", v.Reveal())
	}
}
