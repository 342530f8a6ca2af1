#!/usr/bin/env bash
# A bounded soak of the release build:
#
#   bash tests/soak.sh [MINUTES]            (default 3; not part of the test run)
#   bash tests/soak.sh --chaos [MINUTES]    (default 1; see "The chaos run" below; the test
#                                           run, tests/run.sh, ends with a one-minute one)
#
# Builds tallyd (release) and benches/statsd_loadgen.c, runs tallyd on free loopback ports
# with a short default TTL (--statsd.default-ttl=5s), and drives it for MINUTES with several
# load generators at once:
#   - steady counters, timers and gauges over fixed name sets (-P soak.req / soak.lat /
#     soak.gauge), which must keep their series;
#   - churn: every 10 s a new block of 1,000 counter names (-o moves the offset), so the
#     previous block goes idle, expires after the TTL and its families retire;
#   - a second churn of timers, offset differently, so observers expire too.
# Every 10 s it scrapes /metrics and samples the resident set. At the end it prints RSS at the
# start and the end, the peak (sampled, and the kernel's VmHWM), and every counter of dropped
# or rejected data, then stops tallyd with SIGTERM and checks that it exits 0.
#
# Rates are moderate for a 2-core machine; override with SOAK_RATE (lines/s per steady
# generator, default 10000). Everything is sent to 127.0.0.1 only, and every generator stops by
# itself (-T); the script also ends them, and tallyd, on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

# The chaos run: good traffic with exact counts (StatsD over TCP, one connection per line, the
# Unix socket and UDP; probes and scrapes with the right password) interleaved for MINUTES
# with the attacks tests/chaos.py names (connections held and trickled past the caps, slowloris,
# wrong passwords, unread scrapes, floods of names, conflicts and bad lines, reload storms,
# signals, a second tallyd on the same Unix socket). It passes when every good count is exact
# (UDP: unless the kernel dropped datagrams, which tallyd counts), every probe and authorized
# scrape was answered, tallyd's peak RSS (VmHWM) stayed within CHAOS_MAX_RSS_MIB (default 256)
# and its log within 20 MiB, and it exits 0 on SIGTERM with no panic.
if [ "${1:-}" = "--chaos" ]; then
  minutes="${2:-1}"
  max_rss_mib="${CHAOS_MAX_RSS_MIB:-256}"
  echo "chaos: building tallyd (release)" >&2
  cargo build --release --quiet --bin tallyd
  dir=target/chaos
  rm -rf "$dir"
  mkdir -p "$dir"
  log=$dir/tallyd.log
  printf 'mappings:\n- match: "chaos.mapped.*"\n  name: chaos_mapped\n  labels:\n    which: "$1"\n' \
    >"$dir/mapping.yml"
  common=(--statsd.listen-udp=127.0.0.1:0 --statsd.listen-tcp=127.0.0.1:0
    --web.listen-address=127.0.0.1:0 --statsd.listen-unixgram="$dir/statsd.sock"
    --web.config.file=tests/data/web/basic-auth.yml --web.enable-lifecycle
    --statsd.mapping-config="$dir/mapping.yml")
  target/release/tallyd "${common[@]}" --statsd.tcp-max-connections=100 \
    --statsd.tcp-idle-timeout=5s --limits.max-series=20000 2>"$log" &
  tallyd_pid=$!
  trap 'kill -KILL "$tallyd_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    grep -q "tallyd listening" "$log" && break
    kill -0 "$tallyd_pid" 2>/dev/null || { cat "$log" >&2; echo "chaos: tallyd exited" >&2; exit 1; }
    sleep 0.1
  done
  start_line=$(grep -m1 "tallyd listening" "$log")
  addr() { sed -n "s/.*[ ]$1=\([0-9.:]*\).*/\1/p" <<<"$start_line"; }
  echo "chaos: tallyd pid $tallyd_pid, $minutes min" >&2
  second="target/release/tallyd ${common[*]}"
  python3 tests/chaos.py --udp "$(addr udp)" --tcp "$(addr tcp)" --http "$(addr http)" \
    --unix "$dir/statsd.sock" --user prometheus --password scrape-me --pid "$tallyd_pid" \
    --seconds $((minutes * 60)) --tallyd-cmd "$second" >"$dir/report" &
  driver=$!
  while kill -0 "$driver" 2>/dev/null; do
    kill -0 "$tallyd_pid" 2>/dev/null || { tail -20 "$log" >&2; echo "chaos: tallyd died" >&2; exit 1; }
    sleep 1
  done
  driver_status=0
  wait "$driver" || driver_status=$?
  hwm_mib=$(awk '/^VmHWM:/ {printf "%d", $2 / 1024}' "/proc/$tallyd_pid/status")
  rss_mib=$(awk '/^VmRSS:/ {printf "%d", $2 / 1024}' "/proc/$tallyd_pid/status")
  kill -TERM "$tallyd_pid"
  status=0
  wait "$tallyd_pid" || status=$?
  trap - EXIT
  log_mib=$(( $(stat -c %s "$log") / 1048576 ))
  panics=$(grep -c "panicked" "$log" || true)
  echo "== tallyd chaos: $minutes min =="
  tr ' ' '\n' <"$dir/report"
  echo "rss_end_mib=$rss_mib peak_rss_mib=$hwm_mib (bound $max_rss_mib) log_mib=$log_mib" \
    "exit_status=$status panics=$panics"
  [ "$driver_status" -eq 0 ] && [ "$status" -eq 0 ] && [ "$panics" -eq 0 ] &&
    [ "$hwm_mib" -le "$max_rss_mib" ] && [ "$log_mib" -lt 20 ]
  exit
