#!/usr/bin/env bash
# bench/queued.sh: what queued messages cost. Fills a segments spool with
# QUEUED deferred messages (bench/cmd/queuefill, through the store's API),
# starts the real caddy binary on it with a route to a relay nobody listens
# on (so they stay queued), and measures:
#   load_s         process start to the "queue loaded" log line
#   first_s        process start to the first "delivery attempt" line
#                  (every DUE_EVERY'th message is due at once)
#   rss / heap     VmRSS, RssAnon and VmHWM from /proc, and the Go heap after
#                  a GC (/debug/pprof/heap?gc=1, then memstats from
#                  /debug/vars on the admin endpoint), per queued message;
#                  also the RSS of the same caddy on an empty spool first
#                  (its binary's pages and runtime), for the RSS a message
#                  adds
# then stops it, starts it again with the route to an accepting smtpsink,
# flushes the queue (POST /smtp/queue/flush) and measures the drain:
# messages per second until the sink has them all.
#
# Usage (from anywhere):
#   bench/queued.sh                         # 100,000 messages
#   QUEUED=1000000 DRAIN=0 bench/queued.sh  # the big run, without the drain
#   CADDY=/path/to/caddy bench/queued.sh    # measure another binary
#
# Settings (environment):
#   QUEUED     messages to fill (100000)
#   SIZE       body size in bytes (2048)
#   DUE_EVERY  every n-th message is due at start (1000)
#   DRAIN      1: the drain pass (1)
#   CADDY      caddy binary to measure (default: cmd/caddy built from this tree)
#   RESULTS    directory for the results (/tmp/queued-results.<time>)
#   KEEP       1 keeps the work directory (spool, logs) (0)
set -euo pipefail

QUEUED=${QUEUED:-100000}
SIZE=${SIZE:-2048}
DUE_EVERY=${DUE_EVERY:-1000}
DRAIN=${DRAIN:-1}
CADDY=${CADDY:-}
KEEP=${KEEP:-0}
RESULTS=${RESULTS:-/tmp/queued-results.$(date -u +%Y%m%dT%H%M%SZ)}
for n in QUEUED SIZE DUE_EVERY DRAIN; do
	if ! [[ ${!n} =~ ^[0-9]+$ ]]; then
		echo "queued.sh: $n must be a number, not '${!n}'" >&2
		exit 2
	fi
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d /tmp/queued.XXXXXX)
BIN=$WORK/bin
SPOOL=$WORK/spool
mkdir -p "$BIN" "$RESULTS"
export XDG_CONFIG_HOME=$WORK/xdg-config XDG_DATA_HOME=$WORK/xdg-data
CADDY_PID= SINK_PID=

