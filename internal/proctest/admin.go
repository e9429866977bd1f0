package proctest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// adminClient opens a new connection for each call, so a caller counting
// the child's fds and goroutines holds none of its own in between, and it
// ignores HTTP_PROXY: the admin listener is on loopback.
var adminClient = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// Admin sends method path to the admin listener, with token as the bearer
// token unless it is empty, and returns the status and up to 64 MiB of body.
func (p *Proc) Admin(ctx context.Context, method, path, token string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+p.adminAddr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, body, err
}

// Goroutines reads the total from /debug/pprof/goroutine?debug=1, which
// needs `run --pprof` and the admin token.
func (p *Proc) Goroutines(ctx context.Context, token string) (int, error) {
	status, body, err := p.Admin(ctx, "GET", "/debug/pprof/goroutine?debug=1", token)
	if err != nil {
		return 0, err
	}
	if status != http.StatusOK {
		return 0, fmt.Errorf("/debug/pprof/goroutine: status %d", status)
	}
	return goroutineTotal(body)
}

// goroutineTotal parses the first line of a debug=1 goroutine dump.
func goroutineTotal(dump []byte) (int, error) {
	first, _, _ := strings.Cut(string(dump), "\n")
	n, ok := strings.CutPrefix(first, "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("goroutine dump starts %q, expected \"goroutine profile: total N\"", first)
	}
	return strconv.Atoi(strings.TrimSpace(n))
}
