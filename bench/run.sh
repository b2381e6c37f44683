#!/usr/bin/env bash
# bench/run.sh: caddy-smtp against Postfix under the same load, in one run.
#
# Starts an smtpsink (STARTTLS backend that counts messages), then, in each
# round:
#   baseline    smtpload straight into the sink
#   caddy-smtp  smtpload -> caddy-smtp (STARTTLS, fsynced queue) -> relay
#               with opportunistic STARTTLS -> sink
#   postfix     smtpload -> private Postfix instance (STARTTLS, its own
#               config and queue directories) -> relayhost with STARTTLS -> sink
# and prints a table and the caddy-smtp/postfix ratios of every round plus
# their spread. Everything listens on 127.0.0.1 only; everything started is
# stopped by PID on exit, also on failure. The system Postfix instance
# (/etc/postfix) is neither changed nor started.
#
# Usage (from anywhere; needs root only to install Postfix and to run a
# Postfix instance):
#   bench/run.sh
#   MESSAGES=3000 SIZE=102400 ROUNDS=3 bench/run.sh
#   IDLE=5000 bench/run.sh           # also the idle-connection memory test
#   STALL=1 POSTFIX=0 bench/run.sh   # also the big-message stall pass
#   PROFILE=1 bench/run.sh           # also a CPU profile of caddy-smtp
#
# Settings (environment):
#   MESSAGES   messages per measured load (3000)
#   SIZE       message size in bytes (4096; 102400 for the large-message run)
#   SENDERS    concurrent sender connections (20)
#   PER_CONN   messages per sender connection (10)
#   ROUNDS     rounds of baseline/caddy-smtp/postfix (1); the order of the
#              two gateways alternates between rounds
#   IDLE       idle connections to hold open to each gateway afterwards (0)
#   IDLE_HOLD  how long to hold them (15s)
#   IDLE_TLS   STARTTLS on the idle connections (1); the open-files limit
#              is raised to IDLE + 1024 when it is lower (root may raise
#              the hard limit)
#   STALL      1: after the rounds, the big-message stall pass: SIZE
#              messages for STALL_FOR alone, then again while STALL_SENDERS
#              connections stream STALL_SIZE messages; compare the accept
#              latency of the SIZE messages (0)
#   STALL_SIZE     size of the big messages (10485760)
#   STALL_SENDERS  connections sending big messages (4)
#   STALL_FOR      length of each half of the stall pass (20s)
#   POSTFIX    0 to skip Postfix (1)
#   POSTFIX_TLS_REUSE  1 sets smtp_tls_connection_reuse=yes in Postfix
#              (outbound TLS connection reuse; not the default) (0)
#   PROFILE    1: after the measured rounds, a 15 s CPU profile of caddy-smtp
#              under the same load via Caddy's admin /debug/pprof, and one
#              of the stall pass's half with big messages (STALL=1) (0)
#   RESULTS    directory for results.jsonl, the table and logs
#              (/tmp/smtpbench-results.<time>)
#   KEEP       1 keeps the work directory (spools, configs) (0)
#   SPOOL_FS   "journal": put both spools on a fresh ext4 with a journal
#              (a loop-mounted image in the work directory), for a machine
#              whose own file system has none (see README: inode
#              allocation without a journal is slow under churn) (off)
#   GATEWAY_REV  the commit whose caddy-smtp is measured (HEAD), exported
#              with git archive so that uncommitted edits in the work tree
#              do not leak in; "worktree" builds the work tree as it is.
#              The load tools are always built from this bench/ directory.
#   GATEWAY_SRC  build caddy-smtp from this directory instead (a patched
#              copy of the repository, to measure a candidate change)
#   GATEWAY_OPTS lines added to caddy-smtp's smtp global option, e.g.
#              "large_messages off" (none)
set -euo pipefail

MESSAGES=${MESSAGES:-3000}
SIZE=${SIZE:-4096}
SENDERS=${SENDERS:-20}
PER_CONN=${PER_CONN:-10}
ROUNDS=${ROUNDS:-1}
IDLE=${IDLE:-0}
IDLE_HOLD=${IDLE_HOLD:-15s}
IDLE_TLS=${IDLE_TLS:-1}
POSTFIX=${POSTFIX:-1}
POSTFIX_TLS_REUSE=${POSTFIX_TLS_REUSE:-0}
PROFILE=${PROFILE:-0}
STALL=${STALL:-0}
STALL_SIZE=${STALL_SIZE:-10485760}
STALL_SENDERS=${STALL_SENDERS:-4}
STALL_FOR=${STALL_FOR:-20s}
KEEP=${KEEP:-0}
GATEWAY_REV=${GATEWAY_REV:-HEAD}
GATEWAY_SRC=${GATEWAY_SRC:-}
GATEWAY_OPTS=${GATEWAY_OPTS:-}
SPOOL_FS=${SPOOL_FS:-}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${RESULTS:-/tmp/smtpbench-results.$STAMP}

