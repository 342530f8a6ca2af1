#!/usr/bin/env bash
# tallyd's benchmark matrix against the release binary: UDP throughput with < 0.1% loss
# (counters, timers), CPU per million counter lines at 100,000 lines/s, RSS and scrape time at
# 100,000 counter names and at 100,000 timer series, and the time from a line to /metrics. A
# markdown table (median [range] over the runs) goes to stdout and target/bench-results.md;
# every run's key=value line goes to target/bench-runs.log, progress to stderr.
#
#   bash benches/run.sh            # 3 runs per row, ~3–6 minutes on 2 cores (after the build)
#   bash benches/run.sh --quick    # 1 run per row, fewer rates, ~1 minute
#   TALLYD_ARGS='--statsd.udp-readers=2' bash benches/run.sh
#   TALLYD_BIN=/path/to/tallyd bash benches/run.sh   # another build, e.g. to compare two
#
# The results go to target/bench-results.md and target/bench-runs.log, or under the name
# $BENCH_NAME (target/bench-results-$BENCH_NAME.md, ...) when it is set.
#
# Each run starts its own tallyd on free loopback ports (UDP and HTTP on port 0, read back
# from its "tallyd listening" log line; TCP off), with $TALLYD_ARGS appended (not
# --log.level, which this script sets). Rows:
# - counter and timer lines/s with < 0.1% loss: the C load generator (benches/statsd_loadgen.c,
#   built into target/), 1,000 names, $secs s per run,
#   rates tried upwards until the median loss reaches 0.1% (halving when the first rate
#   already loses); received, applied and loss read by examples/loadgen, which wraps the C
#   tool;
# - the rest with examples/loadgen: CPU per million counter lines at 100,000 lines/s; RSS and
#   /metrics scrape time after 3 scrapes at 100,000 counter names and at 100,000 timer series
#   (1,000 names x 100 tag values), each series sent twice at 25,000 lines/s so that a lost
#   datagram leaves no series out, then (--wait-hibernation) until every family is idle and
#   hibernated, as when the sender stops, and RSS read once it has stopped moving (the
#   reading right after the scrapes and the peak beside it); time from a line's
#   send to /metrics showing it.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0 matrix=all
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --peer=*) PEER=${arg#--peer=} ;;
    base | real | all) matrix=$arg ;;
    *) echo "usage: bash benches/run.sh [--quick] [--peer=PATH] [base|real|all]" >&2; exit 2 ;;
  esac
done

if ((quick)); then
  runs=1 secs=2 cpu_lines=300000 probes=10 real_secs=2
  counter_rates=(800000 1600000 3200000)
  timer_rates=(500000 1000000 2000000)
else
  runs=3 secs=3 cpu_lines=1000000 probes=20 real_secs=3
  counter_rates=(800000 1200000 1600000 2000000 2500000 3000000 4000000 5000000)
  timer_rates=(500000 750000 1000000 1250000 1500000 2000000)
fi

cargo build --release -q --bin tallyd --example loadgen
tallyd=${TALLYD_BIN:-target/release/tallyd}
loadgen=target/release/examples/loadgen
cloadgen=target/statsd_loadgen
csrc=benches/statsd_loadgen.c
if [ ! -x "$cloadgen" ] || [ "$csrc" -nt "$cloadgen" ]; then
  gcc -O2 -Wall -o "$cloadgen" "$csrc"
fi
sink_bin=target/udp_sink
if [ ! -x "$sink_bin" ] || [ benches/udp_sink.c -nt "$sink_bin" ]; then
  gcc -O2 -Wall -o "$sink_bin" benches/udp_sink.c
fi

