package metrics

import (
	"errors"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

func TestHooksMoveExactlyTheirSeries(t *testing.T) {
	m := New()
	srv := serveMetrics(t, m)
	// Before any hook runs only the pre-built enum children and the
	// label-less gauges exist, all at zero.
	diffSeries(t, series(scrape(t, srv)), map[string]float64{
		`credproxy_cert_cache_requests_total{result="hit"}`:        0,
		`credproxy_cert_cache_requests_total{result="miss"}`:       0,
		`credproxy_config_reloads_total{result="ok"}`:              0,
		`credproxy_config_reloads_total{result="error"}`:           0,
		`credproxy_cert_cache_entries{}`:                           0,
		`credproxy_connect_tunnels_open{}`:                         0,
		`credproxy_config_last_reload_success_timestamp_seconds{}`: 0,
	})

	m.Request("openai", OutcomeInjected, 200)
	m.Request("openai", OutcomeInjected, 201)
	m.Request("openai", OutcomeError, 502)
	m.Request("", OutcomeTunnelled, 0)
	m.Request("", OutcomeDenied, 403)
	m.Request("github", OutcomePassthrough, 404)
	m.Request("github", "bogus", 200) // unknown outcome: bounded to "other"
	m.UpstreamDuration("openai", 250*time.Millisecond)
	m.UpstreamDuration("openai", 750*time.Millisecond)
	m.TunnelOpened()
	m.TunnelOpened()
	m.TunnelClosed()
	m.CertCache(true)
	m.CertCache(true)
	m.CertCache(false)
	m.CertCacheSize(7)
	m.ConfigReload(true)
	m.ConfigReload(false)
	m.ConfigReload(false)
	m.ConfigApplied(time.Unix(1_800_000_000, 500_000_000))
	m.LeaseOp("openai", "acquire", "ok")
	m.LeaseOp("openai", "acquire", "ok")
	m.LeaseOp("reports-db", "renew", "error")
	m.LeasesActive("openai", 2)
	m.LeasesActive("openai", 1)
	m.SourceOp("vault", "acquire", 20*time.Millisecond, nil)
	m.SourceOp("vault", "revoke", 500*time.Millisecond, errors.New("permission denied"))

	diffSeries(t, series(scrape(t, srv)), map[string]float64{
		`credproxy_requests_total{outcome="injected",rule="openai",status_class="2xx"}`:                2,
		`credproxy_requests_total{outcome="error",rule="openai",status_class="5xx"}`:                   1,
		`credproxy_requests_total{outcome="tunnelled",rule="none",status_class="none"}`:                1,
		`credproxy_requests_total{outcome="denied",rule="none",status_class="4xx"}`:                    1,
		`credproxy_requests_total{outcome="passthrough",rule="github",status_class="4xx"}`:             1,
		`credproxy_requests_total{outcome="other",rule="github",status_class="2xx"}`:                   1,
		`credproxy_upstream_request_duration_seconds_count{rule="openai"}`:                             2,
		`credproxy_upstream_request_duration_seconds_sum{rule="openai"}`:                               1,
		`credproxy_connect_tunnels_open{}`:                                                             1,
		`credproxy_cert_cache_requests_total{result="hit"}`:                                            2,
		`credproxy_cert_cache_requests_total{result="miss"}`:                                           1,
		`credproxy_cert_cache_entries{}`:                                                               7,
		`credproxy_config_reloads_total{result="ok"}`:                                                  1,
		`credproxy_config_reloads_total{result="error"}`:                                               2,
		`credproxy_config_last_reload_success_timestamp_seconds{}`:                                     1_800_000_000.5,
		`credproxy_lease_operations_total{credential="openai",op="acquire",result="ok"}`:               2,
		`credproxy_lease_operations_total{credential="reports-db",op="renew",result="error"}`:          1,
		`credproxy_leases_active{credential="openai"}`:                                                 1,
		`credproxy_source_operation_duration_seconds_count{op="acquire",result="ok",source="vault"}`:   1,
		`credproxy_source_operation_duration_seconds_sum{op="acquire",result="ok",source="vault"}`:     0.02,
		`credproxy_source_operation_duration_seconds_count{op="revoke",result="error",source="vault"}`: 1,
		`credproxy_source_operation_duration_seconds_sum{op="revoke",result="error",source="vault"}`:   0.5,
	})
}

func TestUpstreamBucketsSpanHalfMillisecondToThirtySeconds(t *testing.T) {
	m := New()
	m.UpstreamDuration("r", time.Millisecond)
	fams := scrape(t, serveMetrics(t, m))
	f := fams["credproxy_upstream_request_duration_seconds"]
	if f == nil || len(f.GetMetric()) != 1 {
		t.Fatalf("want one upstream histogram series, got %v", f)
	}
	var bounds []float64
	for _, b := range f.GetMetric()[0].GetHistogram().GetBucket() {
		if !math.IsInf(b.GetUpperBound(), +1) { // the text format lists +Inf too
			bounds = append(bounds, b.GetUpperBound())
		}
	}
	if len(bounds) == 0 || bounds[0] != 0.0005 || bounds[len(bounds)-1] != 30 {
		t.Errorf("bucket bounds %v, want 0.0005 .. 30", bounds)
	}
}

func TestGoAndProcessCollectorsRegistered(t *testing.T) {
	fams := scrape(t, serveMetrics(t, New()))
	want := []string{"go_goroutines", "go_memstats_alloc_bytes"}
	if runtime.GOOS == "linux" {
		want = append(want, "process_start_time_seconds", "process_open_fds")
	}
	for _, name := range want {
		if fams[name] == nil {
			t.Errorf("%s missing from /metrics", name)
		}
	}
}

// TestMetricNamesFollowConventions guards future additions: credproxy_
// prefix, counters end in _total, histograms are in seconds.
func TestMetricNamesFollowConventions(t *testing.T) {
	m := New()
	m.Request("r", OutcomeInjected, 200)
	m.UpstreamDuration("r", time.Second)
	m.LeaseOp("c", "acquire", "ok")
	m.LeasesActive("c", 1)
	m.SourceOp("s", "acquire", time.Second, nil)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		name := f.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		if !strings.HasPrefix(name, "credproxy_") {
			t.Errorf("%s: want credproxy_ prefix", name)
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			if !strings.HasSuffix(name, "_total") {
				t.Errorf("counter %s: want _total suffix", name)
			}
		case dto.MetricType_HISTOGRAM:
			if !strings.HasSuffix(name, "_seconds") {
				t.Errorf("histogram %s: want _seconds suffix", name)
			}
		}
	}
}

