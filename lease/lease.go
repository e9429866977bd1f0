package lease

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// defaultTTL is the TTL asked for when a Policy sets none.
const defaultTTL = 15 * time.Minute

// credEntry is a configured credential with its policy's derived numbers.
type credEntry struct {
	Credential
	asked  time.Duration // TTL asked of the source: Policy.TTL capped at MaxTTL
	window time.Duration // at most one forced re-acquisition after a 401 per window
}

func newCredEntry(c Credential) *credEntry {
	asked := c.Policy.TTL
	if asked <= 0 {
		asked = defaultTTL
	}
	if c.Policy.MaxTTL > 0 {
		asked = min(asked, c.Policy.MaxTTL)
	}
	return &credEntry{Credential: c, asked: asked, window: lead(c.Policy.RenewBeforeExpiry, asked)}
}

// lead is how long before the end of a term of length term a lease is renewed
// or rotated: renewBefore, but never more than half the term. Without that
// clamp a store that caps TTLs below renewBefore would have every fresh lease
// due for rotation at once, and the manager would hammer it in a loop.
func lead(renewBefore, term time.Duration) time.Duration {
	if renewBefore <= 0 || renewBefore > term/2 {
		return term / 2
	}
	return renewBefore
}

// scopeKey names the slot a lease lives in: identity is "" unless the
// credential's policy is PerIdentity, task "" unless it is PerTask.
type scopeKey struct{ credential, identity, task string }

func (k scopeKey) String() string { return k.credential + "\x00" + k.identity + "\x00" + k.task }

func (c *credEntry) scopeKey(identity string) scopeKey {
	if !c.Policy.PerIdentity {
		identity = ""
	}
	return scopeKey{credential: c.Name, identity: identity}
}

// scope holds the live lease of one slot. It outlives its leases to remember
// the acquisition backoff and the last forced re-acquisition after a 401.
type scope struct {
	cur      *lease
	failures int       // failed acquisitions in a row
	retryAt  time.Time // no acquisition before this
	lastErr  error     // the last acquisition error, returned during backoff
	last401  time.Time // the last 401 that forced a re-acquisition
}

// lease is one grant held by the manager. Fields are guarded by Manager.mu.
type lease struct {
	id   string
	cred *credEntry
	key  scopeKey
	task *task // the task it belongs to (key.task); nil for other leases
	meta Grant // SourceLeaseID, TTL and Renewable only; never Value or Data

	// The value is held as bytes so that it can be zeroed when the lease ends.
	// The strings the source returned and those handed out in Tickets cannot
	// be scrubbed: Go strings are immutable and the garbage collector decides
	// when their memory is reused.
	value secret
	data  map[string]secret

	issued    time.Time
	termStart time.Time // issue or last renewal
	expires   time.Time
	deadline  time.Time // issued + MaxTTL; zero when the policy has no MaxTTL
	capped    bool      // the store granted less than asked: its TTL is a hard deadline

	acquiredBy   string // the identity whose request acquired it
	lastUsed     time.Time
	lastIdentity string
	lastUse      Use

	renewals int
	failures int       // failed renewals or rotations in a row
	retryAt  time.Time // next renewal or rotation attempt after a failure
	state    string    // see state.go
	busy     bool      // a renewal or rotation is in flight
	dropped  bool      // no longer held: no Get may hand it out
	retireAt time.Time // rotated out: revoke then (zero: not rotated out)

	holds int           // open Holds (hold.go): in use, never idle; kept past retireAt
	ended chan struct{} // closed when a held lease is dropped (hold.go)
}

func newLeaseID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return "cpl_" + hex.EncodeToString(b[:])
}

func newLease(c *credEntry, key scopeKey, g Grant, now time.Time, identity string, u Use) *lease {
	l := &lease{
		id: newLeaseID(), cred: c, key: key, issued: now, state: stateActive,
		acquiredBy: identity, lastUsed: now, lastIdentity: identity, lastUse: u,
	}
	if c.Policy.MaxTTL > 0 {
		l.deadline = now.Add(c.Policy.MaxTTL)
	}
	l.setGrant(g, now)
	return l
}

// setGrant takes a grant from Acquire or Renew. A renewal that returns no
// value keeps the old one (dynamic stores renew a lease, not its data).
func (l *lease) setGrant(g Grant, now time.Time) {
	if g.Value != "" || len(g.Data) > 0 {
		l.wipe()
		l.value = secret(g.Value)
		l.data = make(map[string]secret, len(g.Data))
		for k, v := range g.Data {
			l.data[k] = secret(v)
		}
	}
	if g.SourceLeaseID != "" || l.meta.SourceLeaseID == "" {
		l.meta.SourceLeaseID = g.SourceLeaseID
	}
	l.meta.TTL, l.meta.Renewable = g.TTL, g.Renewable
	term := l.cred.asked
	if g.TTL > 0 && g.TTL < term {
		term, l.capped = g.TTL, true
	}
	l.termStart = now
	l.expires = now.Add(term)
	if !l.deadline.IsZero() && l.expires.After(l.deadline) {
		l.expires = l.deadline
	}
}

// grant rebuilds the Grant to hand back to the source on Renew or Revoke
// (some stores, such as OAuth2 revocation, need the value itself).
func (l *lease) grant() Grant {
	g := l.meta
	g.Value = string(l.value)
	g.Data = make(map[string]string, len(l.data))
	for k, v := range l.data {
		g.Data[k] = string(v)
	}
	return g
}

func (l *lease) wipe() {
	l.value.wipe()
	for _, v := range l.data {
		v.wipe()
	}
}

// renewAt is when the scheduler next renews or rotates l.
func (l *lease) renewAt() time.Time {
	if !l.retryAt.IsZero() {
		return l.retryAt
	}
	term := l.expires.Sub(l.termStart)
	return l.expires.Add(-lead(l.cred.Policy.RenewBeforeExpiry, term))
}

// mustRotate reports whether l has to be replaced rather than renewed: the
// store capped it, cannot renew it, or a renewal would outlive MaxTTL.
func (l *lease) mustRotate(now time.Time) bool {
	return l.capped || !l.meta.Renewable ||
		(!l.deadline.IsZero() && now.Add(l.cred.asked).After(l.deadline))
}

func (l *lease) idle(now time.Time) bool {
	t := l.cred.Policy.IdleTimeout
	return t > 0 && l.holds == 0 && now.Sub(l.lastUsed) >= t
}

func (l *lease) info() Info {
	in := Info{
		ID: l.id, SourceLeaseID: l.meta.SourceLeaseID, Credential: l.cred.Name,
		Source: l.cred.SourceName, Identity: l.key.identity, AcquiredBy: l.acquiredBy, LastUsedBy: l.lastIdentity,
		Issued: l.issued.UTC(), Expires: l.expires.UTC(), LastUsed: l.lastUsed.UTC(),
		Renewals: l.renewals, State: l.state,
	}
	if l.task != nil {
		in.Task = l.task.id
	}
	return in
}
