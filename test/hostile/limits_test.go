package hostile

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode"
)

const (
	hugeHeader = 64 << 20  // one header line of 64 MiB, streamed
	rssLimit   = 100 << 20 // the proxy's RSS while it is sent
)

// okUpstream answers 200 "ok" on a loopback IP.
func okUpstream(t *testing.T, addr string) *upstream {
	return startUpstream(t, addr, true, false, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
}

// streamHugeHeader writes a request head with one header line of total
// bytes, in 64 KiB writes, while a reader waits for the proxy's answer.
// It returns how much was written before the proxy answered or closed, the
// answer's status (0 for a close) and the highest RSS sampled.
func streamHugeHeader(t *testing.T, p *proc, a *agentConn, start string, total int) (int, int, int64) {
	t.Helper()
	answered := make(chan int, 1)
	go func() {
		resp, _, err := readHead(a.br)
		a.record()
		if err != nil {
			answered <- 0
			return
		}
		answered <- resp.StatusCode
	}()
	a.write(t, start)
	chunk := bytes.Repeat([]byte{'a'}, 64<<10)
	written, peak := 0, p.rss()
	for written < total {
		_ = a.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
		n, err := a.conn.Write(chunk)
		written += n
		if written%(4<<20) == 0 {
			peak = max(peak, p.rss())
		}
		select {
		case st := <-answered:
			return written, st, max(peak, p.rss())
		default:
		}
		if err != nil {
			break
		}
	}
	select {
	case st := <-answered:
		return written, st, max(peak, p.rss())
	case <-time.After(20 * time.Second):
		return written, -1, max(peak, p.rss())
	}
}

func checkHugeHeader(t *testing.T, where string, written, status int, peak int64) {
	t.Helper()
	t.Logf("%s: wrote %d MiB before the proxy answered %d; peak RSS %d MiB", where, written>>20, status, peak>>20)
	if status != http.StatusRequestHeaderFieldsTooLarge && status != 0 {
		t.Errorf("%s: expected 431 or a closed connection for a 64 MiB header line, got status %d", where, status)
	}
	if written >= hugeHeader {
		t.Errorf("%s: expected the proxy to stop reading long before 64 MiB; it read all %d MiB", where, written>>20)
	}
	if peak > rssLimit {
		t.Errorf("%s: expected the proxy's RSS to stay under %d MiB; it peaked at %d MiB", where, rssLimit>>20, peak>>20)
	}
}

func TestHeaderExhaustionInsideTunnel(t *testing.T) {
	up := okUpstream(t, "127.77.2.1:0")
	p := startProc(t, procOpts{Env: secretsEnv, YAML: credentialsYAML + "rules:\n" + bearerRule("api", up.addr, "", "")})
	a := p.tlsTunnel(t, up.addr, up.ip)
	w, st, peak := streamHugeHeader(t, p, a, "GET /v1/x HTTP/1.1\r\nHost: "+up.addr+"\r\nX-Big: ", hugeHeader)
	checkHugeHeader(t, "inside an intercepted tunnel", w, st, peak)
}

func TestHeaderExhaustionPlainListener(t *testing.T) {
	up := okUpstream(t, "127.77.2.2:0")
	p := startProc(t, procOpts{Env: secretsEnv, YAML: credentialsYAML + "rules:\n" + bearerRule("api", up.addr, "", "")})
	a := p.dialProxy(t)
	w, st, peak := streamHugeHeader(t, p, a, "CONNECT "+up.addr+" HTTP/1.1\r\nHost: "+up.addr+"\r\nX-Big: ", hugeHeader)
	checkHugeHeader(t, "on the proxy listener", w, st, peak)
}

// slowloris sends one header byte every 200 ms and wants the connection
// closed by the proxy (headerTimeout: 1s) before 20 s have passed.
func slowloris(t *testing.T, a *agentConn, start, where string) {
	t.Helper()
	a.write(t, start)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; i < 150; i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := a.conn.Write([]byte{'a'}); err != nil {
				return
			}
		}
	}()
	_ = a.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, a.br)
	a.record()
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s: a client sending one header byte per 200 ms was still connected after 20 s; expected headerTimeout: 1s to close it", where)
	}
}

const slowLimits = "limits: {headerTimeout: 1s}\n"

func TestSlowlorisInsideTunnel(t *testing.T) {
	up := okUpstream(t, "127.77.2.3:0")
	p := startProc(t, procOpts{Env: secretsEnv, YAML: slowLimits + credentialsYAML + "rules:\n" + bearerRule("api", up.addr, "", "")})
	a := p.tlsTunnel(t, up.addr, up.ip)
	slowloris(t, a, "GET /v1/x HTTP/1.1\r\nHost: "+up.addr+"\r\nX-Slow: ", "inside an intercepted tunnel")
}