for n in MESSAGES SIZE SENDERS PER_CONN ROUNDS IDLE STALL_SIZE STALL_SENDERS; do
	if ! [[ ${!n} =~ ^[0-9]+$ ]]; then
		echo "run.sh: $n must be a number, not '${!n}'" >&2
		exit 2
	fi
done

if ((IDLE > 0 && $(ulimit -n) < IDLE + 1024)); then
	# One descriptor per connection in the load tool and in caddy.
	ulimit -Hn $((IDLE + 1024)) 2>/dev/null || true
	ulimit -n $((IDLE + 1024)) || {
		echo "run.sh: IDLE=$IDLE needs an open-files limit of $((IDLE + 1024)), have $(ulimit -n)" >&2
		exit 2
	}
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d /tmp/smtpbench.XXXXXX)
BIN=$WORK/bin
mkdir -p "$BIN" "$RESULTS"
JSONL=$RESULTS/results.jsonl
: >"$JSONL"

SINK_PID= CADDY_PID= PF_MASTER= PF_DIR= POLICY_RC_CREATED= SPOOL_MOUNT= CHILD=

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
. "$REPO/bench/lib.sh" # stop_pid, free_port

# tree_pids PID: PID and all its descendants (one ps, not one pgrep per
# process: a Postfix holding 5000 connections has 5000 smtpd processes).
tree_pids() {
	ps -eo pid=,ppid= | awk -v root="$1" '
		{ parent[$1] = $2; pid[NR] = $1 }
		END {
			keep[root] = 1
			print root
			for (pass = 0; pass < 32; pass++) { # bounded by the tree depth
				added = 0
				for (i = 1; i <= NR; i++) {
					p = pid[i]
					if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; print p; added = 1 }
				}
				if (!added) break
			}
		}'
}

