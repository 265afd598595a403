#!/usr/bin/env bash
# Unique newCalls under wrk against one build, on a new database: requests/s,
# p99 and the server's CPU per request (user + system, from /proc/PID/stat).
#
#   benches/wrk/cpu-per-request.sh target/release/sipgate-sidecar [LABEL]
#
# Run two builds alternately, several times, on an otherwise idle machine.
set -euo pipefail
binary="$1"
label="${2:-$1}"
here="$(cd "$(dirname "$0")" && pwd)"
dir="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
"$binary" serve --database "$dir/s.db" --http-addr 127.0.0.1:19090 --grpc-addr 127.0.0.1:19091 \
    --metrics-addr off --signature off >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    curl -fs http://127.0.0.1:19090/readyz >/dev/null 2>&1 && break
    sleep 0.1
done
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
wrk -t1 -c32 -d3s -s "$here/newcall.lua" http://127.0.0.1:19090 >/dev/null
before="$(cpu)"
wrk -t1 -c32 -d8s --latency -s "$here/newcall.lua" http://127.0.0.1:19090 >"$dir/wrk.out"
after="$(cpu)"
requests="$(awk '/requests in/ {print $1}' "$dir/wrk.out")"
rate="$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.out")"
p99="$(awk '$1 == "99%" {print $2}' "$dir/wrk.out")"
ticks="$(getconf CLK_TCK)"
python3 -c "print(f'$label: $rate requests/s, p99 $p99, {($after - $before) / $ticks / $requests * 1e6:.1f} µs CPU per request')"