func TestSlowlorisPlainListener(t *testing.T) {
	up := okUpstream(t, "127.77.2.4:0")
	p := startProc(t, procOpts{Env: secretsEnv, YAML: slowLimits + credentialsYAML + "rules:\n" + bearerRule("api", up.addr, "", "")})
	a := p.dialProxy(t)
	slowloris(t, a, "GET http://"+up.addr+"/v1/x HTTP/1.1\r\nHost: "+up.addr+"\r\nX-Slow: ", "on the proxy listener")
}

// TestPurposeHuge sends an 8 MiB X-Credproxy-Purpose: refused with 431 (or
// a close), or accepted with the audit's purpose cut to 256 bytes.
func TestPurposeHuge(t *testing.T) {
	up := okUpstream(t, "127.77.2.5:0")
	p := startProc(t, procOpts{Env: secretsEnv, YAML: credentialsYAML + "rules:\n" + bearerRule("api", up.addr, "", "")})
	a := p.tlsTunnel(t, up.addr, up.ip)
	w, st, peak := streamHugeHeader(t, p, a, "GET /v1/x HTTP/1.1\r\nHost: "+up.addr+"\r\nX-Credproxy-Purpose: ", 8<<20)
	t.Logf("8 MiB purpose: wrote %d KiB, status %d, peak RSS %d MiB", w>>10, st, peak>>20)
	if st != http.StatusRequestHeaderFieldsTooLarge && st != 0 && st != 200 {
		t.Errorf("8 MiB purpose: expected 431 (or a close, or truncation), got status %d", st)
	}
	checkPurposes(t, p)
}

// TestPurposeControlCharacters sends 10 KiB purposes, printable and with
// terminal escapes: the audit keeps at most 256 bytes and no control
// characters.
func TestPurposeControlCharacters(t *testing.T) {
	up := okUpstream(t, "127.77.2.6:0")
	p := startProc(t, procOpts{Env: secretsEnv, YAML: credentialsYAML + "rules:\n" + bearerRule("api", up.addr, "", "")})
	long := strings.Repeat("monthly report ", 700)
	resp, body, _ := p.roundTrip(t, up.addr, get(up.addr, "/v1/x", "X-Credproxy-Purpose: "+long))
	if resp.StatusCode != 200 && resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("10 KiB purpose: expected 200 (truncated) or 431, got %d %q", resp.StatusCode, trunc(body))
	}
	// A second lease so the escapes reach an audit line: revoke the first.
	revokeAll(t, p)
	evil := strings.Repeat("\x1b[31mred\x1b[0m\rspoofed line\x07", 400)
	a := p.tlsTunnel(t, up.addr, up.ip)
	a.write(t, get(up.addr, "/v1/x", "X-Credproxy-Purpose: "+evil))
	resp, body, err := a.response(t)
	switch {
	case err != nil:
		t.Logf("purpose with control characters: connection closed without a response (%v)", err)
	case resp.StatusCode >= 500:
		t.Errorf("purpose with control characters: expected 200 (sanitised) or a 4xx refusal, got %d %q", resp.StatusCode, trunc(body))
	default:
		t.Logf("purpose with control characters: status %d", resp.StatusCode)
	}
	checkPurposes(t, p)
	for _, r := range up.seen() {
		if r.Header.Get("X-Credproxy-Purpose") != "" {
			t.Errorf("X-Credproxy-Purpose reached the upstream (%d bytes); expected it stripped", len(r.Header.Get("X-Credproxy-Purpose")))
		}
	}
}

// checkPurposes wants every audit purpose at most 256 bytes, with no
// control characters.
func checkPurposes(t *testing.T, p *proc) {
	t.Helper()
	for _, ev := range auditEvents(p.stdout.String()) {
		purpose, _ := ev["purpose"].(string)
		if len(purpose) > 256 {
			t.Errorf("audit %v purpose is %d bytes; expected at most 256", ev["event"], len(purpose))
		}
		if i := strings.IndexFunc(purpose, unicode.IsControl); i >= 0 {
			t.Errorf("audit %v purpose holds control character %q at %d; expected none", ev["event"], purpose[i], i)
		}
	}
}

// revokeAll revokes every held lease through the admin API.
func revokeAll(t *testing.T, p *proc) {
	t.Helper()
	for _, id := range leaseIDs(t, p) {
		if st, body, err := p.admin("POST", "/leases/"+id+"/revoke", true); err != nil || st != 200 {
			t.Errorf("POST /leases/%s/revoke with the token: expected 200, got %d %q %v", id, st, trunc(body), err)
		}
	}
}
