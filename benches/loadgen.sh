#!/usr/bin/env bash
# One load run against the release binary with the C load generator
# (benches/statsd_loadgen.c, sendmmsg, loopback only), as in docs/BENCHMARKS.md.
#
#   bash benches/loadgen.sh TYPE RATE LINES [NAMES]     e.g.  bash benches/loadgen.sh c 1200000 6000000
#
# TYPE is c, ms or g; RATE is lines/s (0 = flat out). Prints one line: lines sent, lines
# tallyd received and applied, loss, tallyd's CPU seconds (from /proc) and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
type=$1 rate=$2 lines=$3 names=${4:-1000}
udp_port=${UDP_PORT:-19125} http_port=${HTTP_PORT:-19102}

loadgen=target/statsd_loadgen
src=benches/statsd_loadgen.c
if [ ! -x "$loadgen" ] || [ "$src" -nt "$loadgen" ]; then
  gcc -O2 -Wall -o "$loadgen" "$src"
fi
[ -x target/release/tallyd ] || cargo build --release -q

target/release/tallyd --statsd.listen-udp=127.0.0.1:$udp_port --statsd.listen-tcp= \
  --web.listen-address=127.0.0.1:$http_port --log.level=warn &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do
  curl -sf "127.0.0.1:$http_port/-/ready" >/dev/null && break
  kill -0 $pid 2>/dev/null || { echo "tallyd did not start" >&2; exit 1; }
  sleep 0.05
done

cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }   # utime + stime, in clock ticks
ticks=$(getconf CLK_TCK)
c0=$(cpu)
out=$("$loadgen" -p "$udp_port" -t "$type" -r "$rate" -n "$lines" -k "$names" -T 120)
# Wait until every received line is applied (or a second passes with no progress).
last=-1
while :; do
  m=$(curl -s "127.0.0.1:$http_port/metrics")
  received=$(awk '/^tallyd_lines_total /{print $2}' <<<"$m")
  applied=$(awk '/^tallyd_updates_total /{print $2}' <<<"$m")
  [ "$applied" = "$received" ] && [ "$applied" = "$last" ] && break
  last=$applied
  sleep 0.5
done
c1=$(cpu)
rss=$(awk '/VmHWM/{print $2}' "/proc/$pid/status")
sent=$(sed -E 's/.*lines=([0-9]+).*/\1/' <<<"$out")
achieved=$(sed -E 's/.*rate=([0-9]+).*/\1/' <<<"$out")
python3 - "$type" "$rate" "$sent" "$achieved" "$received" "$applied" "$c0" "$c1" "$ticks" "$rss" <<'PY'
import sys
t, rate, sent, achieved, received, applied, c0, c1, ticks, rss = sys.argv[1:]
sent, received, applied = int(sent), float(received), float(applied)
cpu = (float(c1) - float(c0)) / float(ticks)
print(f"type={t} target={rate} sent={sent} achieved={achieved} received={received:.0f} "
      f"applied={applied:.0f} loss={(1 - applied / sent) * 100:.3f}% cpu_s={cpu:.2f} "
      f"cpu_s_per_million={cpu / (applied / 1e6):.2f} peak_rss_mb={int(rss) / 1024:.1f}")
PY
