package lease

import (
	"cmp"
	"slices"
)

// List describes every held lease, sorted by credential, identity and issue
// time. It never includes a value.
func (m *Manager) List() []Info {
	m.mu.Lock()
	out := make([]Info, 0, len(m.leases))
	for _, l := range m.leases {
		out = append(out, l.info())
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Info) int {
		return cmp.Or(cmp.Compare(a.Credential, b.Credential), cmp.Compare(a.Identity, b.Identity),
			a.Issued.Compare(b.Issued), cmp.Compare(a.ID, b.ID))
	})
	return out
}
