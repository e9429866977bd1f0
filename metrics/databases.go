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
			Help: "Bytes relayed on closed database connections, by database and direction (from_agent, to_agent).",
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

// ConnClosed records a relayed connection's end: its duration and bytes.
func (d *Databases) ConnClosed(db string, dur time.Duration, fromAgent, toAgent int64) {
	if d == nil {
		return
	}
	d.open.WithLabelValues(db).Dec()
	d.duration.WithLabelValues(db).Observe(dur.Seconds())
	d.bytes.WithLabelValues(db, "from_agent").Add(float64(fromAgent))
	d.bytes.WithLabelValues(db, "to_agent").Add(float64(toAgent))
}

// AuthFailed counts an upstream login refused.
func (d *Databases) AuthFailed(db string) {
	if d != nil {
		d.authFail.WithLabelValues(db).Inc()
	}
}