tmp=$(mktemp -d)
suffix=${BENCH_NAME:+-$BENCH_NAME}
runlog=target/bench-runs$suffix.log
: >"$runlog"
# Runs happen in command substitutions (subshells): the pid of the tallyd running is also
# kept in a file, for the clean-up.
cleanup() {
  if [ -s "$tmp/pid" ]; then kill -KILL "$(cat "$tmp/pid")" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# Starts tallyd with these flags (after $TALLYD_ARGS); sets pid, udp and http. With $pod set,
# as in a pod: without CAP_NET_ADMIN, so the kernel holds the receive buffer to rmem_max.
start() {
  local wrap=()
  [ -z "${pod:-}" ] || wrap=(setpriv --bounding-set=-net_admin --inh-caps=-all)
  # shellcheck disable=SC2086 # TALLYD_ARGS is a list of flags
  "${wrap[@]}" "$tallyd" --statsd.listen-udp=127.0.0.1:0 --statsd.listen-tcp= \
    --web.listen-address=127.0.0.1:0 --log.level=info ${TALLYD_ARGS:-} "$@" 2>"$tmp/log" &
  pid=$!
  echo "$pid" >"$tmp/pid"
  wait_started tallyd_listening tallyd
}

# True once tallyd says it listens; then sets udp and http from its log line (logfmt,
# udp=ADDR, or JSON, "udp":"ADDR").
tallyd_listening() {
  local addr='[0-9]+\.[0-9.]+:[0-9]+'
  grep -q "tallyd listening" "$tmp/log" || return 1
  udp=$(grep -oE "udp\"?[=:]\"?$addr" "$tmp/log" | grep -oE "$addr" | head -n1)
  http=$(grep -oE "http\"?[=:]\"?$addr" "$tmp/log" | grep -oE "$addr" | head -n1)
}

# Waits until READY (a function) says the server just started (NAME) is up; fails with its log
# if it exits or takes over 10 s.
wait_started() {
  local ready=$1 name=$2
  for _ in $(seq 200); do
    "$ready" && return
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  cat "$tmp/log" >&2
  echo "$name did not start" >&2
  exit 1
}

# Stops tallyd: SIGTERM, then SIGKILL after 30 s.
stop() {
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 600); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  : >"$tmp/pid"
}

# Starts statsd_exporter ($PEER) with these flags on fixed loopback ports (it cannot tell
# which port 0 gave it); sets pid, udp and http.
start_peer() {
  udp=127.0.0.1:39125 http=127.0.0.1:39102
  "$PEER" --statsd.listen-udp="$udp" --statsd.listen-tcp= --web.listen-address="$http" \
    --log.level=warn "$@" 2>"$tmp/log" &
  pid=$!
  echo "$pid" >"$tmp/pid"
  wait_started peer_listening statsd_exporter
}

# True once statsd_exporter's HTTP port takes connections.
peer_listening() {
  (exec 3<>"/dev/tcp/${http%:*}/${http##*:}") 2>/dev/null
}

# One run on a fresh server, tallyd or (with server=peer) statsd_exporter, started with the
# flags in the array `flags`: examples/loadgen with these arguments (@PORT@ replaced by the
# server's UDP port); prints its report line.
flags=() peer_flags=() server=tallyd pod= sink= sink_flags=()
run() {
  if [ "$server" = peer ]; then start_peer "${flags[@]}"; else start "${flags[@]}"; fi
  local out rc=0
  out=$("$loadgen" --statsd "$udp" --http "$http" --pid "$pid" "${@//@PORT@/${udp##*:}}") || rc=$?
  stop
  echo "$*: $out" >>"$runlog"
  if [[ "$out" == *"settled=false"* ]]; then
    echo "  warning: $server's counts were still moving when loadgen gave up waiting" >&2
  fi
  if [ "$rc" -ne 0 ]; then
    echo "loadgen failed ($rc): $*; $server's log ends:" >&2
    tail -n 5 "$tmp/log" >&2
    return "$rc"
  fi
  echo "$out"
}

# The value of KEY in a key=value line.
kv() { sed -nE "s/(^|.* )$1=([^ ]*).*/\2/p" <<<"$2"; }

# "median min max" of the arguments.
stats() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'
}

