#!/usr/bin/env python3
"""Turns target/attacks/LABEL/*.json (from benches/attacks/run.sh) into a markdown report (stdout)."""

import json
import os
import sys

out_dir, binary = sys.argv[1], sys.argv[2]
label = os.path.basename(out_dir.rstrip("/"))


def load(name):
    try:
        with open(os.path.join(out_dir, name + ".json")) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except Exception:  # noqa: BLE001
        return None


def cmd(name):
    try:
        with open(os.path.join(out_dir, name + ".cmd")) as f:
            return f.read().strip()
    except OSError:
        return None


def mib(kib):
    return "n/a" if kib in (None, -1) else f"{kib / 1024:.1f}"


print(f"# dualcast example server under attack: `{label}` ({binary})\n")
print("Server per run: `ulimit -n 20000; DUALCAST_ADDR=127.0.0.1:<free port> "
      "DUALCAST_JWT_SECRET=$SECRET RUST_LOG=warn " + binary + "` (fresh server for every run, "
      "stopped after it). CPU = utime+stime of the server process from /proc/<pid>/stat over "
      "the stated wall window (2 cores: 200 % = both saturated). RSS = VmRSS, MiB.\n")

print("## Probe 1: ping flood (one WebSocket, masked 125-byte pings, client never reads, "
      "SO_RCVBUF 4096)\n")
print("| run | pings sent | send time (s) | pings/s | how the send ended | server ended conn? "
      "(client TCP state) | RSS before | RSS peak | RSS end of send | RSS +3 s (conn open) | "
      "RSS +3 s after client close | server CPU-s / wall s (send+3 s settle) | CPU % |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for name in ("ping2m", "ping8m"):
    r = load(name)
    if not r:
        print(f"| {name} | (no result) |" + " |" * 11)
        continue
    fne = r.get("first_non_established")
    ended = "no (ESTABLISHED throughout)" if not fne else f"yes: {fne[2]} at t={fne[0]} s, after {fne[1]} pings"
    print(f"| {name} | {r.get('pings_sent')} / {r.get('count_target')} | {r.get('send_seconds')} | "
          f"{r.get('pings_per_s')} | {r.get('send_outcome')} | {ended}; after settle: "
          f"{r.get('tcp_state_after_settle')} | {mib(r.get('rss_before_kib'))} | "
          f"{mib(r.get('rss_peak_kib'))} | {mib(r.get('rss_at_end_of_send_kib'))} | "
          f"{mib(r.get('rss_after_settle_open_kib'))} | {mib(r.get('rss_after_close_kib'))} | "
          f"{r.get('cpu_s_send_plus_settle')} / {r.get('wall_s_send_plus_settle')} | "
          f"{r.get('cpu_pct_send_plus_settle')} |")
print()
for name in ("ping2m", "ping8m"):
    r = load(name)
    if r:
        print(f"- {name}: server-side socket at end of send (`ss`, State Recv-Q Send-Q local peer): "
              f"`{r.get('ss_at_end_of_send')}`; after settle: `{r.get('ss_after_settle')}`; "
              f"server alive afterwards: {r.get('server_alive')}")
        print(f"  - progress (t s, pings sent, server RSS KiB): {r.get('progress_t_sent_rss')}")
print()

print("## Probe 2: stalled request heads (never the final CRLF), held through the 10 s "
      "header window\n")
print("| run | head sent | connected / target | connect failures | connect phase (s) | "
      "CPU window wall (s) | server CPU-s | CPU % | RSS before | RSS peak | RSS after | "
      "healthz idle p50/p99 (ms) | healthz in window: n, p50/p99/max (ms), statuses | "
      "server ended stalls: count, age min/p50/max (s), how |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for name in ("sse15k", "sse2k", "ws15k", "cap20k"):
    r = load(name)
    if not r:
        print(f"| {name} | (no result) |" + " |" * 12)
        continue
    hz = r.get("healthz_during_window")
    if isinstance(hz, dict):
        hzs = (f"{hz['n']}, {hz['p50_ms']}/{hz['p99_ms']}/{hz['max_ms']}, "
               + ", ".join(f"{k}: {v}" for k, v in hz["statuses"].items()))
    else:
        hzs = str(hz)
    headline = r.get("head", "").split("\r\n")[0]
    print(f"| {name} | `{headline}\\r\\nHost: x\\r\\n` | {r.get('connected')} / "
          f"{r.get('conns_target')} | {r.get('connect_failures') or 'none'} | "
          f"{r.get('connect_phase_s')} | {r.get('window_wall_s')} | {r.get('window_cpu_s')} | "
          f"{r.get('window_cpu_pct')} | {mib(r.get('rss_before_kib'))} | "
          f"{mib(r.get('rss_peak_kib'))} | {mib(r.get('rss_after_kib'))} | "
          f"{r.get('healthz_idle_p50_ms')}/{r.get('healthz_idle_p99_ms')} | {hzs} | "
          f"{r.get('closed_by_server_total')}, {r.get('close_age_min_s')}/"
          f"{r.get('close_age_p50_s')}/{r.get('close_age_max_s')}, {r.get('close_kinds')} |")
print()
for name in ("sse15k", "sse2k", "ws15k", "cap20k"):
    r = load(name)
    if r:
        print(f"- {name}: server fds at window start {r.get('server_fds_at_window_start')}, "
              f"connect p50/p99/max {r.get('connect_time_p50_ms')}/"
              f"{r.get('connect_time_p99_ms')}/{r.get('connect_time_max_ms')} ms, "
              f"server CPU-s during connect phase {r.get('connect_phase_cpu_s')}, "
              f"window start to hold end {r.get('cpu_s_window_start_to_hold_end')} CPU-s over "
              f"{r.get('wall_s_window_start_to_hold_end')} s, still open at hold end "
              f"{r.get('still_open_at_hold_end')}, server alive {r.get('server_alive')}")
print()
loads = []
for name in ("ping2m", "ping8m", "sse15k", "sse2k", "ws15k", "cap20k"):
    try:
        with open(os.path.join(out_dir, name + ".load")) as f:
            loads.append(f"{name}: {f.read().strip()}")
    except OSError:
        pass
if loads:
    print("Machine load average (1/5/15 min) just before each run (other builds share the 2 cores): "
          + "; ".join(loads) + "\n")
print("## Commands\n")
print("```")
print(f"benches/attacks/run.sh {binary} {label}")
for name in ("ping2m", "ping8m", "sse15k", "sse2k", "ws15k", "cap20k"):
    c = cmd(name)
    if c:
        print(f"# {name} (PORT/PID of that run's server)")
        print(c)
print("```")
