#!/usr/bin/env bash
# Unique newCalls under wrk against one build, on a new database: requests/s,
# p99 and the server's CPU per request (user + system, from /proc/PID/stat).
#
#   benches/wrk/cpu-per-request.sh target/release/sipgate-sidecar [LABEL [POSTGRES_URL]]
#
# Without POSTGRES_URL the database is a new SQLite file. With it (a role
# that may create databases, e.g. postgres://sidecar@127.0.0.1:55432/postgres,
# no query string), a new PostgreSQL database on that server, and the
# PostgreSQL server's CPU per request too: every process named `postgres`
# on this machine, so use a local, otherwise idle server.
#
# Run two builds alternately, several times, on an otherwise idle machine.
set -euo pipefail
binary="$1"
label="${2:-$1}"
admin_url="${3:-}"
here="$(cd "$(dirname "$0")" && pwd)"
dir="$(mktemp -d)"
pid=""
database=""
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [ -n "$database" ]; then
        psql "$admin_url" -qc "DROP DATABASE IF EXISTS $database" >/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
if [ -n "$admin_url" ]; then
    database="sidecar_cpu_$$_$RANDOM"
    psql "$admin_url" -qc "CREATE DATABASE $database" >/dev/null
    url="${admin_url%/*}/$database"
else
    url="$dir/s.db"
fi
"$binary" serve --database "$url" --spool-dir "$dir/spool" \
    --http-addr 127.0.0.1:19090 --grpc-addr 127.0.0.1:19091 \
    --metrics-addr off --signature off >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    curl -fs http://127.0.0.1:19090/readyz >/dev/null 2>&1 && break
    sleep 0.1
done
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
server_cpu() {
    local total=0 p
    if [ -n "$admin_url" ]; then
        for p in $(pgrep -x postgres); do
            total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
        done
    fi
    echo "$total"
}
wrk -t1 -c32 -d3s -s "$here/newcall.lua" http://127.0.0.1:19090 >/dev/null
before="$(cpu)"
server_before="$(server_cpu)"
wrk -t1 -c32 -d8s --latency -s "$here/newcall.lua" http://127.0.0.1:19090 >"$dir/wrk.out"
after="$(cpu)"
server_after="$(server_cpu)"
requests="$(awk '/requests in/ {print $1}' "$dir/wrk.out")"
rate="$(awk '/Requests\/sec/ {print $2}' "$dir/wrk.out")"
p99="$(awk '$1 == "99%" {print $2}' "$dir/wrk.out")"
ticks="$(getconf CLK_TCK)"
python3 -c "
per = lambda a, b: (a - b) / $ticks / $requests * 1e6
line = f'$label: $rate requests/s, p99 $p99, {per($after, $before):.1f} µs CPU per request'
if '$admin_url':
    line += f', PostgreSQL {per($server_after, $server_before):.1f} µs'
print(line)"
