package clients

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestPythonWebSocket: websocket-client opens wss://api.openai.com/v1/realtime
// with the placeholder key; credproxy injects the real one into the upgrade
// request. The echo answers the client's text frame with "chunk-one", holds
// at the gate, then sends "chunk-two".
func TestPythonWebSocket(t *testing.T) {
	var u *upstream
	u = startUpstream(t, "api.openai.com", apiCA, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+openaiKey {
			apiError(w, "incorrect API key provided")
			return
		}
		wsEcho(t, u.gate, w, r)
	})
	p := startProc(t, procOpts{Upstreams: []*upstream{u}, YAML: openaiRules})
	script := `
import os, websocket
ws = websocket.create_connection("wss://api.openai.com/v1/realtime?model=gpt-test",
    header=["Authorization: Bearer " + os.environ["OPENAI_API_KEY"]], timeout=60)
ws.send("hello realtime")
print(ws.recv(), flush=True)
print(ws.recv(), flush=True)
ws.close()
`
	cmd := exec.Command(python(t), "-c", script)
	cmd.Env = p.agentEnv(t, "OPENAI_API_KEY="+placeholder)
	out := streamed(t, u, &client{name: "python websocket-client", cmd: cmd})
	if !strings.Contains(out, "chunk-one: hello realtime") {
		t.Errorf("websocket: expected the echo of the client's frame; got:\n%s", out)
	}
	if got := u.header(t, "/v1/realtime", "Authorization"); got != "Bearer "+openaiKey {
		t.Errorf("api.openai.com saw the upgrade with Authorization %q; expected the real key", got)
	}
}

// wsGUID is RFC 6455's handshake constant.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// wsEcho answers the upgrade, reads one text frame and sends two back
// around the gate. Errors go to t.Errorf: it runs on a server goroutine.
func wsEcho(t *testing.T, g *gate, w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || r.Header.Get("Sec-WebSocket-Key") == "" {
		http.Error(w, "expected a WebSocket upgrade", http.StatusBadRequest)
		return
	}
	sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + wsGUID))
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("websocket echo: hijack: %v (the upgrade must reach it over HTTP/1.1)", err)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n")
	_ = brw.Flush()
	msg, err := readWSFrame(brw.Reader)
	if err != nil {
		t.Errorf("websocket echo: reading the client's frame: %v", err)
		return
	}
	_, _ = conn.Write(wsTextFrame("chunk-one: " + msg))
	g.wait(r.Context())
	_, _ = conn.Write(wsTextFrame("chunk-two"))
	_, _ = readWSFrame(brw.Reader) // the client's close, if it sends one
}

// readWSFrame reads one masked client frame and returns its payload.
func readWSFrame(br *bufio.Reader) (string, error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return "", err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return "", err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		return "", errors.New("frame too large for this test")
	}
	if h[1]&0x80 == 0 {
		return "", errors.New("client frame not masked")
	}
	var mask [4]byte
	if _, err := io.ReadFull(br, mask[:]); err != nil {
		return "", err
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		return "", err
	}
	for i := range p {
		p[i] ^= mask[i%4]
	}
	return string(p), nil
}

// wsTextFrame is an unmasked server text frame (payload under 126 bytes).
func wsTextFrame(s string) []byte {
	return append([]byte{0x81, byte(len(s))}, s...)
}
