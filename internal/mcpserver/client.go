package mcpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/credproxy/credproxy/internal/control"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/proxy"
)

// errUnreachable marks a failure to talk to the admin API at all.
var errUnreachable = errors.New("credproxy's admin API is unreachable")

// maxResponseBytes bounds an admin API answer the client reads.
const maxResponseBytes = 8 << 20

// Client is the Backend of a running credproxy: it calls the control routes
// of its admin HTTP API with the admin token. Errors the admin API answers
// keep their meaning: a 400 wraps control.ErrInvalid, a 404 on a task
// lease.ErrUnknownTask, a 503 lease.ErrClosed.
type Client struct {
	base  string // http://host:port, no trailing slash
	token string
	http  *http.Client
}

// NewClient returns a client of the admin API at base (http://127.0.0.1:9464)
// sending token. It never goes through a proxy: the token is for
// credproxy's own admin listener, and the agent's HTTP_PROXY may name
// credproxy itself.
func NewClient(base, token string) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("admin URL %q: want http://host:port", base)
	}
	if token == "" {
		return nil, errors.New("no admin token: the control API refuses every call without one")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	return &Client{base: strings.TrimSuffix(base, "/"), token: token,
		http: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}, nil
}

func (c *Client) ListCredentials(ctx context.Context) ([]control.CredentialInfo, error) {
	var out []control.CredentialInfo
	return out, c.call(ctx, "GET", "/credentials", nil, &out)
}

func (c *Client) BeginTask(ctx context.Context, r control.TaskRequest) (lease.TaskInfo, error) {
	body := map[string]any{"purpose": r.Purpose, "identity": r.Identity, "credentials": r.Credentials}
	if r.TTL != 0 {
		body["ttl"] = r.TTL.String()
	}
	var out lease.TaskInfo
	return out, c.call(ctx, "POST", "/tasks", body, &out)
}

func (c *Client) EndTask(ctx context.Context, id string) (lease.TaskInfo, error) {
	var out lease.TaskInfo
	err := c.call(ctx, "DELETE", "/tasks/"+url.PathEscape(id), nil, &out)
	var ae *adminError
	if errors.As(err, &ae) && ae.kind == errNotFound {
		ae.kind = lease.ErrUnknownTask
	}
	return out, err
}

func (c *Client) ListTasks(ctx context.Context) ([]lease.TaskInfo, error) {
	var out []lease.TaskInfo
	return out, c.call(ctx, "GET", "/tasks", nil, &out)
}

func (c *Client) ListLeases(ctx context.Context) ([]lease.Info, error) {
	var out []lease.Info
	return out, c.call(ctx, "GET", "/leases", nil, &out)
}

func (c *Client) Explain(ctx context.Context, method, rawURL, identity string) (proxy.Explanation, error) {
	var out proxy.Explanation
	return out, c.call(ctx, "POST", "/explain", map[string]string{"method": method, "url": rawURL, "identity": identity}, &out)
}

// errNotFound marks a 404 from the admin API.
var errNotFound = errors.New("not found")

// adminError is a problem the admin API answered.
type adminError struct {
	status int
	detail string
	kind   error // control.ErrInvalid, errNotFound, lease.ErrClosed or nil
}

func (e *adminError) Error() string { return e.detail }
func (e *adminError) Unwrap() error { return e.kind }

// call sends method path with the token and body as JSON (nil for none),
// and decodes a 2xx answer into out.
func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s: %v", errUnreachable, c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("%w at %s: %v", errUnreachable, c.base, err)
	}
	if resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: answer is not the JSON expected: %v", method, path, err)
		}
		return nil
	}
	var p struct{ Detail string }
	if json.Unmarshal(data, &p) != nil || p.Detail == "" {
		p.Detail = http.StatusText(resp.StatusCode)
	}
	e := &adminError{status: resp.StatusCode, detail: p.Detail}
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		e.kind = control.ErrInvalid
	case http.StatusNotFound:
		e.kind = errNotFound
	case http.StatusServiceUnavailable:
		e.kind = lease.ErrClosed
	case http.StatusUnauthorized, http.StatusForbidden:
		e.detail = fmt.Sprintf("the admin API at %s refused the token (%d): %s", c.base, resp.StatusCode, p.Detail)
		e.kind = errUnreachable
	}
	return e
}
