package lease

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"
)

// A task is a block of work begun and ended explicitly (by the control API).
// A credential whose policy is PerTask gets one lease per task: the lease is
// acquired on the task's first use (or at BeginTask when the task names the
// credential) and revoked, at its source, when the task ends (reason
// task_end) or reaches its TTL (reason task_expired), whichever is first.
// Every audit event of a task's lease carries the task's id and purpose.

// Errors for a PerTask credential that Get cannot place in an open task. They
// come wrapped with the credential's name and the task's id; PublicMessage
// shows them to the agent.
var (
	ErrNoTask      = errors.New("no task named")
	ErrUnknownTask = errors.New("unknown task")
	ErrTaskEnded   = errors.New("task ended")
	// ErrNotTaskScoped: BeginTask named a credential that is not PerTask.
	ErrNotTaskScoped = errors.New("credential is not task-scoped")
)

// Task states shown by Tasks.
const (
	TaskOpen    = "open"
	TaskEnded   = "ended"
	TaskExpired = "expired"
)

// taskMemory is how long an ended task is remembered, so that a request
// naming it is told it ended rather than that it never existed.
const taskMemory = time.Hour

// TaskSpec is what BeginTask is asked for.
type TaskSpec struct {
	Purpose string        // why: on every audit event of the task's leases
	TTL     time.Duration // the task ends by itself after this; 0 means 15m; capped (see BeginTask)
	// Identity restricts the task to one caller; "" lets any caller use it.
	Identity string
	// Credentials are PerTask credentials acquired at once: BeginTask fails,
	// holding nothing, if one cannot be acquired.
	Credentials []string
}

// TaskInfo describes a task for the control API. It has no value.
type TaskInfo struct {
	ID          string    `json:"id"`
	Purpose     string    `json:"purpose"`
	Identity    string    `json:"identity,omitempty"`
	Credentials []string  `json:"credentials"`
	TTL         string    `json:"ttl"` // the effective TTL, after caps, as a Go duration
	Begun       time.Time `json:"begun"`
	Expires     time.Time `json:"expires"`
	Ended       time.Time `json:"ended,omitzero"`
	State       string    `json:"state"`  // open, ended or expired
	Leases      []string  `json:"leases"` // ids of the leases it holds
}

type task struct {
	id, purpose, identity string
	credentials           []string
	begun, expires, ended time.Time
	state                 string
}

// taskError says why a request cannot use a task; its text names the task
// and the caller, never a value.
type taskError struct {
	kind error
	msg  string
}

func (e *taskError) Error() string { return e.msg }
func (e *taskError) Unwrap() error { return e.kind }

func newTaskID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "tsk_" + hex.EncodeToString(b[:])
}

// BeginTask opens a task. Its TTL is capped at Options.MaxTaskTTL and at the
// MaxTTL of every credential it names. The credentials it names are acquired
// before it returns; if one fails, the others are revoked (reason
// task_aborted), the task is forgotten and the error returned.
func (m *Manager) BeginTask(ctx context.Context, spec TaskSpec) (TaskInfo, error) {
	ttl := spec.TTL
	if ttl <= 0 {
		ttl = defaultTTL
	}
	if m.maxTask > 0 {
		ttl = min(ttl, m.maxTask)
	}
	for _, name := range spec.Credentials {
		c, ok := m.creds[name]
		switch {
		case !ok:
			return TaskInfo{}, &credError{credential: name, err: ErrUnknownCredential}
		case !c.Policy.PerTask:
			return TaskInfo{}, credErr(c, ErrNotTaskScoped)
		case c.Policy.MaxTTL > 0:
			ttl = min(ttl, c.Policy.MaxTTL)
		}
	}
	now := m.clock.Now()
	t := &task{id: newTaskID(), purpose: spec.Purpose, identity: spec.Identity,
		credentials: slices.Clone(spec.Credentials), begun: now, expires: now.Add(ttl), state: TaskOpen}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return TaskInfo{}, ErrClosed
	}
	m.tasks[t.id] = t
	m.poke() // the scheduler sets its timer for the task's expiry
	m.mu.Unlock()

	for _, name := range t.credentials {
		if _, err := m.Get(ctx, name, spec.Identity, Use{Purpose: spec.Purpose, Task: t.id}); err != nil {
			held, grants := m.closeTask(t, TaskEnded)
			m.mu.Lock()
			delete(m.tasks, t.id)
			m.mu.Unlock()
			rctx, cancel := m.revokeContext(ctx)
			defer cancel()
			err = errors.Join(fmt.Errorf("task: acquire %q: %w", name, err), m.revokeAll(rctx, held, grants, reasonTaskAborted))
			return TaskInfo{}, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.taskInfoLocked(t), nil
}

// EndTask ends task id and revokes every lease it holds at once, at their
// sources, audited with reason task_end; it returns when all are revoked (or
// ctx ends). Ending a task that has already ended changes nothing. An
// unknown id wraps ErrUnknownTask.
func (m *Manager) EndTask(ctx context.Context, id string) (TaskInfo, error) {
	m.mu.Lock()
	t, ok := m.tasks[id]
	m.mu.Unlock()
	if !ok {
		return TaskInfo{}, fmt.Errorf("task %q: %w", id, ErrUnknownTask)
	}
	held, grants := m.closeTask(t, TaskEnded)
	rctx, cancel := m.revokeContext(ctx)
	defer cancel()
	err := m.revokeAll(rctx, held, grants, reasonTaskEnd)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("task %q: %w", id, err)
	}
	return m.taskInfoLocked(t), err
}

