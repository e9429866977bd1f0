// Package lease owns credproxy's short-lived holds on credentials: the Manager
// that acquires, reuses, renews, rotates, idles out and revokes leases, the
// Source interface that secret stores implement (sources live in subpackages
// such as lease/static), and the JSON-lines audit trail of every lease event.
// It knows nothing of HTTP proxying: the proxy asks it for a Ticket per request.
package lease
