#!/usr/bin/env bash
# The end-to-end benchmark matrix: builds the example server and the load generator,
# starts a fresh server pinned to core 0 for every run, runs the load generator pinned to
# core 1, and writes the table of medians to benches/results.md.
#
#   benches/run.sh            the standard matrix, 3 runs each, release build
#   benches/run.sh --runs 5   more runs per scenario
#   benches/run.sh --smoke    every mode once at a tiny size on a debug build (CI)
#
# DUALCAST_BENCH_SERVER=path runs another build of the example server (an older commit,
# say) against the same load generator; other DUALCAST_* settings pass through to it.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; runs=1 ;;
    --runs) runs="$2"; shift ;;
    *) echo "usage: benches/run.sh [--smoke] [--runs N]" >&2; exit 2 ;;
  esac
  shift
done

if [ "$smoke" = 1 ]; then
  profile=debug
  cargo build --quiet --example server --example loadgen
  out=target/bench-smoke
  scenarios=(
    "idle-ws|idle --kind ws --connections 20 --settle-ms 100"
    "idle-sse|idle --kind sse --connections 20 --settle-ms 100"
    "fanout-ws|fanout --kind ws --connections 10 --publishes 20"
    "fanout-both|fanout --kind both --connections 10 --publishes 20"
    "latency-ws|fanout --kind ws --connections 10 --publishes 10 --rate 50"
    "connect-ws|connect --connections 20"
  )
else
  profile=release
  cargo build --quiet --release --example server --example loadgen
  out=benches
  scenarios=(
    "idle-ws-5k|idle --kind ws --connections 5000"
    "idle-sse-5k|idle --kind sse --connections 5000"
    "fanout-ws-1k|fanout --kind ws --connections 1000 --publishes 2000"
    "fanout-ws-5k|fanout --kind ws --connections 5000 --publishes 600"
    "fanout-sse-1k|fanout --kind sse --connections 1000 --publishes 2000"
    "latency-ws-1k|fanout --kind ws --connections 1000 --publishes 300 --rate 20"
    "connect-ws-5k|connect --connections 5000"
  )
fi
mkdir -p "$out"
server_bin=${DUALCAST_BENCH_SERVER:-target/$profile/examples/server}

# Pin the server and the load generator to different cores where there are two.
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  server_pin=(taskset -c 0); load_pin=(taskset -c 1)
else
  server_pin=(); load_pin=()
fi
# Every connection is a file descriptor on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

DUALCAST_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export DUALCAST_JWT_SECRET
# Every connection comes from this one address, thousands a second: the connection-attempt
# rate limits are off (the per-player connection limit stays: one connection per player).
export DUALCAST_CONNECT_RATE_PER_ADDR=${DUALCAST_CONNECT_RATE_PER_ADDR:-0}
export DUALCAST_CONNECT_RATE_PER_PLAYER=${DUALCAST_CONNECT_RATE_PER_PLAYER:-0}
results="$out/results.jsonl"
: > "$results"
server_pid=""
log=$(mktemp)
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
trap 'stop_server; rm -f "$log"' EXIT

start_server() {
  DUALCAST_ADDR=127.0.0.1:0 RUST_LOG=warn,server=info NO_COLOR=1 \
    "${server_pin[@]}" "$server_bin" > "$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    addr=$(grep -o 'addr=127\.0\.0\.1:[0-9]*' "$log" | head -n 1 | cut -d= -f2 || true)
    [ -n "$addr" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "the server did not start:" >&2
  cat "$log" >&2
  exit 1
}

for scenario in "${scenarios[@]}"; do
  name=${scenario%%|*}
  read -r -a args <<< "${scenario#*|}"
  for run in $(seq 1 "$runs"); do
    start_server
    echo "== $name, run $run of $runs (server $addr, pid $server_pid)"
    status=0
    output=$("${load_pin[@]}" "target/$profile/examples/loadgen" "${args[@]}" \
      --url "http://$addr" --server-pid "$server_pid" --label "$name" --timeout-secs 120) || status=$?
    if [ "$status" != 0 ]; then
      echo "$output"
      echo "the load generator failed (exit $status) in $name, run $run; server log:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    echo "$output" | grep -v '^{'
    echo "$output" | grep '^{' >> "$results"
    stop_server
  done
done

{
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')),"
  echo "server pinned to core 0, load generator to core 1; medians of $runs runs (\`benches/run.sh\`)."
  echo
  python3 benches/summarize.py "$results" "$smoke"
} | tee "$out/results.md"
