#!/usr/bin/env bash
# Fan-out over a cluster beside one node: builds the example server (feature redis) and
# the load generator, starts a private redis-server on a free loopback port, and for
# every run starts fresh servers (and a fresh Redis) pinned to core 0, the load generator
# pinned to core 1. Writes the JSON lines to benches/cluster-results.jsonl and the table
# of medians to benches/cluster-results.md.
#
#   benches/cluster.sh            every case 3 times, release build
#   benches/cluster.sh --runs 5   more runs per case
#   benches/cluster.sh --smoke    every case once at a tiny size on a debug build (CI)
#
# Cases, each as fast as possible and paced at 20 publishes/s:
#   one-node        one server, no backplane: the baseline
#   one-node-2x     one server, no backplane, as many subscribers as two-nodes has: the
#                   same work on core 0 as two-nodes, without the backplane
#   one-node-redis  one server on the Redis backplane, a cluster of one: the log round-trip
#   two-nodes       two servers (a, b) on one Redis, as many subscribers on each as
#                   one-node has, publishes through a
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; runs=1 ;;
    --runs) runs="$2"; shift ;;
    *) echo "usage: benches/cluster.sh [--smoke] [--runs N]" >&2; exit 2 ;;
  esac
  shift
done

command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli is not installed" >&2; exit 1; }

if [ "$smoke" = 1 ]; then
  profile=debug
  cargo build --quiet --features redis --example server --example loadgen
  out=target/bench-smoke
  per_node=10
  loads=(
    "fanout|--publishes 20"
    "latency|--publishes 10 --rate 50"
  )
else
  profile=release
  # A target directory of its own: cargo does not re-link an example whose features
  # changed, so sharing target/release with benches/run.sh (no features) would leave one
  # of them running the other's build.
  export CARGO_TARGET_DIR=target/cluster-bench
  cargo build --quiet --release --features redis --example server --example loadgen
  out=benches
  per_node=1000
  loads=(
    "fanout|--publishes 2000"
    "latency|--publishes 300 --rate 20"
  )
fi
mkdir -p "$out"
server_bin=${CARGO_TARGET_DIR:-target}/$profile/examples/server
loadgen_bin=${CARGO_TARGET_DIR:-target}/$profile/examples/loadgen

# Every server and Redis on core 0, the load generator on core 1, where there are two.
cores=$(nproc)
if [ "$cores" -ge 2 ] && command -v taskset >/dev/null; then
  server_pin=(taskset -c 0); load_pin=(taskset -c 1)
  pinning="servers and redis-server pinned to core 0 (two nodes share it), load generator to core 1"
else
  server_pin=(); load_pin=()
  pinning="not pinned (fewer than 2 cores or no taskset)"
fi
echo "$cores cores: $pinning"
# Every connection is a file descriptor on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

DUALCAST_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export DUALCAST_JWT_SECRET
# Every connection comes from this one address, thousands a second: the connection-attempt
# rate limits are off (the per-player connection limit stays: one connection per player).
export DUALCAST_CONNECT_RATE_PER_ADDR=${DUALCAST_CONNECT_RATE_PER_ADDR:-0}
export DUALCAST_CONNECT_RATE_PER_PLAYER=${DUALCAST_CONNECT_RATE_PER_PLAYER:-0}
unset DUALCAST_REDIS_URL DUALCAST_NODE_ID

results="$out/cluster-results.jsonl"
: > "$results"
work=$(mktemp -d)
redis_pid=""
redis_port=""
server_pids=()
addrs=()
failed_runs=0

