// Package lease owns credproxy's short-lived holds on credentials: the Manager
// that acquires, reuses, renews, rotates, idles out and revokes leases (their
// states in state.go), tasks that scope leases to a block of work (task.go),
// the Source interface that secret stores implement (sources live in
// subpackages such as lease/static), and the JSON-lines audit trail of every
// lease event. It knows nothing of HTTP: the proxy asks it for a Ticket per
// request, and the control API (internal/control) calls its plain methods.
package lease