log() { printf '[queued.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
. "$REPO/bench/lib.sh" # stop_pid, free_port

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_pid "$CADDY_PID" caddy 30
	stop_pid "$SINK_PID" smtpsink
	drop_work
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECONDS CMD...: polls CMD every 50 ms until it succeeds.
wait_for() {
	local limit=$1 i
	shift
	for ((i = 0; i < limit * 20; i++)); do
		"$@" && return 0
		sleep 0.05
	done
	return 1
}

# log_ts MSG FILE: the ts of the first log line with "msg":"MSG", or fail.
# jq stops at the first match (with head, jq would die of SIGPIPE once the
# matches outgrow a write, and pipefail would call that a failure).
log_ts() { jq -rn --arg m "$1" 'first(inputs | select(.msg == $m) | .ts)' "$2" 2>/dev/null | grep .; }

log_count() { jq -r --arg m "$1" 'select(.msg == $m) | .ts' "$2" 2>/dev/null | wc -l; }

#### build
log "building cmd/caddy and the tools"
(cd "$REPO" && go build -o "$BIN/queuefill" ./bench/cmd/queuefill && go build -o "$BIN/smtpsink" ./bench/cmd/smtpsink)
if [[ -z $CADDY ]]; then
	(cd "$REPO" && go build -o "$BIN/caddy" ./cmd/caddy)
	CADDY=$BIN/caddy
fi

# rss_of PID FIELD: a /proc/PID/status figure in bytes.
rss_of() { echo $(($(awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status") * 1024)); }

ADMIN_PORT=$(free_port)
GW_PORT=$(free_port)
DEAD_PORT=$(free_port) # nothing listens there: connection refused, deferred
ADMIN=http://127.0.0.1:$ADMIN_PORT

# config RELAY_PORT FILE: the Caddy config.
config() {
	cat >"$2" <<EOF
{
	admin 127.0.0.1:$ADMIN_PORT
	local_certs
	skip_install_trust
	storage file_system $WORK/storage
	smtp {
		hostname localhost
		grace_period 5s
		queue {
			path $SPOOL
		}
		server gateway {
			listen 127.0.0.1:$GW_PORT
			route example.test {
				relay 127.0.0.1:$1 {
					tls opportunistic
				}
			}
		}
	}
}
EOF
}

# start_caddy CONFIG LOG: starts caddy, sets CADDY_PID and T0 (its start).
start_caddy() {
	T0=$EPOCHREALTIME
	"$CADDY" run --config "$1" --adapter caddyfile >"$2" 2>&1 &
	CADDY_PID=$!
}

#### the same caddy on an empty spool
mkdir -p "$SPOOL"
config "$DEAD_PORT" "$WORK/Caddyfile.deferred"
start_caddy "$WORK/Caddyfile.deferred" "$RESULTS/caddy-empty.log"
wait_for 60 curl -sf "$ADMIN/config/" -o /dev/null || { log "caddy did not start"; tail "$RESULTS/caddy-empty.log" >&2; exit 1; }
wait_for 60 log_ts "serving initial configuration" "$RESULTS/caddy-empty.log" >/dev/null
curl -sf "$ADMIN/debug/pprof/heap?gc=1" -o /dev/null
BASE_RSS=$(rss_of "$CADDY_PID" VmRSS)
log "RSS on an empty spool: $((BASE_RSS >> 20)) MiB"
stop_pid "$CADDY_PID" caddy 30
CADDY_PID=

#### fill
log "filling $SPOOL with $QUEUED deferred messages of $SIZE bytes"
FILL=$("$BIN/queuefill" -dir "$SPOOL" -n "$QUEUED" -size "$SIZE" -due-every "$DUE_EVERY")
sync # the fill's writeback is not part of the restart
SPOOL_BYTES=$(du -sb "$SPOOL" | cut -f1)
log "filled: $FILL, spool $((SPOOL_BYTES >> 20)) MiB"

#### start on the filled spool
start_caddy "$WORK/Caddyfile.deferred" "$RESULTS/caddy-start.log"
LOG=$RESULTS/caddy-start.log
wait_for 120 log_ts "queue loaded" "$LOG" >/dev/null || { log "no 'queue loaded' line"; tail "$LOG" >&2; exit 1; }
LOAD_S=$(jq -n "$(log_ts "queue loaded" "$LOG") - $T0")
DUE=0
((DUE_EVERY > 0)) && DUE=$(((QUEUED + DUE_EVERY - 1) / DUE_EVERY))
FIRST_S=null
if ((DUE > 0)); then
	wait_for 120 log_ts "delivery attempt" "$LOG" >/dev/null || { log "no delivery attempt"; exit 1; }
	FIRST_S=$(jq -n "$(log_ts "delivery attempt" "$LOG") - $T0")
	# Until the due messages are deferred again: then the queue is at rest.
	wait_for 120 bash -c "(( \$(jq -r 'select(.msg == \"delivery attempt\") | .ts' '$LOG' | wc -l) >= $DUE ))" ||
		log "only $(log_count "delivery attempt" "$LOG") of $DUE due messages were attempted"
fi
wait_for 30 curl -sf "$ADMIN/config/" -o /dev/null
curl -sf "$ADMIN/debug/pprof/heap?gc=1" -o "$RESULTS/heap.pb.gz" # runs a GC first
curl -sf "$ADMIN/debug/vars" -o "$RESULTS/vars.json"
HEAP=$(jq .memstats.HeapAlloc "$RESULTS/vars.json")
HEAP_INUSE=$(jq .memstats.HeapInuse "$RESULTS/vars.json")
RSS=$(rss_of "$CADDY_PID" VmRSS)
ANON=$(rss_of "$CADDY_PID" RssAnon)
HWM=$(rss_of "$CADDY_PID" VmHWM)
log "queue loaded after ${LOAD_S}s, first delivery attempt after ${FIRST_S}s"
log "RSS $((RSS >> 20)) MiB (anonymous $((ANON >> 20)) MiB, peak $((HWM >> 20)) MiB), heap $((HEAP >> 20)) MiB: $((RSS / QUEUED)) B RSS ($(((RSS - BASE_RSS) / QUEUED)) B more than on an empty spool) and $((HEAP / QUEUED)) B heap per queued message"
stop_pid "$CADDY_PID" caddy 30
CADDY_PID=

#### drain
DRAIN_RATE=null DRAIN_S=null
if [[ $DRAIN == 1 ]]; then
	"$BIN/smtpsink" -addr 127.0.0.1:0 -http 127.0.0.1:0 -ready-file "$WORK/sink.json" -max-run 3h \
		2>"$RESULTS/smtpsink.log" &
	SINK_PID=$!
	wait_for 20 test -s "$WORK/sink.json"
	SINK_PORT=$(jq -r .smtp "$WORK/sink.json")
	SINK_PORT=${SINK_PORT##*:}
	SINK_HTTP=http://$(jq -r .http "$WORK/sink.json")
	config "$SINK_PORT" "$WORK/Caddyfile.drain"
	start_caddy "$WORK/Caddyfile.drain" "$RESULTS/caddy-drain.log"
	wait_for 120 log_ts "queue loaded" "$RESULTS/caddy-drain.log" >/dev/null
	wait_for 30 curl -sf "$ADMIN/config/" -o /dev/null
	T1=$EPOCHREALTIME
	curl -sf -X POST "$ADMIN/smtp/queue/flush" -o /dev/null
	curl -sf "$SINK_HTTP/wait?n=$QUEUED&timeout=2h" -o "$RESULTS/sink-stats.json"
	T2=$EPOCHREALTIME
	DRAIN_S=$(jq -n "$T2 - $T1")
	DRAIN_RATE=$(jq -n "$QUEUED / ($T2 - $T1) | floor")
	log "drained $QUEUED messages in ${DRAIN_S}s: $DRAIN_RATE messages/s"
fi

jq -n --argjson queued "$QUEUED" --argjson size "$SIZE" --argjson load "$LOAD_S" --argjson first "$FIRST_S" \
	--argjson rss "$RSS" --argjson anon "$ANON" --argjson base "$BASE_RSS" --argjson hwm "$HWM" --argjson heap "$HEAP" --argjson inuse "$HEAP_INUSE" \
	--argjson spool "$SPOOL_BYTES" --argjson drain_s "$DRAIN_S" --argjson rate "$DRAIN_RATE" --argjson fill "$FILL" \
	'{queued: $queued, size: $size, spool_bytes: $spool, fill: $fill, load_s: $load, first_attempt_s: $first,
	  rss: $rss, rss_anon: $anon, rss_empty_spool: $base, rss_peak: $hwm, heap: $heap, heap_inuse: $inuse,
	  rss_per_msg: ($rss / $queued | floor), rss_added_per_msg: (($rss - $base) / $queued | floor),
	  heap_per_msg: ($heap / $queued | floor),
	  drain_s: $drain_s, drain_per_s: $rate}' | tee "$RESULTS/queued.json"
log "results in $RESULTS"
