#!/usr/bin/env bash
# Runs the whole test suite: go vet and go test -race on every package.
# Installs the Go tools the tests use (Pebble, the ACME test server) into
# $(go env GOPATH)/bin when they are missing; no root needed. Tests that need
# Debian packages (installed by .ci/run) skip locally when those are absent
# and fail under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

gobin="$(go env GOPATH)/bin"
export PATH="$gobin:$PATH"

install_go_tool() { # binary module@version
	if ! command -v "$1" >/dev/null 2>&1; then
		echo "installing $2"
		go install "$2"
	fi
}
install_go_tool pebble github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.3
install_go_tool pebble-challtestsrv github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@v2.10.3

unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt needed:"; echo "$unformatted"; exit 1
fi
go vet ./...
# The servers under test log to stderr, so a failure's lines can be far
# from the end of a long run: on failure, repeat them last.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! go test -race -count=1 -timeout 20m ./... 2>&1 | tee "$log"; then
	echo
	echo "=== failures (repeated from above) ==="
	grep -E -A24 '^panic: |^fatal error: |^WARNING: DATA RACE' "$log" || true
	grep -E '^\s*--- FAIL|^\s+\S+_test\.go:[0-9]+: |^FAIL' "$log" || true
	exit 1
fi
