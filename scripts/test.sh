#!/usr/bin/env bash
# Runs every check and test credproxy has, on a fresh machine: builds the Vault
# dev server (a test tool, never shipped) and starts PostgreSQL through
# scripts/services.sh, then gofmt, go vet, staticcheck and go test -race.
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=v0.8.2  # the 2026.2.2 release

# shellcheck source=scripts/services.sh
source scripts/services.sh

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './test/*'))
if [ -n "$unformatted" ]; then echo "not gofmt-ed: $unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
go run "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}" ./...
echo "== go test -race"
go test -race -count=1 -timeout 20m ./...
