// Package problem owns credproxy's RFC 9457 problem details: the JSON body
// and media type of every refusal the proxy makes and every error the admin
// server answers. It holds only the shape; which problem kinds exist, and
// their statuses, are decided by the proxy and the admin server.
package problem

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ContentType is RFC 9457's media type for Details.
const ContentType = "application/problem+json"

// TypePrefix starts every credproxy problem type. It is a URN, not an
// https:// URL: the type names the problem, and nobody should expect to
// dereference it. Agents and SDKs switch on the type, so a type is never
// renamed or reused for another meaning.
const TypePrefix = "urn:credproxy:problem:"

// Details is the problem details object. Rule and Credential are extension
// members (names, never values); Error repeats Detail for clients written
// against the older {"error": …} body.
type Details struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Status     int    `json:"status"`
	Detail     string `json:"detail"`
	Rule       string `json:"rule,omitempty"`
	Credential string `json:"credential,omitempty"`
	Error      string `json:"error"`
}

// New returns the problem of kind slug (its type is TypePrefix+slug), with
// Error set to detail.
func New(slug, title string, status int, detail string) Details {
	return Details{Type: TypePrefix + slug, Title: title, Status: status, Detail: detail, Error: detail}
}

// JSON encodes d as one line, newline included.
func (d Details) JSON() []byte {
	body, _ := json.Marshal(d) // only strings and an int: never fails
	return append(body, '\n')
}

// Header sets the headers every problem response carries on h, for a body
// of n bytes.
func Header(h http.Header, n int) {
	h.Set("Content-Type", ContentType)
	h.Set("Content-Length", strconv.Itoa(n))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
}

// Write answers d on w, with d.Status.
func Write(w http.ResponseWriter, d Details) {
	body := d.JSON()
	Header(w.Header(), len(body))
	w.WriteHeader(d.Status)
	_, _ = w.Write(body)
}
