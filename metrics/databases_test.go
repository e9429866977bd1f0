package metrics

import (
	"testing"
	"time"
)

func TestDatabasesMoveTheirSeries(t *testing.T) {
	m := New()
	d := NewDatabases(m)
	srv := serveMetrics(t, m)
	d.ConnOpened("reports")
	d.ConnOpened("reports")
	in, out := d.Relayed("reports")
	in(60)
	in(40)
	out(5000)
	d.ConnClosed("reports", 2*time.Second)
	d.AuthFailed("warehouse")
	got := series(scrape(t, srv))
	for k, want := range map[string]float64{
		`credproxy_database_connections_open{database="reports"}`:                   1,
		`credproxy_database_connection_duration_seconds_count{database="reports"}`:  1,
		`credproxy_database_connection_duration_seconds_sum{database="reports"}`:    2,
		`credproxy_database_bytes_total{database="reports",direction="from_agent"}`: 100,
		`credproxy_database_bytes_total{database="reports",direction="to_agent"}`:   5000,
		`credproxy_database_auth_failures_total{database="warehouse"}`:              1,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
	var nilD *Databases
	nilD.ConnOpened("x")
	nilD.ConnClosed("x", time.Second)
	a, b := nilD.Relayed("x")
	a(1)
	b(1)
	nilD.AuthFailed("x")
}