# A number with a printf format (%d numbers get thousands separators).
fmt() {
  awk -v f="$1" -v n="$2" 'BEGIN {
    if (f != "%d") { printf f, n; exit }
    s = sprintf("%d", n + 0.5); r = ""
    while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
    printf "%s", s r }'
}

# "median [min–max]" of the arguments with a format and a unit; the median alone for one run.
summary() {
  local f=$1 unit=$2 med lo hi
  shift 2
  read -r med lo hi < <(stats "$@")
  if [ $# -eq 1 ] || [ "$lo" = "$hi" ]; then
    echo "$(fmt "$f" "$med")$unit"
  else
    echo "$(fmt "$f" "$med")$unit [$(fmt "$f" "$lo")–$(fmt "$f" "$hi")$unit]"
  fi
}

# Values of KEY in the report lines given as the other arguments.
values() {
  local key=$1
  shift
  for line in "$@"; do kv "$key" "$line"; done
}

# Lines/s at RATE for TYPE (c or ms) with the C load generator; sets cell (loss and rate
# achieved) and returns 0 when the median loss is under 0.1%.
measure() {
  local type=$1 rate=$2 r outs=() losses achieved med
  for ((r = 1; r <= runs; r++)); do
    echo "  $type at $(fmt %d "$rate") lines/s, run $r/$runs" >&2
    outs+=("$(run -- "$cloadgen" -p @PORT@ -t "$type" -r "$rate" -n $((rate * secs)) \
      -k 1000 -T $((secs * 3)))") || exit 1 # set -e is off in an `if` condition
  done
  mapfile -t losses < <(values loss_pct "${outs[@]}")
  mapfile -t achieved < <(values rate "${outs[@]}")
  read -r med _ _ < <(stats "${losses[@]}")
  cell="loss $(summary %.3f % "${losses[@]}"), sent at $(summary %d /s "${achieved[@]}")"
  awk -v m="$med" 'BEGIN { exit !(m < 0.1) }'
}

# Throughput search over TYPE and rates, upwards until the median loss reaches 0.1% (or
# downwards, halving twice, when the first rate already loses); sets found and tried.
search() {
  local type=$1 rate
  shift
  found= tried="no loss at the highest rate tried"
  for rate in "$@"; do
    if measure "$type" "$rate"; then
      found="**$(fmt %d "$rate")** ($cell)"
      continue
    fi
    tried="at $(fmt %d "$rate"): $cell"
    [ -z "$found" ] || return 0
    for rate in $((rate / 2)) $((rate / 4)); do
      if measure "$type" "$rate"; then
        found="**$(fmt %d "$rate")** ($cell)"
        return 0
      fi
      tried="at $(fmt %d "$rate"): $cell"
    done
    found="< $(fmt %d "$rate")"
    return 0
  done
}

mb() { summary %.0f " MB" $(values "$1" "${@:2}"); }
ms() { summary "$1" " ms" $(values "$2" "${@:3}"); }
series_note() {
  echo "then until every family hibernated and RSS stopped moving (right after the scrapes:" \
    "$(mb rss_after_scrapes_mb "$@")); series on /metrics $(summary %d "" $(values series "$@")), loss" \
    "$(summary %.2f % $(values loss_pct "$@")), peak RSS $(mb peak_rss_mb "$@")"
}
# The base matrix: plain counters and timers, 1,000 names, packed datagrams.
base_matrix() {
  echo "counter throughput" >&2
  search c "${counter_rates[@]}"
  counter_found=$found counter_tried=$tried
  echo "timer throughput" >&2
  search ms "${timer_rates[@]}"
  timer_found=$found timer_tried=$tried

  echo "CPU per million counter lines at 100,000 lines/s" >&2
  cpu=()
  for ((r = 1; r <= runs; r++)); do
    cpu+=("$(run --mode counter --rate 100000 --count "$cpu_lines")")
  done

  echo "100,000 counter names" >&2
  counters=()
  for ((r = 1; r <= runs; r++)); do
    counters+=("$(run --mode counter --names 100000 --count 200000 --rate 25000 --scrapes 3 \
      --wait-hibernation)")
  done

  echo "100,000 timer series" >&2
  timers=()
  for ((r = 1; r <= runs; r++)); do
    timers+=("$(run --mode timer --names 1000 --label-values 100 --count 200000 --rate 25000 \
      --scrapes 3 --wait-hibernation)")
  done

  echo "line to /metrics" >&2
  latency=()
  for ((r = 1; r <= runs; r++)); do
    latency+=("$(run --mode latency --probes "$probes")")
  done

  {
    echo "### The base matrix"
    echo
    echo "| figure | tallyd | target | how |"
    echo "|---|---|---|---|"
    echo "| counter lines/s with < 0.1% loss | $counter_found | ≥ 4,000,000 |" \
      "C loadgen, 1,000 names, $secs s per rate; $counter_tried |"
    echo "| timer lines/s with < 0.1% loss | $timer_found | ≥ 1,000,000 |" \
      "C loadgen, 1,000 names, $secs s per rate; $timer_tried |"
    echo "| CPU s per million counter lines at 100,000 lines/s |" \
      "$(summary %.2f "" $(values cpu_s_per_million "${cpu[@]}")) | ≤ 0.1 |" \
      "examples/loadgen, 1,000 names, $(fmt %d "$cpu_lines") lines; loss" \
      "$(summary %.3f % $(values loss_pct "${cpu[@]}")) |"
    echo "| RSS at 100,000 distinct counter names, after 3 scrapes | $(mb rss_mb "${counters[@]}") | — |" \
      "each name sent twice at 25,000 lines/s; $(series_note "${counters[@]}") |"
    echo "| RSS at 100,000 timer series, after 3 scrapes | $(mb rss_mb "${timers[@]}") | — |" \
      "1,000 names × 100 values of a tag, each series sent twice at 25,000 lines/s;" \
      "$(series_note "${timers[@]}") |"
    echo "| one /metrics scrape at 100,000 counter series | $(ms %.0f scrape_ms "${counters[@]}") | — |" \
      "median of the 3 scrapes per run, connect to last byte, no gzip;" \
      "$(summary %.1f " MB" $(values scrape_bytes "${counters[@]}" | awk '{ print $1 / 1e6 }')) |"
    echo "| one /metrics scrape at 100,000 timer series | $(ms %.0f scrape_ms "${timers[@]}") | — |" \
      "same;" \
      "$(summary %.1f " MB" $(values scrape_bytes "${timers[@]}" | awk '{ print $1 / 1e6 }')) |"
    read -r _ fastest _ < <(stats $(values latency_ms_min "${latency[@]}"))
    read -r _ _ slowest < <(stats $(values latency_ms_max "${latency[@]}"))
    echo "| line sent → visible on /metrics | $(ms %.1f latency_ms_median "${latency[@]}") | — |" \
      "a gauge line, then /metrics polled every 1 ms; median of $probes probes per run" \
      "(fastest $(fmt %.1f "$fastest") ms, slowest $(fmt %.1f "$slowest") ms); a new family's" \
      "first line: $(ms %.1f latency_first_ms "${latency[@]}") |"
  }
}

# The real-traffic matrix: what users send, each row on tallyd and, when a statsd_exporter
# binary is given ($PEER or --peer=PATH), on statsd_exporter in the same run, with the ratio.
# The flat-out rows also send their load to a receiver that only counts (see `count_only`):
# about the most this machine's senders and kernel deliver.
# Loads are measured by what reached the families (loadgen --effect), which any server shows.
real_matrix() {
  local airflow=benches/data/airflow-statsd-mappings.yml
  # A DogStatsD client's lines: six tags, 40 names × 100 values of one tag (4,000 series),
  # about ten lines to a 1,400-byte datagram.
  local tagged=(--tags 6 --names 40 --label-values 100 --prefix shop.checkout.api.request)
  echo "### Real traffic"
  echo
  echo "| figure | tallyd | statsd_exporter | ratio | target | how |"
  echo "|---|---|---|---|---|---|"
  local mixed=(--mode mixed "${tagged[@]}" --duration "$real_secs")
  sink=lines_rate row "tagged DogStatsD mix, lines/s reaching /metrics, flat out" applied_rate \
    "≥ 10× statsd_exporter" "counters, gauges, timers; $real_secs s flat out" -- \
    "${mixed[@]}" --effect
  sink=lines_rate row "the same, one line per datagram" applied_rate "≥ 5× statsd_exporter" \
    "as unbuffered clients send; two senders, each its own socket" -- \
    "${mixed[@]}" --lines-per-datagram 1 --senders 2 --effect
  flags=(--statsd.mapping-config="$airflow") peer_flags=("${flags[@]}")
  sink=lines_rate row "Apache Airflow's mapping file with its names, lines/s, flat out" applied_rate \
    "≥ 10× statsd_exporter" "its 16 rules (glob and regex), 745 names" -- \
    --mode airflow --duration "$real_secs" --effect
  flags=() peer_flags=()
  # The receiver that only counts pauses as tallyd does at these rates: 100 ms as root,
  # about 40 ms with a node's usual buffer.
  sink=cpu_s_per_million sink_flags=(-P 100)
  row "CPU s per million tagged counter lines at 100,000 lines/s" cpu_s_per_million "≤ 0.1" \
    "4,000 series" -- \
    --mode counter "${tagged[@]}" --rate 100000 --count "$cpu_lines" --effect
  row "CPU s per million tagged timer lines at 100,000 lines/s" cpu_s_per_million "≤ 0.2" \
    "20 names × 100 values: 2,000 series" -- \
    --mode timer --tags 6 --names 20 --label-values 100 --rate 100000 --count "$cpu_lines" --effect
  pod=1 flags=(--statsd.read-buffer=212992) sink_flags=(-P 40 -b 212992)
  row "CPU s per million counter lines at 100,000 lines/s in a pod" cpu_s_per_million "≤ 0.1" \
    "no CAP_NET_ADMIN, --statsd.read-buffer=212992; 1,000 names" -- \
    --mode counter --rate 100000 --count "$cpu_lines" --effect
  pod= flags=() sink= sink_flags=()
  row "peak RSS while 100,000 new names arrive at 200,000 lines/s" peak_rss_mb "≤ 150 MB" \
    "each name twice" -- \
    --mode counter --names 100000 --count 200000 --rate 200000 --rss-after 3 --effect
  echo "| RSS 3 s after those arrived and were scraped | $(cells rss_later_mb) | ≤ 60 MB | |"
  row "1,000,000 names at 100,000 lines/s: series on /metrics" series "all" "" -- \
    --mode counter --names 1000000 --count 1000000 --rate 100000 --scrapes 3 --effect \
    --settle 2
  echo "| the same: steady RSS | $(cells rss_mb) | ≤ 400 MB | after 3 scrapes |"
  echo "| the same: peak RSS | $(cells peak_rss_mb) | ≤ 600 MB | |"
  echo "| the same: one scrape, ms | $(cells scrape_ms) | ≤ 300 | median of 3 |"
  echo
}

# What benches/udp_sink.c, a receiver that only counts lines, shows as `sink` (lines_rate or
# cpu_s_per_million) with the udp_sink flags in `sink_flags`, given examples/loadgen with these
# arguments (but --effect, which needs a server's /metrics): what the machine's senders and
# kernel deliver to a receiver that does no work, or what such a receiver's reads cost. A
# flat-out load stops after its seconds; a paced one when its last datagram is read.
count_only() {
  local args=() a spid secs=3600
  for a in "$@"; do [ "$a" = --effect ] || args+=("$a"); done
  [ "$sink" != lines_rate ] || secs=$real_secs
  : >"$tmp/sink.err"
  "$sink_bin" -p 39135 -T "$secs" "${sink_flags[@]}" >"$tmp/sink" 2>"$tmp/sink.err" &
  spid=$!
  for _ in $(seq 200); do
    grep -q "udp_sink listening" "$tmp/sink.err" && break
    sleep 0.05
  done
  "$loadgen" --statsd 127.0.0.1:39135 --no-scrape "${args[@]}" >/dev/null
  wait "$spid"
  kv "$sink" "$(cat "$tmp/sink")"
}

# Runs a row: `runs` runs of loadgen with the arguments after `--` on tallyd (with `flags`,
# and as in a pod with `pod` set), on statsd_exporter if given (with `peer_flags`), and with
# `sink` set on benches/udp_sink.c (see `count_only`), one after the other in each round; then
# prints the row: FIGURE, the median [range] of KEY for each server, their ratio, TARGET and
# HOW (with what the receiver that only counts took, or what its reads cost). The reports stay in tallyd_outs and
# peer_outs, for `cells`.
row() {
  local figure=$1 key=$2 target=$3 how=$4 r counted=()
  shift 5
  echo "$figure" >&2
  tallyd_outs=() peer_outs=()
  for ((r = 1; r <= runs; r++)); do
    tallyd_outs+=("$(run "$@")") || exit 1
    if [ -n "${PEER:-}" ]; then
      peer_outs+=("$(
        server=peer pod=
        flags=("${peer_flags[@]}")
        run "$@"
      )") || exit 1
    fi
    if [ -n "${sink:-}" ]; then
      counted+=("$(count_only "$@")")
    fi
  done
  if [ "${sink:-}" = lines_rate ]; then
    how="$how; a receiver that only counts lines (benches/udp_sink.c) takes"
    how="$how $(summary %d /s "${counted[@]}")"
  elif [ -n "${sink:-}" ]; then
    how="$how; a receiver that only counts lines (benches/udp_sink.c, \`${sink_flags[*]}\`)"
    how="$how costs $(summary %.3f "" "${counted[@]}")"
  fi
  echo "| $figure | $(cells "$key") | $target | $how |"
}

# "tallyd | statsd_exporter | ratio" cells for KEY over the last row's reports: the medians
# [ranges], and tallyd's median over statsd_exporter's.
cells() {
  local key=$1 t p
  local f=%.2f
  case $key in applied_rate | series) f=%d ;; *_mb) f=%.0f ;; esac
  t=$(summary "$f" "" $(values "$key" "${tallyd_outs[@]}"))
  if [ ${#peer_outs[@]} -eq 0 ]; then
    echo "$t | — | —"
    return
  fi
  p=$(summary "$f" "" $(values "$key" "${peer_outs[@]}"))
  local tm pm
  read -r tm _ _ < <(stats $(values "$key" "${tallyd_outs[@]}"))
  read -r pm _ _ < <(stats $(values "$key" "${peer_outs[@]}"))
  echo "$t | $p | $(awk -v a="$tm" -v b="$pm" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "—" }')"
}

started=$(date +%s) load_start=$(cut -d' ' -f1 /proc/loadavg)
commit=$(git rev-parse --short HEAD)
[ -z "$(git status --porcelain -- src Cargo.toml Cargo.lock)" ] || commit="$commit + uncommitted changes"
{
  echo "## Benchmark matrix ($(date -u +%Y-%m-%d), \`benches/run.sh $*\`)"
  echo
  echo "Commit $commit; $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1));" \
    "$runs run(s) per row, each on a fresh server${TALLYD_ARGS:+; tallyd with \`$TALLYD_ARGS\`};" \
    "median [range]. Runs: \`$runlog\`."
  echo
  [ "$matrix" = real ] || base_matrix
  [ "$matrix" = base ] || real_matrix
  echo "Measured in $(($(date +%s) - started)) s; load average (1 min) $load_start at the start," \
    "$(cut -d' ' -f1 /proc/loadavg) at the end: other work on the machine moves these figures."
} | tee "target/bench-results$suffix.md"

