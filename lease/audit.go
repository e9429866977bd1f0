package lease

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Audit event names.
const (
	eventCreated = "lease.created"
	eventRenewed = "lease.renewed"
	eventExpired = "lease.expired"
	eventRevoked = "lease.revoked"
	eventFailed  = "lease.failed"
)

// Revocation reasons recorded in lease.revoked events.
const (
	reasonIdle        = "idle"
	reasonShutdown    = "shutdown"
	reasonRotated     = "rotated"
	reasonUpstream401 = "upstream_401"
	reasonManual      = "manual"
	reasonRenewFailed = "renew_failed"
	// reasonConfigChanged: a reload removed the credential or changed its
	// definition (source, path, field, policy or the source's config).
	reasonConfigChanged = "config_changed"
	reasonTaskEnd       = "task_end"     // the task was ended (EndTask)
	reasonTaskExpired   = "task_expired" // the task reached its TTL
	reasonTaskAborted   = "task_aborted" // BeginTask failed to acquire another of the task's credentials
)

// Auditor writes the audit trail: one JSON object per line for every lease
// created, renewed, expired, revoked or failed. It never writes a value. The
// manager writes while holding its lock, so give it a writer that does not
// block for long (a file or stdout).
type Auditor struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// NewAuditor returns an Auditor that writes JSON lines to w.
func NewAuditor(w io.Writer) *Auditor {
	return &Auditor{enc: json.NewEncoder(w)}
}

// auditEvent is one line of the audit trail. It has no field that could hold
// a value: only names, ids, times and error text.
type auditEvent struct {
	Time          time.Time `json:"time"`
	Event         string    `json:"event"`
	LeaseID       string    `json:"lease_id"` // "" for a failed first acquisition
	SourceLeaseID string    `json:"source_lease_id,omitempty"`
	Credential    string    `json:"credential"`
	Source        string    `json:"source"`
	Identity      string    `json:"identity"`
	TTL           float64   `json:"ttl"`                 // seconds
	ExpiresAt     time.Time `json:"expires_at,omitzero"` // absent when there is no lease
	Purpose       string    `json:"purpose"`
	Rule          string    `json:"rule"`
	Task          string    `json:"task,omitempty"` // the task the lease belongs to
	Reason        string    `json:"reason,omitempty"`
	Error         string    `json:"error,omitempty"`
}

// write encodes one event; a nil Auditor discards it.
func (a *Auditor) write(e auditEvent) error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.enc.Encode(e)
}

func (e auditEvent) attrs() []slog.Attr {
	attrs := []slog.Attr{
		slog.String("lease_id", e.LeaseID),
		slog.String("credential", e.Credential),
		slog.String("source", e.Source),
		slog.String("identity", e.Identity),
		slog.Float64("ttl", e.TTL),
		slog.String("rule", e.Rule),
		slog.String("purpose", e.Purpose),
	}
	if e.Task != "" {
		attrs = append(attrs, slog.String("task", e.Task))
	}
	if !e.ExpiresAt.IsZero() {
		attrs = append(attrs, slog.Time("expires_at", e.ExpiresAt))
	}
	if e.SourceLeaseID != "" {
		attrs = append(attrs, slog.String("source_lease_id", e.SourceLeaseID))
	}
	if e.Reason != "" {
		attrs = append(attrs, slog.String("reason", e.Reason))
	}
	if e.Error != "" {
		attrs = append(attrs, slog.String("error", e.Error))
	}
	return attrs
}

// leaseEvent describes l for the audit trail. The identity, rule and purpose
// are those of the lease's last use: for a shared lease, who triggered it.
func (m *Manager) leaseEvent(name string, l *lease, reason string, err error) auditEvent {
	e := auditEvent{
		Time:          m.clock.Now().UTC(),
		Event:         name,
		LeaseID:       l.id,
		SourceLeaseID: l.meta.SourceLeaseID,
		Credential:    l.cred.Name,
		Source:        l.cred.SourceName,
		Identity:      l.lastIdentity,
		TTL:           l.expires.Sub(l.termStart).Seconds(),
		ExpiresAt:     l.expires.UTC(),
		Purpose:       l.lastUse.Purpose,
		Rule:          l.lastUse.Rule,
		Reason:        reason,
	}
	if l.task != nil { // a task's leases say which task, and its purpose
		e.Task = l.task.id
		if l.task.purpose != "" {
			e.Purpose = l.task.purpose
		}
	}
	if err != nil {
		e.Error = err.Error()
	}
	return e
}

// emit writes e to the audit trail and logs it at info. Callers hold m.mu so
// that events of one lease come out in order.
func (m *Manager) emit(e auditEvent) {
	if err := m.audit.write(e); err != nil {
		m.log.Warn("lease: audit write failed", "event", e.Event, "lease_id", e.LeaseID, "error", err)
	}
	m.log.LogAttrs(context.Background(), slog.LevelInfo, e.Event, e.attrs()...)
}
