package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
)

// refusal is every way credproxy declines a request: a policy refusal, a
// credential it cannot get, an upstream it cannot reach. It is turned into a
// response, a status, an outcome label and a log line in exactly one place,
// Proxy.refuse, so that no path forgets to count or log itself.
//
// reason is shown to the agent; it is built from rule, credential and host
// names only, never from a value or an upstream's body.
type refusal struct {
	status     int
	outcome    string // the outcome label of credproxy_requests_total
	rule       string
	credential string
	reason     string
}

func (r *refusal) Error() string { return r.reason }

func deny(status int, rule, reason string) *refusal {
	return &refusal{status: status, outcome: outcomeDenied, rule: rule, reason: reason}
}

func failure(status int, rule, credential, reason string) *refusal {
	return &refusal{status: status, outcome: outcomeError, rule: rule, credential: credential, reason: reason}
}

// errorBody is the JSON every refusal carries.
type errorBody struct {
	Error      string `json:"error"`
	Status     int    `json:"status"`
	Rule       string `json:"rule,omitempty"`
	Credential string `json:"credential,omitempty"`
}

// errorResponse builds a complete JSON error response for req.
func errorResponse(req *http.Request, r *refusal) *http.Response {
	body, _ := json.Marshal(errorBody{Error: r.reason, Status: r.status, Rule: r.rule, Credential: r.credential})
	body = append(body, '\n')
	h := make(http.Header, 4)
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Credproxy-Error", "1")
	if r.status == http.StatusProxyAuthRequired {
		h.Set("Proxy-Authenticate", `Basic realm="credproxy"`)
	}
	return &http.Response{
		Status:        strconv.Itoa(r.status) + " " + http.StatusText(r.status),
		StatusCode:    r.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// writeResponse copies a complete (small, in-memory) response to w.
func writeResponse(w http.ResponseWriter, resp *http.Response) {
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	_ = resp.Body.Close()
}

// upstreamErrorText describes a transport error without the request URL:
// *url.Error prints the URL, and with query-parameter injection the URL holds
// the credential.
func upstreamErrorText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Op + ": " + oe.Err.Error()
	}
	return err.Error()
}