fi

minutes="${1:-3}"
rate="${SOAK_RATE:-10000}"
duration=$((minutes * 60))
[ "$duration" -gt 0 ] || { echo "usage: $0 [MINUTES>0]" >&2; exit 2; }

loadgen_src="benches/statsd_loadgen.c"
[ -f "$loadgen_src" ] || { echo "soak: $loadgen_src not found" >&2; exit 2; }
command -v curl >/dev/null || { echo "soak: curl is needed" >&2; exit 2; }

echo "soak: building tallyd (release) and the load generator" >&2
cargo build --release --quiet --bin tallyd
mkdir -p target/soak
gcc -O2 -Wall -o target/soak/statsd_loadgen "$loadgen_src"
loadgen=target/soak/statsd_loadgen
log=target/soak/tallyd.log
: >"$log"

pids=()
tallyd_pid=""
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -n "$tallyd_pid" ] && kill -0 "$tallyd_pid" 2>/dev/null; then kill "$tallyd_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

target/release/tallyd \
  --statsd.listen-udp=127.0.0.1:0 --statsd.listen-tcp=127.0.0.1:0 \
  --web.listen-address=127.0.0.1:0 --statsd.default-ttl=5s --log.level=info \
  2>"$log" &
tallyd_pid=$!

# The start-up line names the bound addresses: udp=127.0.0.1:PORT ... http=127.0.0.1:PORT
for _ in $(seq 100); do
  grep -q "tallyd listening" "$log" && break
  kill -0 "$tallyd_pid" 2>/dev/null || { cat "$log" >&2; echo "soak: tallyd exited" >&2; exit 1; }
  sleep 0.1
done
start_line=$(grep -m1 "tallyd listening" "$log") || { cat "$log" >&2; exit 1; }
addr() { sed -n "s/.*[ ]$1=\([0-9.:]*\).*/\1/p" <<<"$start_line"; }
udp=$(addr udp)
http=$(addr http)
udp_port=${udp##*:}
echo "soak: tallyd pid $tallyd_pid, udp $udp, http $http, $minutes min, $rate lines/s per steady generator" >&2

mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$tallyd_pid/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$tallyd_pid/status"; }
scrape() { curl -sf --max-time 10 "http://$http/metrics"; }
# Sum of every sample of a metric (any labels) in a scrape on stdin.
metric_sum() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $NF} END {printf "%.0f", s}'; }

rss_start=$(rss_kib)
peak=$rss_start

gen() { "$loadgen" -h 127.0.0.1 -p "$udp_port" -n 1000000000000 "$@" >>target/soak/loadgen.log 2>&1 & pids+=($!); }
: >target/soak/loadgen.log
gen -t c -P soak.req -k 2000 -r "$rate" -T "$duration"
gen -t ms -P soak.lat -k 500 -r "$((rate / 2))" -T "$duration"
gen -t g -P soak.gauge -k 1000 -r "$((rate / 4))" -T "$duration"

