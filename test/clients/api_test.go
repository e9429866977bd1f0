package clients

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
)

// The fake APIs answer in the real services' shapes, enough for their SDKs
// to parse. A streamed answer sends "chunk-one", holds until the test has
// seen the client print it (the upstream's gate), then sends "chunk-two".

const openaiRules = `credentials:
  openai: {source: env, env: CP_OPENAI_KEY}
  anthropic: {source: env, env: CP_ANTHROPIC_KEY}
rules:
  - name: openai
    hosts: [api.openai.com]
    credential: openai
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
  - name: anthropic
    hosts: [api.anthropic.com]
    credential: anthropic
    inject: {header: x-api-key, value: "{{ .Value }}"}
    remove: [Authorization]
`

// startOpenAI is api.openai.com: POST /v1/chat/completions, JSON or SSE.
func startOpenAI(t *testing.T) *upstream {
	var u *upstream
	u = startUpstream(t, "api.openai.com", apiCA, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+openaiKey {
			apiError(w, "incorrect API key provided")
			return
		}
		if !wantsStream(r) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-test","choices":[{"index":0,"message":{"role":"assistant","content":"hello from the fake openai"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
			return
		}
		chunk := func(content string) string {
			return fmt.Sprintf(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-test","choices":[{"index":0,"delta":{"content":%q},"finish_reason":null}]}`+"\n\n", content)
		}
		sse(w, r, u.gate, chunk("chunk-one"), chunk("chunk-two")+"data: [DONE]\n\n")
	})
	return u
}

// startAnthropic is api.anthropic.com: POST /v1/messages, JSON or SSE.
func startAnthropic(t *testing.T) *upstream {
	var u *upstream
	u = startUpstream(t, "api.anthropic.com", apiCA, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != anthropicKey || r.Header.Get("Authorization") != "" {
			apiError(w, "invalid x-api-key")
			return
		}
		if !wantsStream(r) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-test","content":[{"type":"text","text":"hello from the fake anthropic"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}`)
			return
		}
		ev := func(name, data string) string { return "event: " + name + "\ndata: " + data + "\n\n" }
		delta := func(text string) string {
			return ev("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":%q}}`, text))
		}
		first := ev("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-test","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":0}}}`) +
			ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`) +
			delta("chunk-one")
		rest := delta("chunk-two") +
			ev("content_block_stop", `{"type":"content_block_stop","index":0}`) +
			ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":2}}`) +
			ev("message_stop", `{"type":"message_stop"}`)
		sse(w, r, u.gate, first, rest)
	})
	return u
}

// wantsStream reads a JSON body's "stream" field.
func wantsStream(r *http.Request) bool {
	var body struct{ Stream bool }
	data, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	_ = json.Unmarshal(data, &body)
	return body.Stream
}

// sse writes first, flushes, waits at the gate and writes rest.
func sse(w http.ResponseWriter, r *http.Request, g *gate, first, rest string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	fmt.Fprint(w, first)
	http.NewResponseController(w).Flush()
	g.wait(r.Context())
	fmt.Fprint(w, rest)
}

func apiError(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprintf(w, `{"error":{"message":%q,"type":"invalid_request_error"}}`, msg)
}

// checkKeys asserts the upstreams saw the real keys in their slots.
func checkOpenAIKey(t *testing.T, u *upstream) {
	t.Helper()
	if got := u.header(t, "/v1/chat/completions", "Authorization"); got != "Bearer "+openaiKey {
		t.Errorf("api.openai.com saw Authorization %q; expected the real key injected in place of the placeholder", got)
	}
}

func checkAnthropicKey(t *testing.T, u *upstream) {
	t.Helper()
	if got := u.header(t, "/v1/messages", "X-Api-Key"); got != anthropicKey {
		t.Errorf("api.anthropic.com saw x-api-key %q; expected the real key injected in place of the placeholder", got)
	}
}
