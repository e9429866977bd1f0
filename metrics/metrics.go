// Package metrics owns credproxy's Prometheus registry and collectors, and
// the /metrics handler that exposes them (internal/admin serves it). Labels carry only
// rule, credential and source names and fixed enums: never a credential value
// and never a host sent by the agent, so a scrape cannot leak a secret and an
// agent cannot grow the series count. It does not decide or forward anything.
package metrics

import (
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Outcomes, the outcome label of credproxy_requests_total. Request counts any
// other value as "other", so a caller's typo cannot mint new series.
const (
	OutcomeInjected    = "injected"
	OutcomePassthrough = "passthrough"
	OutcomeTunnelled   = "tunnelled"
	OutcomeDenied      = "denied"
	OutcomeError       = "error"
)

var outcomes = [...]string{OutcomeInjected, OutcomePassthrough, OutcomeTunnelled, OutcomeDenied, OutcomeError, "other"}

// statusClasses is indexed by statusClassIndex.
var statusClasses = [...]string{"none", "1xx", "2xx", "3xx", "4xx", "5xx", "other"}

// durationBuckets span 0.5ms (a local upstream or a cached Vault read) to 30s
// (a slow model response before its first byte).
var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Metrics records credproxy's measurements in its own registry. All methods
// are safe for concurrent use; the recording methods are no-ops on a nil
// *Metrics, so a caller may leave it unset.
type Metrics struct {
	reg *prometheus.Registry

	requests    *prometheus.CounterVec
	upstream    *prometheus.HistogramVec
	tunnels     prometheus.Gauge
	certHit     prometheus.Counter
	certMiss    prometheus.Counter
	certEntries prometheus.Gauge
	reloadOK    prometheus.Counter
	reloadErr   prometheus.Counter
	reloadTime  prometheus.Gauge

	leasesActive *prometheus.GaugeVec
	leaseOps     *prometheus.CounterVec
	sourceDur    *prometheus.HistogramVec

	// rules maps a rule name to its cached series. It is copy-on-write: the
	// hot path is one atomic load and a map read, with no lock and no
	// allocation; a write happens once per rule name.
	rules   atomic.Pointer[map[string]*ruleSeries]
	rulesMu sync.Mutex
}

// ruleSeries caches one rule's children so Request and UpstreamDuration skip
// the label hashing of WithLabelValues. Each child is fetched on first use, so
// only series that moved are exported. Concurrent first uses get the same
// child from the vec, so a race to fill a slot is benign.
type ruleSeries struct {
	name     string
	upstream atomic.Pointer[prometheus.Observer]
	requests [len(outcomes)][len(statusClasses)]atomic.Pointer[prometheus.Counter]
}

// New returns Metrics with every credproxy collector, plus the Go runtime and
// process collectors, registered in a fresh registry.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "credproxy_requests_total",
		Help: "Requests and CONNECTs handled, by matched rule (none if no rule), outcome and response status class.",
	}, []string{"rule", "outcome", "status_class"})
	m.upstream = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "credproxy_upstream_request_duration_seconds",
		Help:    "Time from sending a request upstream to receiving its response headers, by rule.",
		Buckets: durationBuckets,
	}, []string{"rule"})
	m.tunnels = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "credproxy_connect_tunnels_open",
		Help: "CONNECT tunnels currently open (passed through untouched).",
	})
	certReqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "credproxy_cert_cache_requests_total",
		Help: "Leaf certificate cache lookups, by result (hit or miss).",
	}, []string{"result"})
	m.certHit, m.certMiss = certReqs.WithLabelValues("hit"), certReqs.WithLabelValues("miss")
	m.certEntries = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "credproxy_cert_cache_entries",
		Help: "Leaf certificates currently held in the cache.",
	})
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "credproxy_config_reloads_total",
		Help: "Configuration reload attempts, by result (ok or error).",
	}, []string{"result"})
	m.reloadOK, m.reloadErr = reloads.WithLabelValues("ok"), reloads.WithLabelValues("error")
	m.reloadTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "credproxy_config_last_reload_success_timestamp_seconds",
		Help: "When the config in force was applied (at start, then by each successful reload), in Unix seconds.",
	})
	m.leasesActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "credproxy_leases_active",
		Help: "Live leases held, by credential.",
	}, []string{"credential"})
	m.leaseOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "credproxy_lease_operations_total",
		Help: "Lease operations, by credential, op (acquire, renew, revoke, expire) and result (ok or error).",
	}, []string{"credential", "op", "result"})
	m.sourceDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "credproxy_source_operation_duration_seconds",
		Help:    "Duration of calls to a credential source, by source, op (acquire, renew, revoke) and result (ok or error).",
		Buckets: durationBuckets,
	}, []string{"source", "op", "result"})

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.upstream, m.tunnels, certReqs, m.certEntries, reloads, m.reloadTime,
		m.leasesActive, m.leaseOps, m.sourceDur,
	)
	empty := map[string]*ruleSeries{}
	m.rules.Store(&empty)
	return m
}