# The churners: a new block of names every 10 s, in the background, bounded by the deadline.
churn() {
  local type=$1 prefix=$2 base=$3 round=0 end=$((SECONDS + duration))
  while [ $((end - SECONDS)) -gt 0 ]; do
    local left=$((end - SECONDS)); [ "$left" -gt 10 ] && left=10
    "$loadgen" -h 127.0.0.1 -p "$udp_port" -n 1000000000000 -t "$type" -P "$prefix" \
      -k 1000 -o $((base + round * 1000)) -r 2000 -T "$left" >>target/soak/loadgen.log 2>&1 || true
    round=$((round + 1))
  done
}
churn c soak.churn 0 & pids+=($!)
churn ms soak.churnlat 1000000 & pids+=($!)

printf '%6s %9s %9s %8s %8s %9s %14s %10s\n' "t(s)" "rss(MiB)" "series" "actors" "expired" "retired" "lines" "dropped" >&2
t0=$SECONDS
next=10
while [ $((SECONDS - t0)) -lt "$duration" ]; do
  sleep 1
  [ $((SECONDS - t0)) -ge "$next" ] || continue
  next=$((next + 10))
  kill -0 "$tallyd_pid" 2>/dev/null || { tail -50 "$log" >&2; echo "soak: tallyd died" >&2; exit 1; }
  body=$(scrape) || { echo "soak: scrape failed at $((SECONDS - t0)) s" >&2; continue; }
  rss=$(rss_kib)
  [ "$rss" -gt "$peak" ] && peak=$rss
  printf '%6d %9s %9s %8s %8s %9s %14s %10s\n' $((SECONDS - t0)) "$(mib "$rss")" \
    "$(metric_sum tallyd_series <<<"$body")" "$(metric_sum tallyd_metric_actors <<<"$body")" \
    "$(metric_sum tallyd_series_expired_total <<<"$body")" \
    "$(metric_sum tallyd_family_retirements_total <<<"$body")" \
    "$(metric_sum tallyd_lines_total <<<"$body")" "$(metric_sum tallyd_updates_dropped_total <<<"$body")" >&2
done

# Let the generators finish (they stop by themselves at the deadline), then a final scrape.
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
pids=()
sleep 1
body=$(scrape)
rss_end=$(rss_kib)
[ "$rss_end" -gt "$peak" ] && peak=$rss_end
hwm=$(hwm_kib)

echo
echo "== tallyd soak: $minutes min =="
sent=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^lines=/) {split($i, a, "="); s += a[2]}} END {printf "%d", s}' target/soak/loadgen.log)
received=$(metric_sum tallyd_lines_total <<<"$body")
echo "lines sent: $sent, counted by tallyd: $received, missing: $((sent - received))" \
  "(kernel UDP drops: $(metric_sum tallyd_udp_kernel_drops_total <<<"$body") datagrams)"
printf 'RSS at start:  %8s MiB\n' "$(mib "$rss_start")"
printf 'RSS at end:    %8s MiB\n' "$(mib "$rss_end")"
printf 'RSS peak:      %8s MiB sampled every 10 s, %s MiB VmHWM\n' "$(mib "$peak")" "$(mib "$hwm")"
echo
echo "-- traffic --"
grep -E '^tallyd_(lines_total|samples_total|updates_total|packets_total)[{ ]' <<<"$body" || true
echo "-- dropped, rejected, refused, restarted --"
grep -E '^tallyd_(lines_rejected_total|updates_dropped_total|udp_kernel_drops_total|type_conflicts_total|series_refused_total|family_restarts_total|tag_errors_total)[{ ]' <<<"$body" || true
for m in tallyd_type_conflicts_total; do
  grep -q "^$m" <<<"$body" || echo "$m (no series: none happened)"
done
echo "-- series and actors --"
grep -E '^tallyd_(metric_actors|series|series_expired_total|family_retirements_total|metric_families)[{ ]' <<<"$body" || true

echo
kill -TERM "$tallyd_pid"
stop_start=$SECONDS
status=0
wait "$tallyd_pid" || status=$?
tallyd_pid=""
echo "tallyd exited with $status after SIGTERM, in $((SECONDS - stop_start)) s"
panics=$(grep -c "panicked" "$log" || true)
echo "log: $(wc -l <"$log") lines, $panics with \"panicked\" (full log: $log)"
[ "$status" -eq 0 ] && [ "$panics" -eq 0 ]
