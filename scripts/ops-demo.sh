#!/usr/bin/env bash
# Operations demo: one delivered, one deferred and one bounced message and a
# failed inbound TLS handshake, then the log lines and /metrics series that
# tell them apart. Builds ./cmd/caddy, runs it in a temporary directory on
# loopback ports (2625-2627, admin 2699), and stops it by PID.
#
#	scripts/ops-demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/caddy" ./cmd/caddy
cat >"$work/Caddyfile" <<CADDY
{
	admin localhost:2699
	local_certs
	skip_install_trust
	storage file_system $work/data
	log {
		output file $work/log.json
		format json
	}
	smtp {
		hostname localhost
		queue {
			path $work/queue
			retry_initial 1h
		}
		server gateway {
			listen 127.0.0.1:2625
			listen 127.0.0.1:2626 implicit_tls
			route example.test {
				relay localhost:2627 {
					tls verify
					trust_pool pki_root local
				}
			}
			route down.test {
				relay 127.0.0.1:1
			}
			route sender.test {
				maildir $work/dsn
			}
		}
		server backend {
			listen 127.0.0.1:2627
			route example.test {
				check recipients alice@example.test
				maildir $work/mail
			}
		}
	}
}
CADDY
"$work/caddy" run --config "$work/Caddyfile" >"$work/stderr" 2>&1 &
pid=$!
for _ in $(seq 100); do
	curl -fs localhost:2699/config/ >/dev/null 2>&1 && break
	sleep 0.1
done
send() { "$work/caddy" smtp send --server 127.0.0.1:2625 --starttls --insecure --from sender@sender.test --to "$1" --subject "$2" >/dev/null; }
send alice@example.test delivered
send bob@example.test bounced
send carol@down.test deferred
# A client that only speaks TLS 1.1, on the implicit TLS port.
openssl s_client -connect 127.0.0.1:2626 -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' </dev/null >/dev/null 2>&1 || true
for _ in $(seq 100); do
	grep -q '"status":"bounced"' "$work/log.json" && grep -q '"status":"deferred"' "$work/log.json" && break
	sleep 0.1
done
echo "== log lines"
grep -E '"msg":"(message queued|delivery|TLS handshake failed)"' "$work/log.json"
echo "== /metrics"
curl -s localhost:2699/metrics | grep -E '^caddy_smtp_(delivery_results_total|tls_handshake_failures_total|messages_accepted_total|delivery_attempts_total)'
