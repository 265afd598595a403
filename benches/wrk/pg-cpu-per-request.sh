#!/usr/bin/env bash
# Unique newCalls under wrk against one build on PostgreSQL, on a new
# database: requests/s, p99, and the CPU per request of the sidecar and of
# the PostgreSQL server (every process named `postgres` on this machine:
# run it against a local, otherwise idle server), from /proc/PID/stat.
#
#   benches/wrk/pg-cpu-per-request.sh target/release/sipgate-sidecar \
#       postgres://sidecar@127.0.0.1:55432/postgres [LABEL]
#
# The role in the URL must be allowed to create databases. Run two builds
# alternately, several times.
set -euo pipefail
binary="$1"
admin_url="$2"
label="${3:-$1}"
here="$(cd "$(dirname "$0")" && pwd)"
database="sidecar_bench_$$_$RANDOM"
url="${admin_url%/*}/$database"
dir="$(mktemp -d)"
psql "$admin_url" -qc "CREATE DATABASE $database" >/dev/null
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; psql "$admin_url" -qc "DROP DATABASE IF EXISTS $database" >/dev/null || true; rm -rf "$dir"' EXIT
"$binary" serve --database "$url" --spool-dir "$dir/spool" --http-addr 127.0.0.1:19190 \
    --grpc-addr 127.0.0.1:19191 --metrics-addr off --signature off >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    curl -fs http://127.0.0.1:19190/readyz >/dev/null 2>&1 && break
    sleep 0.1
done
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
server_cpu() {
    local total=0 p
    for p in $(pgrep -x postgres); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
wrk -t1 -c32 -d3s -s "$here/newcall.lua" http://127.0.0.1:19190 >/dev/null
before="$(cpu)"
server_before="$(server_cpu)"
wrk -t1 -c32 -d8s --latency -s "$here/newcall.lua" http://127.0.0.1:19190 >"$dir/wrk.out"
after="$(cpu)"
server_after="$(server_cpu)"
requests="$(awk '/requests in/ {print $1}' "$dir/wrk.out")"
rate="$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.out")"
p99="$(awk '$1 == "99%" {print $2}' "$dir/wrk.out")"
ticks="$(getconf CLK_TCK)"
python3 -c "
per = lambda a, b: (a - b) / $ticks / $requests * 1e6
print(f'$label: $rate requests/s, p99 $p99, CPU per request: sidecar {per($after, $before):.1f} µs, PostgreSQL {per($server_after, $server_before):.1f} µs')"
