#!/usr/bin/env bash
# bench/pg/run.sh: pgbench select-only, direct to PostgreSQL vs through
# credproxy's database listener, interleaved in one run.
#
#   source scripts/services.sh && bench/pg/run.sh [SECONDS_PER_RUN] [ROUNDS]
#
# Defaults: 10 s per run, 2 rounds (direct, bare relay, listener, twice), 8
# clients, 2 pgbench threads, simple query protocol. It creates (once) the
# database credproxy_bench (pgbench scale 10) and the login role
# credproxy_bench on $CREDPROXY_PG_URL's server, and runs credproxy from a
# fresh build with a static (env) credential for that role: the lease is
# taken once, so the numbers are the relay's cost. "bare" is bench/pg/bare,
# a plain io.Copy TCP relay: the floor for any userspace proxy. Everything is on
# 127.0.0.1; every run is bounded by -T.
set -euo pipefail
secs="${1:-10}"
rounds="${2:-2}"
clients=8
threads=2
: "${CREDPROXY_PG_URL:?source scripts/services.sh first}"
command -v pgbench >/dev/null || { echo "pgbench not found (apt-get install postgresql-client)" >&2; exit 1; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tmp="$(mktemp -d)"
pid=""
barepid=""
cleanup() {
	for p in $pid $barepid; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT

# A password for this run only (the role's password is reset every run).
pass="sk-test-bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
admin="$CREDPROXY_PG_URL"
benchdb_url="$(sed -E 's#/[^/?]*(\?|$)#/credproxy_bench\1#' <<<"$admin")"
psql -X -q -v ON_ERROR_STOP=1 -d "$admin" <<SQL >/dev/null
SELECT 'CREATE DATABASE credproxy_bench' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'credproxy_bench')\gexec
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'credproxy_bench') THEN CREATE ROLE credproxy_bench LOGIN; END IF;
END \$\$;
ALTER ROLE credproxy_bench PASSWORD '$pass';
SQL
if ! psql -X -qtA -d "$benchdb_url" -c "SELECT 1 FROM pgbench_branches LIMIT 1" >/dev/null 2>&1; then
	echo "initialising pgbench tables (scale 10) in credproxy_bench"
	pgbench -q -i -s 10 "$benchdb_url" >/dev/null 2>&1
fi
psql -X -q -v ON_ERROR_STOP=1 -d "$benchdb_url" -c "GRANT SELECT ON ALL TABLES IN SCHEMA public TO credproxy_bench" >/dev/null

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
pghost="$(sed -E 's#^[a-z]+://[^@]*@([^:/]+).*#\1#' <<<"$admin")"
pgport="$(sed -E 's#^[a-z]+://[^@]*@[^:/]+:([0-9]+).*#\1#' <<<"$admin")"
cat >"$tmp/rules.yaml" <<YAML
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
credentials:
  bench-db: {source: env, env: BENCH_PG_PASSWORD}
databases:
  - name: bench
    listen: 127.0.0.1:$port
    upstream: {host: $pghost, port: $pgport, database: credproxy_bench, user: credproxy_bench, sslmode: disable}
    credential: bench-db
    purpose: pgbench
YAML
(cd "$root" && go build -o "$tmp/credproxy" ./cmd/credproxy && go build -o "$tmp/bare" ./bench/pg/bare)
bareport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
GOMAXPROCS="${BENCH_GOMAXPROCS:-$(nproc)}" "$tmp/bare" -listen "127.0.0.1:$bareport" -upstream "$pghost:$pgport" 2>"$tmp/bare.log" &
barepid=$!
BENCH_PG_PASSWORD="$pass" GOMAXPROCS="${BENCH_GOMAXPROCS:-$(nproc)}" "$tmp/credproxy" run --config "$tmp/rules.yaml" --log-level warn >"$tmp/audit.log" 2>"$tmp/credproxy.log" &
pid=$!
for _ in $(seq 100); do
	pg_isready -q -h 127.0.0.1 -p "$port" && break
	sleep 0.1
done

export PGPASSFILE="$tmp/none"
# Both sides plain TCP on 127.0.0.1 (the listener speaks no TLS and its upstream is sslmode disable).
export PGSSLMODE=disable
# run NAME ARGS...: one pgbench run; prints "tps p50_ms avg_ms".
run() {
	local name="$1"; shift
	local dir="$tmp/$name.$RANDOM"
	mkdir "$dir"
	(cd "$dir" && pgbench -n -S -c "$clients" -j "$threads" -T "$secs" -l "$@" >out.txt 2>err.txt) || { cat "$dir/err.txt" >&2; exit 1; }
	local tps avg p50
	tps="$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' "$dir/out.txt" | head -1)"
	avg="$(sed -nE 's/^latency average = ([0-9.]+) ms/\1/p' "$dir/out.txt")"
	# -l logs one line per transaction; field 3 is its latency in µs.
	p50="$(cat "$dir"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]/1000}')"
	echo "$tps $p50 $avg"
}

# cpu_ms: credproxy's user+system CPU time so far, in ms (10 ms ticks).
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' "/proc/$pid/stat"; }

printf '%-9s %-6s %10s %9s %9s\n' run round tps p50_ms avg_ms
declare -a dt lt dp lp bt bp
cpu=0 txns=0
for r in $(seq "$rounds"); do
	read -r t p a < <(PGPASSWORD="$pass" run direct -h "$pghost" -p "$pgport" -U credproxy_bench credproxy_bench)
	printf '%-9s %-6s %10s %9s %9s\n' direct "$r" "$t" "$p" "$a"; dt+=("$t"); dp+=("$p")
	read -r t p a < <(PGPASSWORD="$pass" run bare -h 127.0.0.1 -p "$bareport" -U credproxy_bench credproxy_bench)
	printf '%-9s %-6s %10s %9s %9s\n' bare "$r" "$t" "$p" "$a"; bt+=("$t"); bp+=("$p")
	c0="$(cpu_ms)"
	read -r t p a < <(PGPASSWORD= run listener -h 127.0.0.1 -p "$port" -U agent whatever)
	printf '%-9s %-6s %10s %9s %9s\n' listener "$r" "$t" "$p" "$a"; lt+=("$t"); lp+=("$p")
	cpu="$(awk -v a="$cpu" -v b="$(cpu_ms)" -v c="$c0" 'BEGIN {print a + b - c}')"
	txns="$(awk -v a="$txns" -v t="$t" -v s="$secs" 'BEGIN {print a + t * s}')"
done
python3 - "${dt[*]}" "${lt[*]}" "${dp[*]}" "${lp[*]}" "${bt[*]}" "${bp[*]}" <<'PY'
import sys, statistics as s
d, l, dp, lp, b, bp = ([float(x) for x in a.split()] for a in sys.argv[1:7])
print(f"throughput ratio listener/direct: {s.mean(l)/s.mean(d):.3f} (target >= 0.8); bare relay/direct: {s.mean(b)/s.mean(d):.3f}; listener/bare: {s.mean(l)/s.mean(b):.3f}")
print(f"added p50 latency: listener {s.mean(lp)-s.mean(dp):.3f} ms (target <= 0.2 ms), bare relay {s.mean(bp)-s.mean(dp):.3f} ms")
PY
awk -v c="$cpu" -v n="$txns" 'BEGIN {printf "credproxy CPU per transaction through the listener: %.1f us (%d ms for %d transactions)\n", c * 1000 / n, c, n}'
grep -q '"level":"ERROR"' "$tmp/credproxy.log" && { echo "credproxy logged errors:" >&2; cat "$tmp/credproxy.log" >&2; exit 1; }
exit 0
