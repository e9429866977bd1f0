package pg

import (
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// SQLSTATEs credproxy answers with.
const (
	codeProtocolViolation    = "08P01"
	codeCannotConnect        = "08001" // sqlclient_unable_to_establish_sqlconnection
	codeInvalidAuthorization = "28000"
	codeInvalidPassword      = "28P01"
	codeNotSupported         = "0A000"
	codeAdminShutdown        = "57P01"
	codeTooManyConnections   = "53300"
)

// pgError is a FATAL ErrorResponse for the agent. Its message names the
// database and credential; it never carries a value or the upstream's own
// authentication error.
type pgError struct{ code, msg string }

func (e *pgError) Error() string { return e.code + ": " + e.msg }

func (e *pgError) response() *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: e.code, Message: e.msg}
}

func (e *pgError) encode() []byte {
	b, _ := e.response().Encode(nil) // an ErrorResponse always encodes
	return b
}

// refuse writes e to the agent (best effort: it may be gone).
func (s *Server) refuse(w io.Writer, e *pgError) {
	_, _ = w.Write(e.encode())
}

var errShutdown = &pgError{codeAdminShutdown, "credproxy: terminating connection: credproxy is shutting down"}