// Handler serves the registry in the Prometheus exposition format (the
// admin server's /metrics). A nil *Metrics serves a fresh registry, with
// only the runtime and process collectors moving.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		m = New()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry returns the registry every collector is registered in, for
// promhttp or for registering more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Request counts one request or CONNECT. rule "" is recorded as "none";
// status 0 (no HTTP response, e.g. a tunnel) as status class "none".
func (m *Metrics) Request(rule, outcome string, status int) {
	if m == nil {
		return
	}
	rs := m.rule(rule)
	o, sc := outcomeIndex(outcome), statusClassIndex(status)
	c := rs.requests[o][sc].Load()
	if c == nil {
		child := m.requests.WithLabelValues(rs.name, outcomes[o], statusClasses[sc])
		c = &child
		rs.requests[o][sc].Store(c)
	}
	(*c).Inc()
}

// UpstreamDuration observes how long rule's upstream took to answer.
func (m *Metrics) UpstreamDuration(rule string, d time.Duration) {
	if m == nil {
		return
	}
	rs := m.rule(rule)
	h := rs.upstream.Load()
	if h == nil {
		child := m.upstream.WithLabelValues(rs.name)
		h = &child
		rs.upstream.Store(h)
	}
	(*h).Observe(d.Seconds())
}

// TunnelOpened records a CONNECT tunnel opening; pair it with TunnelClosed.
// WatchLimits exports what the proxy's limits bound, read at scrape time:
// upstream requests in flight (limits.maxInflight) and agent connections held
// (limits.maxConnections), each beside its limit.
func (m *Metrics) WatchLimits(inflight, conns func() int64, maxInflight, maxConns int) {
	if m == nil {
		return
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(
		gauge("credproxy_upstream_requests_inflight", "Upstream requests whose response is still open.",
			func() float64 { return float64(inflight()) }),
		gauge("credproxy_upstream_requests_inflight_limit", "limits.maxInflight: more are refused with 503.",
			func() float64 { return float64(maxInflight) }),
		gauge("credproxy_agent_connections_open", "Agent connections held: CONNECT tunnels and intercepted connections.",
			func() float64 { return float64(conns()) }),
		gauge("credproxy_agent_connections_limit", "limits.maxConnections: more CONNECTs are refused with 503.",
			func() float64 { return float64(maxConns) }),
	)
}

func (m *Metrics) TunnelOpened() {
	if m != nil {
		m.tunnels.Inc()
	}
}

// TunnelClosed records a CONNECT tunnel closing.
func (m *Metrics) TunnelClosed() {
	if m != nil {
		m.tunnels.Dec()
	}
}

// CertCache counts one leaf certificate cache lookup.
func (m *Metrics) CertCache(hit bool) {
	switch {
	case m == nil:
	case hit:
		m.certHit.Inc()
	default:
		m.certMiss.Inc()
	}
}

// CertCacheSize reports how many leaf certificates the cache holds.
func (m *Metrics) CertCacheSize(n int) {
	if m != nil {
		m.certEntries.Set(float64(n))
	}
}

// ConfigReload counts one configuration reload attempt.
func (m *Metrics) ConfigReload(ok bool) {
	switch {
	case m == nil:
	case ok:
		m.reloadOK.Inc()
	default:
		m.reloadErr.Inc()
	}
}

// ConfigApplied records when the config in force was applied: at start, and
// after each successful reload.
func (m *Metrics) ConfigApplied(at time.Time) {
	if m != nil {
		m.reloadTime.Set(float64(at.UnixNano()) / 1e9)
	}
}

// LeaseOp implements lease.Observer.
func (m *Metrics) LeaseOp(credential, op, result string) {
	if m != nil {
		m.leaseOps.WithLabelValues(credential, op, result).Inc()
	}
}

// LeasesActive implements lease.Observer.
func (m *Metrics) LeasesActive(credential string, n int) {
	if m != nil {
		m.leasesActive.WithLabelValues(credential).Set(float64(n))
	}
}

// SourceOp implements lease.Observer; a nil err is result "ok", any other
// "error". The error itself is not recorded: its text is not a fixed enum.
func (m *Metrics) SourceOp(source, op string, d time.Duration, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.sourceDur.WithLabelValues(source, op, result).Observe(d.Seconds())
}

// rule returns the cached series for a rule name, creating them on first use.
func (m *Metrics) rule(name string) *ruleSeries {
	if name == "" {
		name = "none"
	}
	if rs, ok := (*m.rules.Load())[name]; ok {
		return rs
	}
	m.rulesMu.Lock()
	defer m.rulesMu.Unlock()
	old := *m.rules.Load()
	if rs, ok := old[name]; ok {
		return rs
	}
	// Clone the name: the caller's string may share memory with a larger
	// buffer (a parsed config) that the cache would otherwise pin.
	name = strings.Clone(name)
	rs := &ruleSeries{name: name}
	next := maps.Clone(old)
	next[name] = rs
	m.rules.Store(&next)
	return rs
}

func outcomeIndex(outcome string) int {
	for i, o := range outcomes[:len(outcomes)-1] {
		if o == outcome {
			return i
		}
	}
	return len(outcomes) - 1
}

// StatusClass maps an HTTP status to its status_class label: 0 is "none" (no
// HTTP response, e.g. a tunnel), 100-599 is "1xx".."5xx", anything else "other".
func StatusClass(status int) string { return statusClasses[statusClassIndex(status)] }

func statusClassIndex(status int) int {
	switch {
	case status == 0:
		return 0
	case status >= 100 && status < 600:
		return status / 100
	default:
		return len(statusClasses) - 1
	}
}