stop_servers() {
  for pid in "${server_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${server_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  server_pids=()
  addrs=()
}
stop_redis() {
  if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  redis_pid=""
}
cleanup() {
  stop_servers
  stop_redis
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A fresh, empty redis-server on a free loopback port: no snapshots, no append-only file,
# its files in a directory of its own.
start_redis() {
  for _ in 1 2 3 4 5; do
    redis_port=$(free_port)
    mkdir -p "$work/redis"
    "${server_pin[@]}" redis-server --bind 127.0.0.1 --port "$redis_port" \
      --save "" --appendonly no --dir "$work/redis" > "$work/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 1 50); do
      if redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; then
        return 0
      fi
      kill -0 "$redis_pid" 2>/dev/null || break
      sleep 0.1
    done
    stop_redis   # the port was taken meanwhile, say: try another
  done
  echo "redis-server did not start:" >&2
  cat "$work/redis.log" >&2
  exit 1
}

# start_server NODE [REDIS_URL]: a server on a free port, as node NODE of the cluster at
# REDIS_URL, or alone without it.
start_server() {
  local node=$1 url=${2:-} log="$work/server-$1.log" pid addr
  if [ -n "$url" ]; then
    DUALCAST_REDIS_URL=$url DUALCAST_NODE_ID=$node \
      DUALCAST_ADDR=127.0.0.1:0 RUST_LOG=warn,server=info NO_COLOR=1 \
      "${server_pin[@]}" "$server_bin" > "$log" 2>&1 &
  else
    DUALCAST_ADDR=127.0.0.1:0 RUST_LOG=warn,server=info NO_COLOR=1 \
      "${server_pin[@]}" "$server_bin" > "$log" 2>&1 &
  fi
  pid=$!
  server_pids+=("$pid")
  for _ in $(seq 1 100); do
    addr=$(grep -o 'addr=127\.0\.0\.1:[0-9]*' "$log" | head -n 1 | cut -d= -f2 || true)
    if [ -n "$addr" ]; then
      addrs+=("$addr")
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "server $node did not start:" >&2
  cat "$log" >&2
  exit 1
}

# wait_cluster PEERS: every server's /healthz shows its backplane up with PEERS peers.
wait_cluster() {
  local want=$1 addr health
  for _ in $(seq 1 100); do
    local ready=1
    for addr in "${addrs[@]}"; do
      health=$(curl -sf "http://$addr/healthz" || true)
      if [ "$(echo "$health" | jq -r '.backplane.state // empty' 2>/dev/null)" != up ] ||
        [ "$(echo "$health" | jq -r '.backplane.peers // empty' 2>/dev/null)" != "$want" ]; then
        ready=0
      fi
    done
    [ "$ready" = 1 ] && return 0
    sleep 0.1
  done
  echo "the cluster did not form ($want peers each expected):" >&2
  for addr in "${addrs[@]}"; do
    echo "$addr: $(curl -s "http://$addr/healthz" || true)" >&2
  done
  tail -n 20 "$work"/server-*.log >&2
  exit 1
}

# User + system CPU seconds of a process, from /proc.
cpu_seconds() {
  awk -v tck="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / tck }' "/proc/$1/stat"
}

# run_case CASE LOAD RUN ARGS...: one run of one case, its JSON line appended to the results
# with the case, the load, the node count and Redis's CPU over the whole run.
run_case() {
  local case=$1 load=$2 run=$3
  shift 3
  local nodes players redis_url=""
  case "$case" in
    one-node) nodes=1 ;;
    one-node-2x) nodes=1 ;;
    one-node-redis) nodes=1; start_redis; redis_url="redis://127.0.0.1:$redis_port" ;;
    two-nodes) nodes=2; start_redis; redis_url="redis://127.0.0.1:$redis_port" ;;
  esac
  players=$((per_node * nodes))
  [ "$case" = one-node-2x ] && players=$((per_node * 2))
  if [ "$nodes" = 1 ]; then
    start_server a "$redis_url"
  else
    start_server a "$redis_url"
    start_server b "$redis_url"
  fi
  [ -n "$redis_url" ] && wait_cluster $((nodes - 1))
  local urls pids
  urls=$(printf 'http://%s,' "${addrs[@]}"); urls=${urls%,}
  pids=$(printf '%s,' "${server_pids[@]}"); pids=${pids%,}
  echo "== $case $load, run $run of $runs ($players subscribers; servers ${addrs[*]}, pids $pids${redis_url:+; redis $redis_port, pid $redis_pid})"
  local redis_before="" redis_after="" status=0 output
  [ -n "$redis_pid" ] && redis_before=$(cpu_seconds "$redis_pid")
  output=$("${load_pin[@]}" "$loadgen_bin" fanout --kind ws --connections "$players" "$@" \
    --url "http://${addrs[0]}" --subscribe-urls "$urls" --server-pid "$pids" \
    --label "$case/$load" --timeout-secs 180) || status=$?
  [ -n "$redis_pid" ] && redis_after=$(cpu_seconds "$redis_pid")
  echo "$output" | grep -v '^{' || true
  local line
  line=$(echo "$output" | grep '^{' || true)
  if [ -z "$line" ]; then
    echo "the load generator failed (exit $status) in $case $load, run $run; server logs:" >&2
    tail -n 20 "$work"/server-*.log >&2
    exit 1
  fi
  if [ "$status" != 0 ]; then
    echo "!! the load generator reported a failed run (exit $status): lost, duplicate or failed publishes; kept in the results" >&2
    tail -n 5 "$work"/server-*.log >&2
    failed_runs=$((failed_runs + 1))
  fi
  echo "$line" | jq -c --arg case "$case" --arg load "$load" --argjson nodes "$nodes" \
    --argjson run "$run" --arg rb "$redis_before" --arg ra "$redis_after" --argjson status "$status" \
    '. + {case: $case, load: $load, nodes: $nodes, run: $run, exit_status: $status,
          redis_cpu_seconds_whole_run: (if $rb == "" then null else (($ra | tonumber) - ($rb | tonumber)) end)}' \
    >> "$results"
  stop_servers
  stop_redis
}

for case in one-node one-node-2x one-node-redis two-nodes; do
  for load in "${loads[@]}"; do
    name=${load%%|*}
    read -r -a args <<< "${load#*|}"
    for run in $(seq 1 "$runs"); do
      run_case "$case" "$name" "$run" "${args[@]}"
    done
  done
done

{
  echo "Measured $(date -u +%Y-%m-%d) on $cores cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')),"
  echo "$pinning; $(redis-server --version | cut -d' ' -f1-3);"
  echo "$per_node WebSocket subscribers per node; medians of $runs runs (\`benches/cluster.sh$([ "$smoke" = 1 ] && echo ' --smoke')\`)."
  echo
  python3 benches/cluster_summarize.py "$results" "$smoke"
} | tee "$out/cluster-results.md"
if [ "$failed_runs" != 0 ]; then
  echo "$failed_runs run(s) lost, duplicated or failed deliveries: see the table" >&2
  exit 1
fi
