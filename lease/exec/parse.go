package exec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// minValueBytes is the shortest value or field accepted: as for env and file
// credentials (rules.MinSecretBytes), a shorter one cannot be masked in
// responses without mangling them.
const minValueBytes = 8

// output is what a helper printed, parsed. data holds only secrets: every
// value in it is masked in responses, so a version number or a timestamp
// there would mask unrelated text.
type output struct {
	value string
	data  map[string]string
	ttl   time.Duration // 0: the helper gave no expiry
}

// parse reads a helper's stdout: one line (the value), a JSON object
// {value, fields, expires_at | expires_in}, or an AWS credential_process
// object. Its errors are fixed text: never a byte of what was printed,
// which is a secret or close to one.
func parse(out []byte, now time.Time) (output, error) {
	trimmed := bytes.TrimSpace(out)
	switch {
	case len(trimmed) == 0:
		return output{}, errors.New("helper printed nothing")
	case trimmed[0] == '{':
		return parseJSON(trimmed, now)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimRight(l, "\r"); strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > 1 {
		return output{}, fmt.Errorf("helper printed %d non-empty lines; want one (the value) or a JSON object", len(lines))
	}
	if err := checkValue("the value", lines[0]); err != nil {
		return output{}, err
	}
	return output{value: lines[0], data: map[string]string{"value": lines[0]}}, nil
}

// helperJSON is credproxy's own JSON shape.
type helperJSON struct {
	Value     *string           `json:"value"`
	Fields    map[string]string `json:"fields"`
	ExpiresAt *string           `json:"expires_at"`
	ExpiresIn *float64          `json:"expires_in"`
}

// processJSON is the AWS credential_process shape.
type processJSON struct {
	Version         int     `json:"Version"`
	AccessKeyID     string  `json:"AccessKeyId"`
	SecretAccessKey string  `json:"SecretAccessKey"`
	SessionToken    string  `json:"SessionToken"`
	Expiration      *string `json:"Expiration"`
}

func parseJSON(b []byte, now time.Time) (output, error) {
	var keys map[string]json.RawMessage
	// The decoder's errors are dropped throughout: they quote the input.
	if json.Unmarshal(b, &keys) != nil {
		return output{}, errors.New("helper printed something that starts with { but is not a JSON object")
	}
	if _, ok := keys["AccessKeyId"]; ok {
		return parseProcess(b, now)
	}
	if _, ok := keys["Version"]; ok {
		return parseProcess(b, now)
	}
	var h helperJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if dec.Decode(&h) != nil {
		return output{}, errors.New(`helper's JSON does not fit {"value": string, "fields": {name: string}, "expires_at": RFC 3339 | "expires_in": seconds}`)
	}
	o := output{data: map[string]string{}}
	for k, v := range h.Fields {
		if k == "" {
			return output{}, errors.New("helper's JSON has a field with an empty name")
		}
		if err := checkValue("a field", v); err != nil {
			return output{}, err
		}
		o.data[k] = v
	}
	switch {
	case h.Value != nil:
		if err := checkValue("the value", *h.Value); err != nil {
			return output{}, err
		}
		o.value = *h.Value
		if _, taken := o.data["value"]; !taken {
			o.data["value"] = o.value
		}
	case len(o.data) == 1:
		for _, v := range o.data {
			o.value = v
		}
	default:
		return output{}, errors.New(`helper's JSON has no "value" (and not exactly one field to take it from)`)
	}
	var err error
	switch {
	case h.ExpiresAt != nil && h.ExpiresIn != nil:
		return output{}, errors.New("helper's JSON has both expires_at and expires_in; want one")
	case h.ExpiresAt != nil:
		o.ttl, err = until("expires_at", *h.ExpiresAt, now)
	case h.ExpiresIn != nil:
		in := *h.ExpiresIn
		if in <= 0 || math.IsNaN(in) || in > (100*365*24*time.Hour).Seconds() {
			return output{}, errors.New("helper's expires_in is not a positive number of seconds: the credential has expired")
		}
		o.ttl = time.Duration(in * float64(time.Second))
	}
	return o, err
}

// parseProcess reads the AWS credential_process object: the key's parts go
// to data under the names rules' SigV4 signing reads; Version and
// Expiration, which are not secrets, do not.
func parseProcess(b []byte, now time.Time) (output, error) {
	var p processJSON
	if json.Unmarshal(b, &p) != nil {
		return output{}, errors.New("helper's credential_process JSON does not fit {Version: 1, AccessKeyId, SecretAccessKey, SessionToken, Expiration}")
	}
	if p.Version != 1 {
		return output{}, fmt.Errorf("helper's credential_process Version is %d; want 1", p.Version)
	}
	o := output{value: p.SecretAccessKey, data: map[string]string{}}
	for _, f := range []struct{ name, v string }{{"AccessKeyId", p.AccessKeyID}, {"SecretAccessKey", p.SecretAccessKey}, {"SessionToken", p.SessionToken}} {
		if f.v == "" && f.name == "SessionToken" {
			continue
		}
		if f.v == "" {
			return output{}, fmt.Errorf("helper's credential_process JSON has no %s", f.name)
		}
		if err := checkValue(f.name, f.v); err != nil {
			return output{}, err
		}
		o.data[f.name] = f.v
	}
	var err error
	if p.Expiration != nil {
		o.ttl, err = until("Expiration", *p.Expiration, now)
	}
	return o, err
}

// until is the time left to an RFC 3339 instant; one already past is an
// error, since a lease of an expired credential fails every request.
func until(name, s string, now time.Time) (time.Duration, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return 0, fmt.Errorf("helper's %s is not an RFC 3339 time", name)
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0, fmt.Errorf("helper's credential expired at %s (%s)", t.UTC().Format(time.RFC3339), name)
	}
	return d, nil
}

// checkValue wants a value that can be masked (long enough) and sent in a
// header (no control characters). It never quotes the value.
func checkValue(what, v string) error {
	if len(v) < minValueBytes {
		return fmt.Errorf("%s the helper printed is %d bytes: too short to mask safely in responses (want at least %d)", what, len(v), minValueBytes)
	}
	if strings.IndexFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return fmt.Errorf("%s the helper printed holds a control character", what)
	}
	return nil
}

// jsonStrings lists the string values in a JSON object the helper printed
// that did not parse as a credential (a field too short, say): they are
// masked in its logged stderr all the same.
func jsonStrings(out []byte) []string {
	var obj map[string]any
	if json.Unmarshal(bytes.TrimSpace(out), &obj) != nil {
		return nil
	}
	var vals []string
	var walk func(any)
	walk = func(x any) {
		switch x := x.(type) {
		case string:
			vals = append(vals, x)
		case map[string]any:
			for _, v := range x {
				walk(v)
			}
		case []any:
			for _, v := range x {
				walk(v)
			}
		}
	}
	walk(obj)
	return vals
}
