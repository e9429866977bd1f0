# shellcheck shell=bash
# Test services for credproxy: a real Vault binary and a running PostgreSQL.
#
#   source scripts/services.sh     # from the repository root (scripts/test.sh does this)
#
# Idempotent. It builds Vault (test/vaultdev, a separate module: Vault's
# server is BUSL and never enters credproxy's go.mod) into
# ${CREDPROXY_CACHE:-$HOME/.cache/credproxy}/vault when it is missing or its
# sources changed, starts PostgreSQL, creates the superuser that Vault's
# database engine uses and the credproxy_test database, and exports
#   CREDPROXY_VAULT_BIN  CREDPROXY_OAUTH_BIN  CREDPROXY_PG_URL
# It does not start Vault: each test starts its own dev server.
# Being sourced, it never exits the caller's shell; it returns 1 on failure.

_credproxy_services() {
	local root cache bin stamp want pgver pgport
	root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
	cache="${CREDPROXY_CACHE:-$HOME/.cache/credproxy}"
	bin="$cache/vault"
	stamp="$bin.sources"

	# --- Vault -------------------------------------------------------------
	# Rebuild when test/vaultdev's go.mod, go.sum or main.go change. The stamp
	# holds their hash, so a CI cache restoring an older binary next to a
	# fresh checkout (new mtimes) does not force a rebuild.
	want="$(cd "$root/test/vaultdev" && cat go.mod go.sum main.go | sha256sum | cut -d' ' -f1)" || return 1
	if [[ -x "$bin" && ! -f "$stamp" && "$bin" -nt "$root/test/vaultdev/go.sum" && "$bin" -nt "$root/test/vaultdev/main.go" ]]; then
		echo "$want" >"$stamp" # built before stamps existed, and newer than its sources
	fi
	if [[ -x "$bin" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
		echo "services: vault binary up to date: $bin"
	else
		echo "services: building vault into $bin (cold build: ~7 min on 2 cores)"
		mkdir -p "$cache" || return 1
		(cd "$root/test/vaultdev" && go mod download && go build -o "$bin.tmp" .) || {
			echo "services: vault build failed" >&2
			return 1
		}
		mv "$bin.tmp" "$bin" && echo "$want" >"$stamp" || return 1
		echo "services: built $("$bin" version)"
	fi
	export CREDPROXY_VAULT_BIN="$bin"

	# --- OAuth 2.0 authorization server ------------------------------------
	# test/oauthserver: zitadel/oidc's OpenID provider, a separate module so
	# its dependencies stay out of credproxy's go.mod. Rebuilt when its
	# sources change (same stamp scheme as Vault); tests start their own.
	local obin="$cache/oauthserver" owant
	owant="$(cd "$root/test/oauthserver" && cat go.mod go.sum ./*.go | sha256sum | cut -d' ' -f1)" || return 1
	if [[ -x "$obin" && "$(cat "$obin.sources" 2>/dev/null)" == "$owant" ]]; then
		echo "services: oauthserver binary up to date: $obin"
	else
		echo "services: building oauthserver into $obin"
		mkdir -p "$cache" || return 1
		(cd "$root/test/oauthserver" && go mod download && go build -o "$obin.tmp" .) || {
			echo "services: oauthserver build failed" >&2
			return 1
		}
		mv "$obin.tmp" "$obin" && echo "$owant" >"$obin.sources" || return 1
	fi
	export CREDPROXY_OAUTH_BIN="$obin"

	# --- PostgreSQL --------------------------------------------------------
	local sudo=()
	if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
	pgver="${CREDPROXY_PG_VERSION:-15}"
	if [[ ! -x /usr/lib/postgresql/$pgver/bin/postgres ]]; then
		echo "services: PostgreSQL $pgver is not installed (apt-get install postgresql-$pgver, or set CREDPROXY_PG_VERSION)" >&2
		return 1
	fi
	if ! pg_lsclusters -h 2>/dev/null | awk -v v="$pgver" '$1 == v && $2 == "main" {found=1} END {exit !found}'; then
		echo "services: creating PostgreSQL $pgver cluster main"
		"${sudo[@]}" pg_createcluster "$pgver" main >/dev/null || return 1
	fi
	pgport="$(pg_lsclusters -h | awk -v v="$pgver" '$1 == v && $2 == "main" {print $3}')"
	if pg_lsclusters -h | awk -v v="$pgver" '$1 == v && $2 == "main" && $4 == "online" {found=1} END {exit !found}'; then
		echo "services: PostgreSQL $pgver/main already running on port $pgport"
	else
		echo "services: starting PostgreSQL $pgver/main on port $pgport"
		"${sudo[@]}" pg_ctlcluster "$pgver" main start || return 1
	fi
	local i
	for i in $(seq 1 50); do
		pg_isready -q -h 127.0.0.1 -p "$pgport" && break
		sleep 0.2
	done
	pg_isready -q -h 127.0.0.1 -p "$pgport" || {
		echo "services: PostgreSQL is not accepting connections on 127.0.0.1:$pgport" >&2
		return 1
	}

	local pguser=vaultadmin pgpass=vaultadmin-test pgdb=credproxy_test
	# SQL as the postgres OS user over the local socket (peer auth).
	local aspg=(runuser -u postgres --)
	if [[ ${#sudo[@]} -gt 0 ]]; then aspg=(sudo -u postgres); fi
	_credproxy_pg() { "${aspg[@]}" psql -X -q -tA -p "$pgport" -v ON_ERROR_STOP=1 "$@"; }
	echo "services: ensuring superuser role $pguser and database $pgdb"
	_credproxy_pg -d postgres -c "DO \$\$ BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$pguser') THEN
			CREATE ROLE $pguser WITH LOGIN SUPERUSER CREATEROLE PASSWORD '$pgpass';
		ELSE
			ALTER ROLE $pguser WITH LOGIN SUPERUSER CREATEROLE PASSWORD '$pgpass';
		END IF; END \$\$;" || return 1
	if [[ "$(_credproxy_pg -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$pgdb'")" != 1 ]]; then
		_credproxy_pg -d postgres -c "CREATE DATABASE $pgdb OWNER $pguser" || return 1
	fi
	unset -f _credproxy_pg
	export CREDPROXY_PG_URL="postgres://$pguser:$pgpass@127.0.0.1:$pgport/$pgdb?sslmode=disable"
	echo "services: exported CREDPROXY_VAULT_BIN=$CREDPROXY_VAULT_BIN CREDPROXY_OAUTH_BIN=$CREDPROXY_OAUTH_BIN CREDPROXY_PG_URL=postgres://$pguser:***@127.0.0.1:$pgport/$pgdb"
}

_credproxy_services
_credproxy_services_rc=$?
unset -f _credproxy_services
# shellcheck disable=SC2317 # return when sourced, exit when run
return "$_credproxy_services_rc" 2>/dev/null || exit "$_credproxy_services_rc"
