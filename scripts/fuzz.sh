#!/usr/bin/env bash
# Runs every native Go fuzz target of the module, one after the other, for
# the given time each (default 1m) with one worker, as the machine is shared:
#
#	scripts/fuzz.sh 10m            # every target of ./...
#	scripts/fuzz.sh 30s ./smtpapp/dataread/
#
# A failing input is written to the package's testdata/fuzz/<Target>/, where
# go test runs it from then on: fix the code, and commit the input as a seed.
# Exits non-zero if any target failed, after running all of them.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime="${1:-1m}"
shift || true
[ $# -gt 0 ] || set -- ./...

# go test -list prints the names of a package's matching tests, then its
# "ok  <import path>  <time>" line; it fails if a package does not build.
list=$(go test -list '^Fuzz' "$@")
targets=()
names=()
while read -r first second _; do
	case "$first" in
	Fuzz*) names+=("$first") ;;
	ok)
		for name in "${names[@]}"; do
			targets+=("$second $name")
		done
		names=()
		;;
	esac
done <<<"$list"

if [ ${#targets[@]} -eq 0 ]; then
	echo "no fuzz targets in $*"
	exit 0
fi

failed=()
for target in "${targets[@]}"; do
	read -r pkg name <<<"$target"
	echo "== $name ($pkg) for $fuzztime"
	if ! go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" -parallel=1 "$pkg"; then
		failed+=("$name ($pkg)")
	fi
done

if [ ${#failed[@]} -gt 0 ]; then
	printf 'failed: %s\n' "${failed[@]}"
	exit 1
fi