func TestStatusClass(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   string
	}{
		{0, "none"},
		{100, "1xx"},
		{101, "1xx"},
		{200, "2xx"},
		{204, "2xx"},
		{299, "2xx"},
		{301, "3xx"},
		{400, "4xx"},
		{401, "4xx"},
		{421, "4xx"},
		{499, "4xx"},
		{500, "5xx"},
		{502, "5xx"},
		{599, "5xx"},
		{-1, "other"},
		{42, "other"},
		{99, "other"},
		{600, "other"},
		{999, "other"},
	} {
		if got := StatusClass(tc.status); got != tc.want {
			t.Errorf("StatusClass(%d) = %q, want %q", tc.status, got, tc.want)
		}
	}
}

func TestNilMetricsIsNoOp(t *testing.T) {
	var m *Metrics
	m.Request("r", OutcomeInjected, 200)
	m.UpstreamDuration("r", time.Second)
	m.TunnelOpened()
	m.TunnelClosed()
	m.CertCache(true)
	m.CertCacheSize(1)
	m.ConfigReload(true)
	m.ConfigApplied(time.Now())
	m.LeaseOp("c", "acquire", "ok")
	m.LeasesActive("c", 1)
	m.SourceOp("s", "acquire", time.Second, nil)
}

func TestConcurrentHooks(t *testing.T) {
	m := New()
	rules := []string{"a", "b", "c", ""}
	const workers, per = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				r := rules[(w+i)%len(rules)]
				m.Request(r, OutcomeInjected, 200)
				m.UpstreamDuration(r, time.Millisecond)
				m.TunnelOpened()
				m.TunnelClosed()
			}
		})
	}
	wg.Wait()
	got := series(scrape(t, serveMetrics(t, m)))
	total := 0.0
	for _, r := range []string{"a", "b", "c", "none"} {
		n := got[`credproxy_requests_total{outcome="injected",rule="`+r+`",status_class="2xx"}`]
		if want := float64(workers * per / len(rules)); n != want {
			t.Errorf("rule %q: %v requests, want %v", r, n, want)
		}
		total += got[`credproxy_upstream_request_duration_seconds_count{rule="`+r+`"}`]
	}
	if total != workers*per {
		t.Errorf("upstream observations = %v, want %d", total, workers*per)
	}
	if open := got[`credproxy_connect_tunnels_open{}`]; open != 0 {
		t.Errorf("tunnels open = %v, want 0", open)
	}
}

func BenchmarkRequest(b *testing.B) {
	m := New()
	for _, r := range []string{"openai", "anthropic", "github", "reports-db"} {
		m.Request(r, OutcomeInjected, 200)
	}
	b.ReportAllocs()
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			m.Request("github", OutcomeInjected, 200)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Request("github", OutcomeInjected, 200)
			}
		})
	})
	// What the cache saves: the same count through WithLabelValues.
	b.Run("uncached", func(b *testing.B) {
		for b.Loop() {
			m.requests.WithLabelValues("github", OutcomeInjected, StatusClass(200)).Inc()
		}
	})
}

func BenchmarkUpstreamDuration(b *testing.B) {
	m := New()
	b.ReportAllocs()
	for b.Loop() {
		m.UpstreamDuration("github", 3*time.Millisecond)
	}
}
