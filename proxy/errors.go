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

// errorBody is the JSON every refusal carries. Messages are built from rule,
// credential and host names only; a credential value can never be in one.
type errorBody struct {
	Error string `json:"error"`
	Rule  string `json:"rule,omitempty"`
}

// errorResponse builds a complete JSON error response for req.
func errorResponse(req *http.Request, status int, rule, msg string) *http.Response {
	body, _ := json.Marshal(errorBody{Error: msg, Rule: rule})
	body = append(body, '\n')
	h := make(http.Header, 3)
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Credproxy-Error", "1")
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// writeError writes the same JSON error to a ResponseWriter.
func writeError(w http.ResponseWriter, status int, rule, msg string) {
	body, _ := json.Marshal(errorBody{Error: msg, Rule: rule})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Credproxy-Error", "1")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
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
