#!/usr/bin/env python3
"""Probe 2: N connections that each send only the start of a GET head, then stall.

Default head: b"GET /sse/p HTTP/1.1\\r\\nHost: x\\r\\n" (never the final CRLF). Connections are
opened non-blocking from 127.0.0.2, 127.0.0.3, ... (at most --per-source each), with a cap on
connects in flight. Once all are connected, the server's CPU-seconds (utime+stime) are taken
over a window of --window s (shortened so it ends before the first connection's 10 s header
deadline), while a separate process (healthz.py) makes sequential GET /healthz requests on
fresh connections. The connections are then held to see when and how the server ends them.
Prints one JSON result.
"""

import argparse
import errno
import json
import os
import selectors
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Sampler, cpu_seconds, fd_count, healthz_once, percentile,  # noqa: E402
                    rss_kib, server_alive)

IP_BIND_ADDRESS_NO_PORT = 24
HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--conns", type=int, default=15000)
    ap.add_argument("--path", default="/sse/p")
    ap.add_argument("--per-source", type=int, default=5000)
    ap.add_argument("--inflight", type=int, default=256, help="most connects in flight")
    ap.add_argument("--window", type=float, default=8.0)
    ap.add_argument("--header-window", type=float, default=10.0,
                    help="the server's header timeout, to keep the CPU window inside it")
    ap.add_argument("--hold", type=float, default=16.0,
                    help="seconds after the last connect to keep watching for server closes")
    ap.add_argument("--hz-count", type=int, default=200)
    ap.add_argument("--hz-interval", type=float, default=0.04)
    ap.add_argument("--connect-timeout", type=float, default=20.0)
    args = ap.parse_args()
    pid = args.pid
    head = f"GET {args.path} HTTP/1.1\r\nHost: x\r\n".encode()
    res = {"probe": "stalled_head", "conns_target": args.conns, "head": head.decode()}

    # Idle reference.
    idle = [healthz_once(args.host, args.port)[0] * 1000 for _ in range(30)]
    res["healthz_idle_p50_ms"] = round(percentile(idle, 50), 2)
    res["healthz_idle_p99_ms"] = round(percentile(idle, 99), 2)
    res["rss_before_kib"] = rss_kib(pid)
    res["server_fds_before"] = fd_count(pid)
    sampler = Sampler(pid)
    sampler.start()

    sel = selectors.DefaultSelector()
    conns = {}  # fd -> dict(sock, state, t_conn)
    failures = {}
    connect_times = []
    next_i = 0
    inflight = 0
    connected = 0
    closed_by_server = []  # (seconds after its connect, kind, first bytes)
    t_start = time.monotonic()
    cpu_start = cpu_seconds(pid)

    def open_one(i):
        src = f"127.0.0.{2 + i // args.per_source}"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((src, 0))
        s.setblocking(False)
        rc = s.connect_ex((args.host, args.port))
        if rc not in (0, errno.EINPROGRESS):
            failures[errno.errorcode.get(rc, str(rc))] = failures.get(
                errno.errorcode.get(rc, str(rc)), 0) + 1
            s.close()
            return False
        conns[s.fileno()] = {"sock": s, "state": "connecting", "t0": time.monotonic()}
        sel.register(s, selectors.EVENT_WRITE)
        return True

    def on_event(key, mask, now):
        nonlocal inflight, connected
        s = key.fileobj
        c = conns[s.fileno()]
        if c["state"] == "connecting":
            inflight -= 1
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                name = errno.errorcode.get(err, str(err))
                failures[name] = failures.get(name, 0) + 1
                sel.unregister(s)
                del conns[s.fileno()]
                s.close()
                return
            try:
                s.send(head)
            except OSError as e:
                name = "send:" + errno.errorcode.get(e.errno, str(e.errno))
                failures[name] = failures.get(name, 0) + 1
                sel.unregister(s)
                del conns[s.fileno()]
                s.close()
                return
            c["state"] = "held"
            c["t_conn"] = now
            connect_times.append(now - c["t0"])
            connected += 1
            sel.modify(s, selectors.EVENT_READ)
        else:
            try:
                data = s.recv(256)
                kind = "data" if data else "EOF"
            except ConnectionResetError:
                data, kind = b"", "RST"
            except OSError as e:
                data, kind = b"", "err:" + errno.errorcode.get(e.errno, str(e.errno))
            closed_by_server.append((now - c["t_conn"], kind, data[:40].decode(errors="replace")))
            sel.unregister(s)
            del conns[s.fileno()]
            s.close()

    # Connect phase.
    deadline = t_start + args.connect_timeout
    while (next_i < args.conns or inflight > 0) and time.monotonic() < deadline:
        while next_i < args.conns and inflight < args.inflight:
            try:
                if open_one(next_i):
                    inflight += 1
            except OSError as e:
                name = "open:" + errno.errorcode.get(e.errno, str(e.errno))
                failures[name] = failures.get(name, 0) + 1
            next_i += 1
        for key, mask in sel.select(timeout=0.05):
            on_event(key, mask, time.monotonic())
    t_all = time.monotonic()
    res["connect_phase_s"] = round(t_all - t_start, 2)
    res["connect_phase_cpu_s"] = round(cpu_seconds(pid) - cpu_start, 2)
    res["connected"] = connected
    res["still_connecting_at_end_of_phase"] = inflight
    res["connect_failures"] = failures
    res["connect_time_p50_ms"] = round(percentile(connect_times, 50) * 1000, 2)
    res["connect_time_p99_ms"] = round(percentile(connect_times, 99) * 1000, 2)
    res["connect_time_max_ms"] = round(max(connect_times) * 1000, 2) if connect_times else None
    res["closed_during_connect_phase"] = len(closed_by_server)

    # CPU window, ending before the oldest connection's header deadline.
    first_conn = min((c["t_conn"] for c in conns.values() if "t_conn" in c), default=t_all)
    window = min(args.window, max(2.0, args.header_window - 0.5 - (t_all - first_conn)))
    hz = subprocess.Popen([sys.executable, os.path.join(HERE, "healthz.py"),
                           "--host", args.host, "--port", str(args.port),
                           "--count", str(args.hz_count), "--interval",
                           str(min(args.hz_interval, window / args.hz_count)),
                           "--deadline", str(window)], stdout=subprocess.PIPE, text=True)
    cpu0 = cpu_seconds(pid)
    w0 = time.monotonic()
    res["server_fds_at_window_start"] = fd_count(pid)
    res["rss_at_window_start_kib"] = rss_kib(pid)
    while time.monotonic() < w0 + window:
        for key, mask in sel.select(timeout=0.05):
            on_event(key, mask, time.monotonic())
    w1 = time.monotonic()
    cpu1 = cpu_seconds(pid)
    res["window_wall_s"] = round(w1 - w0, 2)
    res["window_cpu_s"] = round(cpu1 - cpu0, 2)
    res["window_cpu_pct"] = round(100 * (cpu1 - cpu0) / (w1 - w0), 1)
    res["closed_by_server_before_window_end"] = len(closed_by_server)
    res["held_at_window_end"] = len(conns)
    try:
        out, _ = hz.communicate(timeout=30)
        res["healthz_during_window"] = json.loads(out)
    except Exception as e:  # noqa: BLE001
        hz.kill()
        res["healthz_during_window"] = f"failed: {e!r}"

    # Hold to see when and how the server ends the stalled connections.
    hold_end = t_all + args.hold
    while conns and time.monotonic() < hold_end:
        for key, mask in sel.select(timeout=0.05):
            on_event(key, mask, time.monotonic())
    t_hold = time.monotonic()
    cpu_hold = cpu_seconds(pid)
    ages = [a for a, _, _ in closed_by_server]
    kinds = {}
    for _, k, d in closed_by_server:
        kk = k if k != "data" else f"data:{d.splitlines()[0] if d else ''}"
        kinds[kk] = kinds.get(kk, 0) + 1
    res["closed_by_server_total"] = len(closed_by_server)
    res["close_kinds"] = kinds
    res["close_age_min_s"] = round(min(ages), 2) if ages else None
    res["close_age_p50_s"] = round(percentile(ages, 50), 2) if ages else None
    res["close_age_max_s"] = round(max(ages), 2) if ages else None
    res["still_open_at_hold_end"] = len(conns)
    res["cpu_s_window_start_to_hold_end"] = round(cpu_hold - cpu0, 2)
    res["wall_s_window_start_to_hold_end"] = round(t_hold - w0, 2)
    res["server_alive"] = server_alive(pid)
    for c in list(conns.values()):
        c["sock"].close()
    conns.clear()
    time.sleep(1.0)
    sampler.stop()
    res["rss_peak_kib"] = sampler.peak_kib
    res["rss_after_kib"] = rss_kib(pid) if server_alive(pid) else None
    res["rss_timeline_t_rss_cpu"] = sampler.timeline
    print(json.dumps(res))


if __name__ == "__main__":
    main()
