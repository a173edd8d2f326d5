#!/usr/bin/env bash
# The hardening probes (issue 6): hostile clients against a dualcast example-server binary,
# one fresh server per run, measured from outside (server RSS and CPU-seconds from /proc,
# /healthz latency during the attack). Needs python3 and curl; loopback only.
#
#   cargo build --release --example server
#   benches/attacks/run.sh target/release/examples/server now   # -> target/attacks/now.md
#   RUNS="ping2m sse15k" benches/attacks/run.sh BIN LABEL        # a subset
#
# Runs (default: all but cap20k):
#   ping2m, ping8m  one WebSocket pinging 2M / 8M times without reading the pongs
#   sse15k, sse2k   15,000 / 2,000 connections each sending half an SSE GET, held 10 s
#   ws15k           the same stall on a non-SSE route (the control)
#   cap20k          19,900 stalled heads: past the connection cap (19,744 of 20,000)
# Each run is bounded by `timeout 120`; the server is stopped (TERM, then KILL) after every
# run. Results: target/attacks/LABEL/ (raw JSON) and target/attacks/LABEL.md.
set -u
BIN=$(readlink -f "${1:?usage: run.sh SERVER_BINARY [LABEL]}")
LABEL=${2:-$(basename "$BIN" | sed 's/^server-//')}
RUNS=${RUNS:-"ping2m ping8m sse15k sse2k ws15k"}
HERE=$(cd "$(dirname "$0")" && pwd)
REPORTS="$HERE/../../target/attacks"
OUT="$REPORTS/$LABEL"
SECRET=${SECRET:-probe-secret-0123456789abcdef0123456789}
mkdir -p "$OUT"
ulimit -n 20000 || { echo "cannot raise ulimit -n" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

SERVER_PID=
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null
  for _ in $(seq 30); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null
  wait "$SERVER_PID" 2>/dev/null
  SERVER_PID=
}
trap stop_server EXIT INT TERM

start_server() {  # $1 = run name
  PORT=$(free_port)
  bash -c "ulimit -n 20000; exec env DUALCAST_ADDR=127.0.0.1:$PORT DUALCAST_JWT_SECRET=$SECRET RUST_LOG=warn '$BIN'" \
    >"$OUT/$1.server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/healthz" && break
    sleep 0.1
  done
  sleep 0.5   # let it settle before the "before" RSS
  echo "[$1] server pid $SERVER_PID on 127.0.0.1:$PORT, fd limit $(awk '/open files/{print $4}' /proc/$SERVER_PID/limits)" >&2
}

run_one() {  # $1 = run name, rest = probe command
  local name=$1; shift
  start_server "$name"
  local args=() a
  for a in "$@"; do a=${a//PORT_/$PORT}; args+=("${a//PID_/$SERVER_PID}"); done
  echo "${args[*]}" | sed "s/$SECRET/\$SECRET/g" >"$OUT/$name.cmd"
  cut -d' ' -f1-3 /proc/loadavg >"$OUT/$name.load"
  timeout --signal=KILL 120 "${args[@]}" >"$OUT/$name.json" 2>"$OUT/$name.err"
  echo "[$name] probe exit $?; $(head -c 300 "$OUT/$name.json")..." >&2
  stop_server
  sleep 2
}

for r in $RUNS; do
  case $r in
    ping2m) run_one ping2m python3 "$HERE/ping_flood.py" --port PORT_ --pid PID_ --secret "$SECRET" --count 2000000 ;;
    ping8m) run_one ping8m python3 "$HERE/ping_flood.py" --port PORT_ --pid PID_ --secret "$SECRET" --count 8000000 ;;
    sse15k) run_one sse15k python3 "$HERE/stalled_sse.py" --port PORT_ --pid PID_ --conns 15000 --path /sse/p ;;
    sse2k)  run_one sse2k  python3 "$HERE/stalled_sse.py" --port PORT_ --pid PID_ --conns 2000 --path /sse/p ;;
    ws15k)  run_one ws15k  python3 "$HERE/stalled_sse.py" --port PORT_ --pid PID_ --conns 15000 --path /api/ws ;;
    cap20k) run_one cap20k python3 "$HERE/stalled_sse.py" --port PORT_ --pid PID_ --conns 19900 --path /sse/p ;;
    *) echo "unknown run $r" >&2 ;;
  esac
done
python3 "$HERE/summarize.py" "$OUT" "$BIN" >"$REPORTS/$LABEL.md"
echo "wrote $REPORTS/$LABEL.md" >&2
