#!/usr/bin/env bash
# Runs every check and test credproxy has, on a fresh machine: builds the Vault
# dev server (a test tool, never shipped) and starts PostgreSQL through
# scripts/services.sh, then gofmt, go vet, staticcheck and go test -race.
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=v0.8.2  # the 2026.2.2 release

# shellcheck source=scripts/services.sh
source scripts/services.sh

# Real clients the end-to-end tests drive: curl, and Python requests.
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
# Pods run as network namespaces (deploy/, internal/netnstest, credproxy
# iptables): ip, iptables and ip6tables, as root.
if ! command -v ip >/dev/null || ! command -v iptables >/dev/null || ! command -v ip6tables >/dev/null; then
	echo "== installing iproute2 iptables"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables >/dev/null
fi
if ! python3 -c 'import requests' 2>/dev/null; then
	echo "== installing python3-requests"
	apt-get update -qq && apt-get install -y -qq python3-requests
	export CREDPROXY_PYTHON=/usr/bin/python3
fi
# test/clients: Debian's python3 with httpx and websocket-client, git (its
# http-backend), and the Node SDKs pinned in test/clients/node; botocore for
# proxy's SigV4 tests, whose upstream re-verifies signatures with it.
missing=()
for mod in requests:python3-requests httpx:python3-httpx websocket:python3-websocket botocore:python3-botocore; do
	/usr/bin/python3 -c "import ${mod%%:*}" 2>/dev/null || missing+=("${mod#*:}")
done
[ -x "$(git --exec-path 2>/dev/null)/git-http-backend" ] || missing+=(git)
if [ ${#missing[@]} -gt 0 ]; then
	echo "== installing ${missing[*]}"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
node_lock=test/clients/node/package-lock.json
if ! cmp -s "$node_lock" test/clients/node/node_modules/.package-lock.json.ci 2>/dev/null; then
	echo "== npm ci (test/clients/node)"
	npm ci --prefix test/clients/node --no-audit --no-fund --loglevel=error >/dev/null
	cp "$node_lock" test/clients/node/node_modules/.package-lock.json.ci
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './test/*'))
if [ -n "$unformatted" ]; then echo "not gofmt-ed: $unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
go run "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}" ./...
echo "== go test -race"
go test -race -count=1 -timeout 20m ./...
# Each fuzz target for a short, bounded time beyond its committed corpus
# (the corpus itself already ran as seeds above). CREDPROXY_FUZZTIME=0 skips.
fuzztime="${CREDPROXY_FUZZTIME:-10s}"
if [ "$fuzztime" != 0 ]; then
	for target in rules:FuzzParse rules:FuzzMatch rules:FuzzParseDest \
		internal/secret:FuzzScrubberBody internal/secret:FuzzScrubberString; do
		echo "== fuzz ${target#*:} (${fuzztime})"
		# Exploration, not a test: the committed corpus already ran above and
		# fails the build. A new finding is printed (and its input written to
		# testdata/fuzz) for the next change to fix and commit, but does not
		# fail CI: a fresh random finding would make every landing a coin toss.
		if ! go test -run '^$' -fuzz "^${target#*:}\$" -fuzztime "$fuzztime" "./${target%%:*}/"; then
			echo "FUZZ FINDING in ${target}: see above; commit the input under testdata/fuzz with a fix"
		fi
	done
fi
