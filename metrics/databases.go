package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// connDurationBuckets span a one-query connection (10ms) to a long session
// (a day).
var connDurationBuckets = []float64{.01, .1, 1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600}

// Databases records the PostgreSQL listeners' measurements, labelled by the
// `databases:` entry's name (from the config, never from the agent). It
// implements proxy/pg's Observer; a nil *Databases records nothing.
type Databases struct {
	open     *prometheus.GaugeVec
	duration *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	authFail *prometheus.CounterVec
}

// NewDatabases registers the database collectors in m's registry. Call it
// once per Metrics.
func NewDatabases(m *Metrics) *Databases {
	d := &Databases{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "credproxy_database_connections_open",
			Help: "Agent connections relayed to the upstream database now, by database.",
		}, []string{"database"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "credproxy_database_connection_duration_seconds",
			Help:    "How long relayed database connections lasted, by database.",
			Buckets: connDurationBuckets,
		}, []string{"database"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credproxy_database_bytes_total",
			Help: "Bytes relayed by database connections, by database and direction (from_agent, to_agent).",
		}, []string{"database", "direction"}),
		authFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credproxy_database_auth_failures_total",
			Help: "Upstream logins with a leased credential that the database refused, by database.",
		}, []string{"database"}),
	}
	m.reg.MustRegister(d.open, d.duration, d.bytes, d.authFail)
	return d
}

// ConnOpened counts a relayed connection as open.
func (d *Databases) ConnOpened(db string) {
	if d != nil {
		d.open.WithLabelValues(db).Inc()
	}
}

// ConnClosed records a relayed connection's end and duration.
func (d *Databases) ConnClosed(db string, dur time.Duration) {
	if d == nil {
		return
	}
	d.open.WithLabelValues(db).Dec()
	d.duration.WithLabelValues(db).Observe(dur.Seconds())
}

// Relayed returns counters of db's bytes relayed each way, resolved once so
// that the relay's per-chunk call is one atomic add.
func (d *Databases) Relayed(db string) (fromAgent, toAgent func(n int)) {
	if d == nil {
		return func(int) {}, func(int) {}
	}
	in, out := d.bytes.WithLabelValues(db, "from_agent"), d.bytes.WithLabelValues(db, "to_agent")
	return func(n int) { in.Add(float64(n)) }, func(n int) { out.Add(float64(n)) }
}

// AuthFailed counts an upstream login refused.
func (d *Databases) AuthFailed(db string) {
	if d != nil {
		d.authFail.WithLabelValues(db).Inc()
	}
}