// revokeContext is for revoking leases credproxy has already dropped: a
// caller that goes away (an admin client hanging up) must not leave them
// alive at the store, so it keeps ctx's values but not its cancellation,
// bounded by the source timeout.
func (m *Manager) revokeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), m.timeout)
}

// closeTask marks t state (if it is still open) and drops every lease it
// holds; the caller revokes them.
func (m *Manager) closeTask(t *task, state string) ([]*lease, []Grant) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closeTaskLocked(t, state, now)
}

func (m *Manager) closeTaskLocked(t *task, state string, now time.Time) (held []*lease, grants []Grant) {
	if t.state == TaskOpen {
		t.state, t.ended = state, now
	}
	for _, l := range m.leases {
		if l.task == t {
			m.dropLocked(l)
			held = append(held, l)
			grants = append(grants, l.grant())
		}
	}
	return held, grants
}

// expireTaskLocked ends t at its TTL; its leases are revoked in the
// background, audited with reason task_expired.
func (m *Manager) expireTaskLocked(t *task, now time.Time) {
	held, grants := m.closeTaskLocked(t, TaskExpired, now)
	for i, l := range held {
		g := grants[i]
		m.goOp(func(ctx context.Context) { _ = m.revokeAt(ctx, l, g, reasonTaskExpired) })
	}
}

// tickTasksLocked expires the tasks past their TTL, forgets those ended
// long ago, and returns the next expiry.
func (m *Manager) tickTasksLocked(now time.Time) (next time.Time) {
	for id, t := range m.tasks {
		switch {
		case t.state == TaskOpen && !now.Before(t.expires):
			m.expireTaskLocked(t, now)
		case t.state == TaskOpen:
			next = earliest(next, t.expires)
		case now.Sub(t.ended) >= taskMemory:
			delete(m.tasks, id)
		}
	}
	return next
}

// Tasks describes every task still remembered (open, or ended within the
// last hour), by begin time.
func (m *Manager) Tasks() []TaskInfo {
	m.mu.Lock()
	out := make([]TaskInfo, 0, len(m.tasks))
	for _, t := range m.tasks {
		out = append(out, m.taskInfoLocked(t))
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b TaskInfo) int { return cmp.Or(a.Begun.Compare(b.Begun), cmp.Compare(a.ID, b.ID)) })
	return out
}

func (m *Manager) taskInfoLocked(t *task) TaskInfo {
	in := TaskInfo{ID: t.id, Purpose: t.purpose, Identity: t.identity, Credentials: slices.Clone(t.credentials),
		TTL: t.expires.Sub(t.begun).String(), Begun: t.begun.UTC(), Expires: t.expires.UTC(), State: t.state, Leases: []string{}}
	if in.Credentials == nil {
		in.Credentials = []string{}
	}
	if !t.ended.IsZero() {
		in.Ended = t.ended.UTC()
	}
	for _, l := range m.leases {
		if l.task == t {
			in.Leases = append(in.Leases, l.id)
		}
	}
	slices.Sort(in.Leases)
	return in
}

// taskFor finds the open task a request for a PerTask credential runs in:
// the one it names, or else the caller's one open task (one restricted to
// the caller, or open to every caller).
func (m *Manager) taskFor(identity, named string) (*task, error) {
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if named != "" {
		t, ok := m.tasks[named]
		if !ok || (t.identity != "" && t.identity != identity) {
			return nil, &taskError{ErrUnknownTask, fmt.Sprintf("task %q is not open for identity %q", named, identity)}
		}
		return t, m.openLocked(t, now)
	}
	var found []*task
	for _, t := range m.tasks {
		if (t.identity == "" || t.identity == identity) && m.openLocked(t, now) == nil {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, &taskError{ErrNoTask, fmt.Sprintf("needs a task and identity %q has none open", identity)}
	}
	return nil, &taskError{ErrNoTask, fmt.Sprintf("needs a task and identity %q has %d open: name one", identity, len(found))}
}

// openLocked reports whether t is open, ending it here if its TTL has run
// out and the scheduler has not got to it yet.
func (m *Manager) openLocked(t *task, now time.Time) error {
	if t.state == TaskOpen && !now.Before(t.expires) {
		m.expireTaskLocked(t, now)
	}
	if t.state != TaskOpen {
		return &taskError{ErrTaskEnded, fmt.Sprintf("task %q has %s", t.id, t.state)}
	}
	return nil
}

// taskOfLocked is the open task a new lease in key belongs to; nil for a
// key with no task.
func (m *Manager) taskOfLocked(key scopeKey, now time.Time) (*task, error) {
	if key.task == "" {
		return nil, nil
	}
	t, ok := m.tasks[key.task]
	if !ok {
		return nil, &taskError{ErrTaskEnded, fmt.Sprintf("task %q has ended", key.task)}
	}
	return t, m.openLocked(t, now)
}
