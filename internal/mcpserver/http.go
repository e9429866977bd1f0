package mcpserver

import (
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// MaxRequestBytes bounds an MCP request body, as the admin API bounds its
// own (a tool call's arguments are a few hundred bytes).
const MaxRequestBytes = 1 << 20

// Handler serves s over MCP's streamable HTTP transport. It is stateless:
// every tool is one request and one answer, so no session outlives its
// request. The SDK's DNS-rebinding protection stays on: a request that
// reached a loopback listener with a Host header that is not loopback is
// refused (a web page the agent's browser loads must not drive the tools).
// It does no auth: the admin router puts it behind the admin token.
func Handler(s *mcp.Server) http.Handler {
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{
		Stateless:           true,
		MaxRequestBodyBytes: MaxRequestBytes,
	})
}
