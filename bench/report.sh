#!/usr/bin/env bash
# bench/report.sh RESULTS.jsonl: the table and the caddy-smtp/postfix
# ratios of a bench/run.sh run (one JSON line per load, from smtpload).
set -euo pipefail
f=${1:?usage: report.sh results.jsonl}

jq -rs '
def r1: (. * 10 | round) / 10;
def r2: (. * 100 | round) / 100;
def mb: . / 1024 | r1;
def errs: (.errors // {}) | to_entries | map("\(.key):\(.value)") | join(",") | if . == "" then "-" else . end;
def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
def pad($n): tostring | . + (" " * ([$n - length, 0] | max));
def row: (.[0] | pad(20)) + (.[1:] | map(pad(13)) | join(""));
def wide: (.[0] | pad(28)) + (.[1:] | map(pad(13)) | join(""));

(map(select(.mode == "load" and (.label | test("#"))))) as $loads
| (map(select(.mode == "idle"))) as $idle
| (map(select(.mode == "meta"))[0]) as $meta
| (if $meta then ["caddy-smtp \($meta.gateway_rev), postfix \($meta.postfix), \($meta.date), \($meta.cpus) CPUs, spools on \($meta.spool_fs // "?"), load average before \($meta.loadavg_before); \($meta.messages) messages of \($meta.size) bytes per run, \($meta.senders) senders, \($meta.per_conn) per connection", ""] else [] end)
+ [
  (["run", "e2e msg/s", "accepted/s", "accept p50", "accept p99", "accept max", "CPU ms/msg", "kernel %", "peak RSS MB", "peak PSS MB", "errors"] | row),
  ($loads[] | [.label, (.end_to_end.msgs_per_sec // 0 | round), (.accepted_per_sec | round),
      (.accept_latency_ms.p50 | r1), (.accept_latency_ms.p99 | r1), (.accept_latency_ms.max | r1),
      (.relay.cpu_ms_per_msg // 0 | r2), (if .relay.sys_share then .relay.sys_share * 100 | round else "-" end), (.relay.peak_rss_kb // 0 | mb), (.relay.peak_pss_kb // 0 | mb),
      (if (.end_to_end.complete // true) then errs else "INCOMPLETE " + errs end)] | row),
  "",
  "accept latency: from the final \".\" of DATA to the 250 (ms); e2e: messages received by the sink /",
  "(last arrival - start of the load); CPU (user+system, kernel % of it) and memory: the process tree",
  "measured (baseline: the sink; caddy-smtp: the caddy process; postfix: master and every service it forked).",
  ""
]
+ (
  [$loads[] | .label | capture("#(?<r>[0-9]+)$").r] | unique | map(tonumber) | sort
  | map(. as $r
      | ($loads | map(select(.label == "caddy-smtp#\($r)"))[0]) as $c
      | ($loads | map(select(.label == "postfix#\($r)"))[0]) as $p
      | ($loads | map(select(.label == "baseline#\($r)"))[0]) as $b
      | select($c != null and $p != null)
      | {r: $r,
         ok: ([$c, $p] | all(.failed == 0 and .end_to_end.complete)),
         why: ([$c, $p] | map(select(.failed > 0 or (.end_to_end.complete | not))
               | "\(.label | sub("#.*"; "")) accepted \(.accepted) of \(.attempted) (\(errs)), \(.end_to_end.delivered) delivered") | join("; ")),
         e2e: ($c.end_to_end.msgs_per_sec / ([$p.end_to_end.msgs_per_sec, 0.001] | max)),
         cpu: ($c.relay.cpu_ms_per_msg / ([$p.relay.cpu_ms_per_msg, 0.001] | max)),
         cp99: $c.accept_latency_ms.p99, pp99: $p.accept_latency_ms.p99,
         ce2e: $c.end_to_end.msgs_per_sec, pe2e: $p.end_to_end.msgs_per_sec,
         be2e: ($b.end_to_end.msgs_per_sec // 0)})
  | . as $all
  | map(select(.ok)) as $rounds
  | ($all | map(if .ok then
        "round \(.r): caddy-smtp/postfix end-to-end = \(.e2e | r1)x (\(.ce2e | round) vs \(.pe2e | round) msg/s; sink alone \(.be2e | round)); relay CPU/msg ratio = \(.cpu | r2) (target <= 0.20); p99 accept \(.cp99 | r1) ms vs \(.pp99 | r1) ms (target < 50 ms)"
      else
        "round \(.r): NOT COMPARABLE: \(.why)"
      end))
    + (if ($rounds | length) > 1 then
        ["spread over \($rounds | length) rounds (min / median / max): end-to-end ratio \($rounds | map(.e2e) | min | r1) / \($rounds | map(.e2e) | median | r1) / \($rounds | map(.e2e) | max | r1)x; CPU/msg ratio \($rounds | map(.cpu) | min | r2) / \($rounds | map(.cpu) | median | r2) / \($rounds | map(.cpu) | max | r2); caddy-smtp p99 \($rounds | map(.cp99) | min | r1) / \($rounds | map(.cp99) | median | r1) / \($rounds | map(.cp99) | max | r1) ms"]
      else [] end)
    + (if ($rounds | length) > 0 then
        ["targets (median of \($rounds | length) comparable rounds): end-to-end >= 5x: \(if ($rounds | map(.e2e) | median) >= 5 then "PASS" else "FAIL" end); CPU/msg <= 1/5 of postfix: \(if ($rounds | map(.cpu) | median) <= 0.2 then "PASS" else "FAIL" end); p99 < 50 ms: \(if ($rounds | map(.cp99) | median) < 50 then "PASS" else "FAIL" end)"]
      elif ($all | length) > 0 then ["targets: no comparable round (a gateway refused or lost messages)"]
      else [] end)
)
+ (map(select(.mode == "load" and (.label | startswith("stall-")))) as $stall
  | if ($stall | length) == 0 then [] else
    ["", (["stall pass", "accepted", "failed", "accepted/s", "accept p50", "accept p99", "accept max"] | wide)]
    + [$stall[] | [.label, .accepted, .failed, (.accepted_per_sec | r1), (.accept_latency_ms.p50 | r1), (.accept_latency_ms.p99 | r1), (.accept_latency_ms.max | r1)] | wide]
    + [$stall | map(select(.label | startswith("stall-alone:"))) | .[] | (.label | sub("^stall-alone:"; "")) as $g
       | ($stall | map(select(.label == "stall-with-big:\($g)"))[0]) as $w
       | select($w != null)
       | "\($g): p99 accept of the small messages with the big ones / without = \(($w.accept_latency_ms.p99 / ([.accept_latency_ms.p99, 0.001] | max)) | r2)x (\($w.accept_latency_ms.p99 | r1) vs \(.accept_latency_ms.p99 | r1) ms; target <= 2x)"]
  end)
+ (if ($idle | length) > 0 then
    ["", (["idle run", "wanted", "opened", "errors", "RSS KB/conn", "PSS KB/conn", "procs open", "dropped"] | row)]
    + [$idle[] | [.label, .wanted, .opened, errs, (.relay.rss_per_conn_kb // 0 | r1), (.relay.pss_per_conn_kb // 0 | r1), (.relay.open.procs // 0), .dropped] | row]
  else [] end)
| .[]
' "$f"
