# bench/lib.sh: helpers that run.sh and queued.sh source. Each script
# defines log() (and WORK, KEEP) before sourcing this file.

# stop_pid PID [NAME [SECONDS]]: TERM, wait up to SECONDS (10), then KILL.
stop_pid() {
	local pid=$1 name=${2:-process} secs=${3:-10} i
	[[ -n $pid ]] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "$name ($pid) did not stop; killing it"
	kill -KILL "$pid" 2>/dev/null || true
}

# free_port: a loopback TCP port nobody listens on, below the ephemeral
# range (Caddy binds with SO_REUSEPORT, so a taken port must not be reused).
USED_PORTS=" "
free_port() {
	local i p
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 12000))
		[[ $USED_PORTS == *" $p "* ]] && continue
		if [[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]]; then
			USED_PORTS+="$p "
			echo "$p"
			return 0
		fi
	done
	log "no free port found"
	return 1
}

# drop_work: removes the work directory $WORK, unless KEEP=1.
drop_work() {
	if [[ $KEEP == 1 ]]; then
		log "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
}
