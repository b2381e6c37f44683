#!/usr/bin/env bash
# Build a Caddy binary with the caddy-smtp plugin from the checkout this
# script lives in, using xcaddy (installed with `go install` if missing).
#
# Usage: scripts/xcaddy-build.sh [OUTPUT] [XCADDY BUILD ARGS...]
#   OUTPUT defaults to ./caddy (relative to the current directory).
#   Further arguments go to `xcaddy build`, e.g. more plugins:
#     scripts/xcaddy-build.sh ./caddy --with github.com/mholt/caddy-l4@v0.1.2
# Environment: CADDY_VERSION (default v2.11.9), XCADDY_VERSION (default v0.4.5).
set -euo pipefail

CADDY_VERSION="${CADDY_VERSION:-v2.11.9}"
XCADDY_VERSION="${XCADDY_VERSION:-v0.4.5}"
MODULE=github.com/caddy-smtp/caddy-smtp

case "${1:-}" in
-h | --help)
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-./caddy}"
if [ "$#" -gt 0 ]; then shift; fi
case "$out" in
/*) ;;
*) out="$PWD/${out#./}" ;;
esac

command -v go >/dev/null || {
	echo "xcaddy-build: go is not on PATH (Go 1.26 or newer is needed)" >&2
	exit 1
}

xcaddy="$(command -v xcaddy || true)"
if [ -z "$xcaddy" ]; then
	gobin="$(go env GOBIN)"
	[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
	if [ ! -x "$gobin/xcaddy" ]; then
		echo "xcaddy-build: installing xcaddy $XCADDY_VERSION into $gobin" >&2
		go install "github.com/caddyserver/xcaddy/cmd/xcaddy@$XCADDY_VERSION"
	fi
	xcaddy="$gobin/xcaddy"
fi

# The explicit @v0.0.0 keeps `go get` from asking the module proxy for a
# module that it does not know; the replacement points it at the checkout.
"$xcaddy" build "$CADDY_VERSION" \
	--with "$MODULE@v0.0.0=$repo" \
	--output "$out" \
	"$@"

modules="$("$out" list-modules)"
if ! grep -qx smtp <<<"$modules"; then
	echo "xcaddy-build: $out does not list the smtp module" >&2
	exit 1
fi
echo "xcaddy-build: built $out with:"
grep -E '^smtp(\.|$)' <<<"$modules"