# stop_pids NAME PID...: TERM to all, wait up to 10 s, then KILL the rest.
stop_pids() {
	local name=$1 i p alive
	shift
	(($# > 0)) || return 0
	kill -TERM "$@" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		alive=()
		for p in "$@"; do
			kill -0 "$p" 2>/dev/null && alive+=("$p")
		done
		((${#alive[@]} == 0)) && return 0
		set -- "${alive[@]}"
		sleep 0.1
	done
	log "$# $name processes did not stop; killing them"
	kill -KILL "$@" 2>/dev/null || true
}

stop_postfix() {
	[[ -n $PF_DIR ]] || return 0
	if [[ -n $PF_MASTER ]] && kill -0 "$PF_MASTER" 2>/dev/null; then
		local tree
		mapfile -t tree < <(tree_pids "$PF_MASTER")
		timeout 60 postfix -c "$PF_DIR/etc" stop >/dev/null 2>&1 || true
		# master and every service it forked, by PID.
		stop_pids postfix "${tree[@]}"
	fi
	PF_MASTER=
}

# run CMD...: runs a command in the background and waits for it, so that
# a TERM or INT to this script is handled at once (bash runs traps only
# between foreground commands) and the command is stopped with the rest.
run() {
	"$@" &
	CHILD=$!
	local rc=0
	wait "$CHILD" || rc=$?
	CHILD=
	return "$rc"
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_pid "$CHILD" "load tool"
	stop_postfix
	stop_pid "$CADDY_PID" caddy
	stop_pid "$SINK_PID" smtpsink
	if [[ -n $SPOOL_MOUNT ]]; then
		umount "$SPOOL_MOUNT" || log "could not unmount $SPOOL_MOUNT"
	fi
	if [[ $POLICY_RC_CREATED == 1 ]]; then
		rm -f /usr/sbin/policy-rc.d
	fi
	drop_work
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_file FILE SECONDS
wait_file() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		[[ -s $1 ]] && return 0
		sleep 0.1
	done
	return 1
}

# warm_up ADDR NAME: send a few messages until the gateway relays them
# (the first STARTTLS waits for Caddy's certificate), then settle.
warm_up() {
	local i
	for ((i = 0; i < 30; i++)); do
		if run "$BIN/smtpload" -addr "$1" -messages 20 -senders 2 -per-conn 10 -size "$SIZE" \
			-sink "$SINK_HTTP" -sink-timeout 30s -timeout 20s -max-run 90s >/dev/null 2>"$WORK/warmup.err"; then
			sleep 3 # idle outbound sessions from the warm-up end
			return 0
		fi
		sleep 1
	done
	log "$2 did not relay the warm-up messages:"
	cat "$WORK/warmup.err" >&2
	return 1
}

# load LABEL ADDR [WATCH_PID]
load() {
	local label=$1 addr=$2 pid=${3:-0}
	log "load: $label ($MESSAGES x $SIZE bytes, $SENDERS senders, $PER_CONN per connection)"
	run "$BIN/smtpload" -label "$label" -addr "$addr" -messages "$MESSAGES" -size "$SIZE" \
		-senders "$SENDERS" -per-conn "$PER_CONN" -sink "$SINK_HTTP" -sink-timeout 10m \
		-watch-pid "$pid" -out "$JSONL" -max-run 20m >/dev/null ||
		log "load $label failed; its line in results.jsonl says how"
}

#### build
if [[ -n $GATEWAY_SRC ]]; then
	SRC=$(cd "$GATEWAY_SRC" && pwd)
	REV="src:$SRC"
elif [[ $GATEWAY_REV == worktree ]]; then
	SRC=$REPO
	REV="worktree@$(git -C "$REPO" rev-parse --short HEAD)"
else
	SRC=$WORK/src
	REV=$(git -C "$REPO" rev-parse --short "$GATEWAY_REV")
	mkdir -p "$SRC"
	git -C "$REPO" archive "$GATEWAY_REV" | tar -x -C "$SRC"
fi
log "building caddy with the plugin at $REV, and smtpload and smtpsink, into $BIN"
(cd "$SRC" && go build -o "$BIN/caddy" ./cmd/caddy)
(cd "$REPO" && go build -o "$BIN/" ./bench/cmd/smtpload ./bench/cmd/smtpsink)

#### spool file system
SPOOLS=$WORK
if [[ $SPOOL_FS == journal ]]; then
	truncate -s 4G "$WORK/spool.img"
	mkfs.ext4 -q -F "$WORK/spool.img"
	mkdir -p "$WORK/spoolfs"
	mount -o loop "$WORK/spool.img" "$WORK/spoolfs"
	SPOOL_MOUNT=$WORK/spoolfs
	SPOOLS=$WORK/spoolfs
	log "spools on a journaled ext4 image mounted at $SPOOLS"
elif [[ -n $SPOOL_FS ]]; then
	log "SPOOL_FS must be empty or 'journal'"
	exit 2
fi
SPOOL_FS_DESC=$(findmnt -n -o FSTYPE,OPTIONS -T "$SPOOLS" | cut -c1-60)
[[ -d /proc/fs/jbd2 ]] && ls /proc/fs/jbd2 | grep -q "^$(basename "$(findmnt -n -o SOURCE -T "$SPOOLS")")" &&
	SPOOL_FS_DESC+=" (journal)" || SPOOL_FS_DESC+=" (no journal)"

#### sink
"$BIN/smtpsink" -addr 127.0.0.1:0 -http 127.0.0.1:0 -ready-file "$WORK/sink.json" -max-run 3h \
	2>"$RESULTS/smtpsink.log" &
SINK_PID=$!
wait_file "$WORK/sink.json" 20 || { log "smtpsink did not start"; exit 1; }
SINK_SMTP=$(jq -r .smtp "$WORK/sink.json")
SINK_HTTP=http://$(jq -r .http "$WORK/sink.json")
SINK_PORT=${SINK_SMTP##*:}
USED_PORTS+="$SINK_PORT "
log "smtpsink on $SINK_SMTP (pid $SINK_PID)"

#### caddy-smtp
GW_PORT=$(free_port)
ADMIN_PORT=$(free_port)
mkdir -p "$WORK/caddy"
# Caddy's own config and data directories (autosave.json) stay in the work
# directory too.
export XDG_CONFIG_HOME=$WORK/caddy/xdg-config XDG_DATA_HOME=$WORK/caddy/xdg-data
cat >"$WORK/caddy/Caddyfile" <<EOF
{
	admin 127.0.0.1:$ADMIN_PORT
	local_certs
	skip_install_trust
	storage file_system $WORK/caddy/storage
	smtp {
		hostname localhost
		grace_period 5s
		$GATEWAY_OPTS
		queue {
			path $SPOOLS/caddy-queue
		}
		server gateway {
			listen 127.0.0.1:$GW_PORT
			max_connections $((IDLE + 1000))
			route example.test {
				relay 127.0.0.1:$SINK_PORT {
					tls opportunistic
				}
			}
		}
	}
}
EOF
# The load comes from one address, 127.0.0.1, like many MTAs behind one
# NAT: the per-client-address limits (JSON only, newer revisions) are
# turned off, as Postfix exempts mynetworks from its anvil limits.
"$BIN/caddy" adapt --config "$WORK/caddy/Caddyfile" --adapter caddyfile >"$WORK/caddy/adapted.json" 2>"$WORK/caddy/adapt.log" || {
	log "caddy adapt failed:"
	cat "$WORK/caddy/adapt.log" >&2
	exit 1
}
jq '.apps.smtp.servers.gateway += {max_connections_per_ip: -1, connection_rate_per_ip: -1,
	message_rate_per_ip: -1, recipient_rate_per_ip: -1}' "$WORK/caddy/adapted.json" >"$WORK/caddy/caddy.json"
if ! "$BIN/caddy" validate --config "$WORK/caddy/caddy.json" >"$WORK/caddy/validate.log" 2>&1; then
	if grep -q 'unknown field' "$WORK/caddy/validate.log"; then
		log "this revision has no per-address limits; using the Caddyfile as it is"
		cp "$WORK/caddy/adapted.json" "$WORK/caddy/caddy.json"
	else
		log "caddy validate failed:"
		cat "$WORK/caddy/validate.log" >&2
		exit 1
	fi
fi
cp "$WORK/caddy/Caddyfile" "$WORK/caddy/caddy.json" "$RESULTS/"
"$BIN/caddy" run --config "$WORK/caddy/caddy.json" >"$RESULTS/caddy.log" 2>&1 &
CADDY_PID=$!
log "caddy-smtp on 127.0.0.1:$GW_PORT (pid $CADDY_PID), admin 127.0.0.1:$ADMIN_PORT"
warm_up "127.0.0.1:$GW_PORT" caddy-smtp

#### postfix
if [[ $POSTFIX == 1 ]]; then
	if ! command -v postfix >/dev/null; then
		log "installing postfix (apt-get, 'No configuration': the system instance stays unconfigured and stopped)"
		if [[ ! -e /usr/sbin/policy-rc.d ]]; then
			# Keep the package scripts from starting the system instance.
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
			chmod 755 /usr/sbin/policy-rc.d
			POLICY_RC_CREATED=1
		fi
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >"$RESULTS/apt.log" 2>&1 || {
			DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$RESULTS/apt.log" 2>&1
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >>"$RESULTS/apt.log" 2>&1
		}
		if [[ $POLICY_RC_CREATED == 1 ]]; then
			rm -f /usr/sbin/policy-rc.d
			POLICY_RC_CREATED=
		fi
	fi
	PF_DIR=$WORK/postfix
	PF_PORT=$(free_port)
	# Postfix drops privileges to the postfix user, which must reach its
	# directories below the work directory.
	chmod 755 "$WORK"
	PF_SPOOL=$SPOOLS/postfix-spool
	mkdir -p "$PF_DIR/etc" "$PF_SPOOL" "$PF_DIR/data"
	chown postfix "$PF_DIR/data"
	cp /etc/postfix/master.cf /etc/postfix/dynamicmaps.cf "$PF_DIR/etc/"
	[[ -d /etc/postfix/dynamicmaps.cf.d ]] && cp -r /etc/postfix/dynamicmaps.cf.d "$PF_DIR/etc/"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
		-keyout "$PF_DIR/etc/key.pem" -out "$PF_DIR/etc/cert.pem" >/dev/null 2>&1
	PROC_LIMIT=$((IDLE + 200 > 100 ? IDLE + 200 : 100))
	cat >"$PF_DIR/etc/main.cf" <<EOF
# Private benchmark instance: own directories, loopback only, relays
# example.test to the smtpsink with opportunistic STARTTLS on both hops.
compatibility_level = 3.6
queue_directory = $PF_SPOOL
data_directory = $PF_DIR/data
maillog_file = $PF_DIR/maillog
maillog_file_prefixes = $PF_DIR
myhostname = postfix-bench.localhost
myorigin = \$myhostname
mydestination =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.test
relayhost = [127.0.0.1]:$SINK_PORT
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_tls_security_level = may
smtpd_tls_chain_files = $PF_DIR/etc/key.pem, $PF_DIR/etc/cert.pem
smtp_tls_security_level = may
smtp_tls_connection_reuse = $([[ $POSTFIX_TLS_REUSE == 1 ]] && echo yes || echo no)
default_process_limit = $PROC_LIMIT
# caddy-smtp's default max_message_size (Postfix's is 10240000, less than
# the stall pass's 10 MiB messages).
message_size_limit = 52428800
biff = no
append_dot_mydomain = no
EOF
	pc() { postconf -c "$PF_DIR/etc" "$@"; }
	pc -F '*/*/chroot = n'
	pc -M# smtp/inet
	pc -M "$PF_PORT/inet = $PF_PORT inet n - n - - smtpd"
	# smtp_tls_connection_reuse needs the tlsproxy service, which Debian's
	# master.cf does not have.
	[[ $POSTFIX_TLS_REUSE == 1 ]] && pc -M "tlsproxy/unix = tlsproxy unix - - n - 0 tlsproxy"
	for cmd in check start; do
		postfix -c "$PF_DIR/etc" $cmd >"$RESULTS/postfix-$cmd.log" 2>&1 || {
			log "postfix $cmd failed (the messages are in $PF_DIR/maillog, or in syslog when that cannot be opened):"
			cat "$RESULTS/postfix-$cmd.log" >&2
			tail -20 "$PF_DIR/maillog" >&2 2>/dev/null || true
			exit 1
		}
	done
	wait_file "$PF_SPOOL/pid/master.pid" 20 || { log "postfix master did not start"; exit 1; }
	PF_MASTER=$(tr -d ' \n' <"$PF_SPOOL/pid/master.pid")
	cp "$PF_DIR/etc/main.cf" "$RESULTS/postfix-main.cf"
	log "postfix $(postconf -h -d mail_version) on 127.0.0.1:$PF_PORT (master pid $PF_MASTER)"
	warm_up "127.0.0.1:$PF_PORT" postfix
fi

#### rounds
jq -nc --arg rev "$REV" --arg fs "$SPOOL_FS_DESC" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg cpus "$(nproc)" \
	--arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --arg postfix "$([[ $POSTFIX == 1 ]] && postconf -h -d mail_version || echo -)" \
	--argjson messages "$MESSAGES" --argjson size "$SIZE" --argjson senders "$SENDERS" --argjson per_conn "$PER_CONN" \
	'{mode: "meta", gateway_rev: $rev, spool_fs: $fs, date: $date, cpus: $cpus, loadavg_before: $load, postfix: $postfix,
	  messages: $messages, size: $size, senders: $senders, per_conn: $per_conn}' >>"$JSONL"
for ((r = 1; r <= ROUNDS; r++)); do
	load "baseline#$r" "$SINK_SMTP" "$SINK_PID"
	if [[ $POSTFIX == 1 && $((r % 2)) == 0 ]]; then
		load "postfix#$r" "127.0.0.1:$PF_PORT" "$PF_MASTER"
		load "caddy-smtp#$r" "127.0.0.1:$GW_PORT" "$CADDY_PID"
	else
		load "caddy-smtp#$r" "127.0.0.1:$GW_PORT" "$CADDY_PID"
		[[ $POSTFIX == 1 ]] && load "postfix#$r" "127.0.0.1:$PF_PORT" "$PF_MASTER"
	fi
done

#### idle connections
if ((IDLE > 0)); then
	tls_flag=-starttls=true
	[[ $IDLE_TLS == 1 ]] || tls_flag=-starttls=false
	log "idle: $IDLE connections to caddy-smtp"
	run "$BIN/smtpload" -label caddy-smtp-idle -addr "127.0.0.1:$GW_PORT" -idle "$IDLE" -idle-hold "$IDLE_HOLD" \
		"$tls_flag" -watch-pid "$CADDY_PID" -out "$JSONL" -max-run 20m >/dev/null || log "caddy-smtp idle run failed"
	if [[ $POSTFIX == 1 ]]; then
		log "idle: $IDLE connections to postfix (default_process_limit = $PROC_LIMIT)"
		run "$BIN/smtpload" -label postfix-idle -addr "127.0.0.1:$PF_PORT" -idle "$IDLE" -idle-hold "$IDLE_HOLD" \
			"$tls_flag" -watch-pid "$PF_MASTER" -out "$JSONL" -max-run 20m >/dev/null || log "postfix idle run failed"
	fi
fi

#### big-message stall
# stall LABEL ADDR PID: the small messages alone, then with big ones
# streaming in on other connections (started first, so that they are
# under way when the small ones start; the whole run fits in STALL_FOR).
stall() {
	local label=$1 addr=$2 pid=$3 big
	log "stall: $label, $SIZE-byte messages for $STALL_FOR alone"
	run "$BIN/smtpload" -label "stall-alone:$label" -addr "$addr" -duration "$STALL_FOR" -size "$SIZE" \
		-senders "$SENDERS" -per-conn "$PER_CONN" -watch-pid "$pid" -out "$JSONL" -max-run 10m >/dev/null ||
		log "stall-alone:$label failed"
	log "stall: $label, again with $STALL_SENDERS connections streaming $STALL_SIZE-byte messages"
	"$BIN/smtpload" -label "stall-big:$label" -addr "$addr" -duration "$STALL_FOR" -size "$STALL_SIZE" \
		-senders "$STALL_SENDERS" -per-conn 1 -timeout 5m -out "$JSONL" -max-run 10m >/dev/null 2>"$RESULTS/stall-big.err" &
	big=$!
	sleep 2 # the first big bodies are streaming
	local prof=
	if [[ $PROFILE == 1 && $label == caddy-smtp ]]; then
		curl -sS -o "$RESULTS/caddy-stall-cpu.pprof" "http://127.0.0.1:$ADMIN_PORT/debug/pprof/profile?seconds=15" &
		prof=$!
	fi
	run "$BIN/smtpload" -label "stall-with-big:$label" -addr "$addr" -duration "$STALL_FOR" -size "$SIZE" \
		-senders "$SENDERS" -per-conn "$PER_CONN" -watch-pid "$pid" -out "$JSONL" -max-run 10m >/dev/null ||
		log "stall-with-big:$label failed"
	CHILD=$big
	wait "$big" || log "stall-big:$label failed (see $RESULTS/stall-big.err)"
	CHILD=
	if [[ -n $prof ]]; then
		wait "$prof" || log "fetching the stall profile failed"
		(cd "$REPO" && go tool pprof -top -nodecount=40 "$BIN/caddy" "$RESULTS/caddy-stall-cpu.pprof" \
			>"$RESULTS/caddy-stall-cpu-top.txt" 2>/dev/null) || true
		log "profile of the stall pass: $RESULTS/caddy-stall-cpu.pprof (top: $RESULTS/caddy-stall-cpu-top.txt)"
	fi
}
if [[ $STALL == 1 ]]; then
	stall caddy-smtp "127.0.0.1:$GW_PORT" "$CADDY_PID"
	[[ $POSTFIX == 1 ]] && stall postfix "127.0.0.1:$PF_PORT" "$PF_MASTER"
fi

#### profile
if [[ $PROFILE == 1 ]]; then
	log "profile: 15 s of caddy-smtp CPU under the same load"
	curl -sS -o "$RESULTS/caddy-cpu.pprof" "http://127.0.0.1:$ADMIN_PORT/debug/pprof/profile?seconds=15" &
	curl_pid=$!
	run "$BIN/smtpload" -label caddy-smtp-profiled -addr "127.0.0.1:$GW_PORT" -duration 15s -size "$SIZE" \
		-senders "$SENDERS" -per-conn "$PER_CONN" -sink "$SINK_HTTP" -sink-timeout 5m -max-run 10m \
		>/dev/null 2>&1 || true
	wait "$curl_pid" || log "fetching the profile failed"
	(cd "$REPO" && go tool pprof -top -nodecount=40 "$BIN/caddy" "$RESULTS/caddy-cpu.pprof" \
		>"$RESULTS/caddy-cpu-top.txt" 2>/dev/null) || true
	log "profile: $RESULTS/caddy-cpu.pprof (top: $RESULTS/caddy-cpu-top.txt)"
fi

#### report
"$REPO/bench/report.sh" "$JSONL" | tee "$RESULTS/table.txt"
log "results: $RESULTS"
