package lease

import (
	"context"
	"fmt"
)

// Reconfigure replaces the manager's credentials with creds, as a config
// reload does. A credential whose SourceName, Policy and Definition did not
// change keeps its entry, its Source and its leases; the leases of one that
// was removed or changed are dropped at once (no Get hands them out again)
// and revoked at their sources, audited lease.revoked with reason
// config_changed; a new one is acquired on first use. Scopes of a changed
// credential forget their backoff: it was about the old definition.
//
// It returns once those revocations are done, or ctx is done, so that the
// caller may then close the old sources. A Get that runs concurrently sees
// either the old set or the new one, never a mix for one credential; a Get
// for a removed credential fails with ErrUnknownCredential. A lease that an
// acquisition or rotation started before the swap brings back for a removed
// or replaced definition is revoked unused (config_changed).
func (m *Manager) Reconfigure(ctx context.Context, creds []Credential) error {
	if err := checkCredentials(creds); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	old := *m.creds.Load()
	next := make(map[string]*credEntry, len(creds))
	for _, c := range creds {
		if e := old[c.Name]; e != nil && e.sameDefinition(c) {
			next[c.Name] = e
			continue
		}
		next[c.Name] = newCredEntry(c)
	}
	m.creds.Store(&next)
	var held []*lease
	var grants []Grant
	for _, l := range m.leases {
		if next[l.cred.Name] != l.cred {
			m.dropLocked(l)
			held = append(held, l)
			grants = append(grants, l.grant())
		}
	}
	for key := range m.scopes {
		if next[key.credential] != old[key.credential] {
			delete(m.scopes, key)
		}
	}
	m.ops.add() // before unlocking: a Shutdown that follows waits for these revocations
	m.mu.Unlock()
	defer m.ops.done()
	m.poke()
	if err := m.revokeAll(ctx, held, grants, reasonConfigChanged); err != nil {
		return fmt.Errorf("lease: reconfigure: %w", err)
	}
	return nil
}

// sameDefinition reports whether c describes the credential e was built
// from, so that e's leases may be kept.
func (e *credEntry) sameDefinition(c Credential) bool {
	return e.SourceName == c.SourceName && e.Policy == c.Policy && e.Definition == c.Definition
}
