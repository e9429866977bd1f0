package lease

// Settle waits until the scheduler has done everything due at the clock's
// current time and every source call started since has finished. Tests call
// it after moving a fake clock; it never sleeps.
func Settle(m *Manager) {
	for range 1000 {
		started := m.ops.started()
		m.syncScheduler()
		<-m.ops.idle()
		if m.ops.started() == started {
			return
		}
	}
	panic("lease: Settle: the manager kept starting source calls")
}

// SyncScheduler waits for one scheduler pass at the clock's current time,
// without waiting for the source calls it starts.
func SyncScheduler(m *Manager) { m.syncScheduler() }

func (m *Manager) syncScheduler() {
	ack := make(chan struct{})
	select {
	case m.syncReq <- ack:
		<-ack
	case <-m.schedDone:
	}
}

func (t *tracker) started() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// Closed reports whether Shutdown has begun.
func Closed(m *Manager) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}
