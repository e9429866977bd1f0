package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// hostileDeadline bounds every hostile exchange: a proxy that neither
// answers nor hangs up within it shows as "timeout".
const hostileDeadline = 5 * time.Second

// dotSegments are spellings of ".." that credproxy must refuse, never clean.
var dotSegments = []string{"/v1/%2e%2e/admin", "/v1/..%2Fadmin", "/v1/%2E%2E%2Fadmin", "/v1/.%2e/admin", "/v1/%2e./admin"}

// hostile sends one hostile request by hand and returns what credproxy did:
// a status, "closed" (hung up without an answer), "timeout" or "dropped"
// (the soak hung up first, on purpose). An error means the soak could not
// get as far as the hostile part (dial, CONNECT, TLS handshake).
func (e *soakEnv) hostile(ctx context.Context, kind string) (string, error) {
	get := func(path, host string) []byte {
		return fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\n\r\n", path, host, placeholder)
	}
	switch kind {
	case kindBigHeader:
		return e.inTunnel(ctx, e.bigRequest)
	case kindDotSegment:
		path := dotSegments[int(e.seq.Add(1))%len(dotSegments)]
		return e.inTunnel(ctx, get(path, e.upAddr))
	case kindHostMismatch:
		// Domain fronting: the tunnel is to the ruled upstream, the request
		// names another host.
		return e.inTunnel(ctx, get("/v1/chat", "api.soak.test"))
	case kindCleartext:
		c, err := e.connect(ctx)
		if err != nil {
			return "", err
		}
		return e.exchange(c, get("/v1/chat", e.upAddr)), nil
	case kindNoHello:
		c, err := e.connect(ctx)
		if err != nil {
			return "", err
		}
		defer c.Close()
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
		return "dropped", nil
	case kindPlainHTTP:
		c, err := e.dial(ctx)
		if err != nil {
			return "", err
		}
		return e.exchange(c, get("http://"+e.upAddr+"/v1/chat", e.upAddr)), nil
	}
	return "", fmt.Errorf("unknown kind %q", kind)
}

func (e *soakEnv) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: hostileDeadline}
	c, err := d.DialContext(ctx, "tcp", e.proxyAddr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(hostileDeadline))
	return c, nil
}

// connect opens a tunnel to the upstream through credproxy.
func (e *soakEnv) connect(ctx context.Context) (net.Conn, error) {
	c, err := e.dial(ctx)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", e.upAddr, e.upAddr)
	// A one-byte reader: nothing past the CONNECT answer may be buffered
	// away from the TLS client that takes over the connection.
	resp, err := http.ReadResponse(bufio.NewReaderSize(oneByte{c}, 16), &http.Request{Method: "CONNECT"})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("CONNECT: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("CONNECT: %s", resp.Status)
	}
	return c, nil
}

// inTunnel sends raw inside a MITM'd tunnel (CONNECT, TLS handshake).
func (e *soakEnv) inTunnel(ctx context.Context, raw []byte) (string, error) {
	c, err := e.connect(ctx)
	if err != nil {
		return "", err
	}
	tc := tls.Client(c, &tls.Config{RootCAs: e.roots, ServerName: "127.0.0.1"})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return "", fmt.Errorf("TLS handshake in tunnel: %w", err)
	}
	return e.exchange(tc, raw), nil
}

// exchange writes raw while reading one response, then closes c. Writing
// and reading at once: credproxy may answer (or hang up) before it has
// read a 1 MiB header.
func (e *soakEnv) exchange(c net.Conn, raw []byte) string {
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		_, _ = c.Write(raw)
	}()
	outcome := e.readOutcome(c)
	c.Close()
	<-wrote
	return outcome
}

func (e *soakEnv) readOutcome(c net.Conn) string {
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case err != nil:
		return "closed"
	}
	e.scan.scanHeader("responses", resp.Header)
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e.scan.scan("responses", b)
	return strconv.Itoa(resp.StatusCode)
}

// oneByte reads at most one byte per call.
type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}
