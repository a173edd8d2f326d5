#!/usr/bin/env python3
"""Probe 1: one WebSocket, masked 125-byte pings as fast as possible, never read after the 101.

Samples the server's VmRSS (every 0.1 s) and utime+stime from /proc; prints one JSON result.
"""

import argparse
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Sampler, cpu_seconds, jwt_hs256, rss_kib, server_alive  # noqa: E402

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING"}


def tcp_state(sock) -> str:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        return TCP_STATES.get(info[0], str(info[0]))
    except OSError as e:
        return f"err:{e.errno}"


def tcp_state_acked(sock):
    """(state name, tcpi_bytes_acked) from TCP_INFO (bytes_acked: u64 at offset 120)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 136)
    acked = struct.unpack_from("Q", info, 120)[0] if len(info) >= 128 else -1
    return TCP_STATES.get(info[0], str(info[0])), acked


class StateWatcher(threading.Thread):
    """Added for the early-close case: polls the client socket's TCP state every 10 ms (also
    while sendall blocks) so the moment the server ends the connection, and how many bytes the
    server's kernel had acknowledged by then, are known exactly (the main loop checks only
    every 16 blocks)."""

    def __init__(self, sock, t0, interval=0.01):
        super().__init__(daemon=True)
        self.sock, self.t0, self.interval = sock, t0, interval
        self.first_change = None  # (t, state, bytes_acked)
        self.last_est = None      # (t, bytes_acked) last poll still ESTABLISHED
        self.acked_timeline = []  # (t, bytes_acked) every ~0.1 s
        self._halt = threading.Event()

    def run(self):
        last_tl = -1.0
        while not self._halt.is_set():
            try:
                st, acked = tcp_state_acked(self.sock)
            except OSError:
                break
            t = time.monotonic() - self.t0
            if st == "ESTABLISHED":
                self.last_est = (round(t, 3), acked)
            elif self.first_change is None:
                self.first_change = (round(t, 3), st, acked)
            if t - last_tl >= 0.1:
                self.acked_timeline.append((round(t, 2), acked))
                last_tl = t
            if self.first_change is not None and t - self.first_change[0] > 0.2:
                break
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(2)


def ping_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x89, 0x80 | len(payload)]) + mask + masked


def ss_snapshot(port: int) -> str:
    try:
        out = subprocess.run(["ss", "-tnoH", f"( sport = :{port} )"], capture_output=True,
                             text=True, timeout=5).stdout
        return " | ".join(" ".join(line.split()[:5]) for line in out.splitlines())
    except Exception as e:  # noqa: BLE001
        return f"ss failed: {e}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="server pid (for /proc sampling)")
    ap.add_argument("--secret", required=True)
    ap.add_argument("--count", type=int, default=2_000_000)
    ap.add_argument("--rcvbuf", type=int, default=4096)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to wait after the flood")
    ap.add_argument("--stall-timeout", type=float, default=10.0,
                    help="give up when one 1024-ping block cannot be sent in this long")
    ap.add_argument("--max-seconds", type=float, default=90.0, help="stop sending after this")
    args = ap.parse_args()

    pid = args.pid
    res = {"probe": "ping_flood", "count_target": args.count, "rcvbuf": args.rcvbuf}
    res["rss_before_kib"] = rss_kib(pid)
    sampler = Sampler(pid)
    sampler.start()

    token = jwt_hs256(args.secret, "flood-player")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    sock.settimeout(args.stall_timeout)
    sock.connect((args.host, args.port))
    res["client_rcvbuf_effective"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET /api/ws HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           f"Authorization: Bearer {token}\r\n\r\n").encode()
    sock.sendall(req)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: consume the 101 head and nothing after it
        if not chunk:
            break
        head += chunk
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    res["handshake"] = status
    if " 101 " not in status + " ":
        res["error"] = "no 101"
        print(json.dumps(res))
        sampler.stop()
        return

    block_pings = 1024
    frame = ping_frame(b"p" * 125)
    block = b"".join(ping_frame(bytes([65 + (i % 26)]) * 125) for i in range(block_pings))
    res["frame_bytes"] = len(frame)

    sent = 0
    outcome = "completed"
    first_non_established = None
    progress = []
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    res["t0_unix"] = round(time.time(), 3)  # to line the send up with server log timestamps
    last_progress = t0
    blocks = 0
    watcher = StateWatcher(sock, t0)
    watcher.start()
    last_block_ok = (0.0, 0)  # (t, pings sent) after the last sendall that completed
    max_gap = (0.0, 0.0, 0)   # (gap s, t at its end, pings sent before it)
    try:
        while sent < args.count:
            n = min(block_pings, args.count - sent)
            sock.sendall(block if n == block_pings else block[: n * len(frame)])
            sent += n
            blocks += 1
            tb = time.monotonic() - t0
            if tb - last_block_ok[0] > max_gap[0]:
                max_gap = (round(tb - last_block_ok[0], 3), round(tb, 3), last_block_ok[1])
            last_block_ok = (round(tb, 3), sent)
            if blocks % 16 == 0:
                now = time.monotonic()
                if first_non_established is None:
                    st = tcp_state(sock)
                    if st != "ESTABLISHED":
                        first_non_established = (round(now - t0, 3), sent, st)
                if now - last_progress >= 0.5:
                    progress.append((round(now - t0, 2), sent, rss_kib(pid)))
                    last_progress = now
                if now - t0 > args.max_seconds:
                    outcome = "stopped: --max-seconds reached"
                    break
    except socket.timeout:
        outcome = f"send stalled (no progress for {args.stall_timeout}s; server not reading)"
    except (BrokenPipeError, ConnectionResetError) as e:
        outcome = f"send failed: {type(e).__name__} (errno {e.errno})"
    except OSError as e:
        outcome = f"send failed: {e!r}"
    t1 = time.monotonic()
    cpu1 = cpu_seconds(pid)
    if outcome.startswith("send failed") and first_non_established is None:
        # The loop only looks every 16 blocks; record the state right at the send error.
        first_non_established = (round(t1 - t0, 3), sent, tcp_state(sock) + " (at send error)")
    res["last_block_sent_ok_at_s_pings"] = last_block_ok
    res["longest_gap_between_blocks_s_at_pings"] = max_gap
    res["handshake_request_bytes"] = len(req)
    res["pings_sent"] = sent
    res["send_outcome"] = outcome
    res["send_outcome_at_s"] = round(t1 - t0, 3)
    res["send_seconds"] = round(t1 - t0, 3)
    res["pings_per_s"] = round(sent / max(t1 - t0, 1e-9))
    res["tcp_state_at_end_of_send"] = tcp_state(sock)
    res["first_non_established"] = first_non_established
    res["ss_at_end_of_send"] = ss_snapshot(args.port)
    res["rss_at_end_of_send_kib"] = rss_kib(pid)

    # Keep the connection open (still not reading) and let the server drain what is queued.
    time.sleep(args.settle)
    t2 = time.monotonic()
    cpu2 = cpu_seconds(pid)
    res["tcp_state_after_settle"] = tcp_state(sock)
    res["ss_after_settle"] = ss_snapshot(args.port)
    res["rss_after_settle_open_kib"] = rss_kib(pid)
    if first_non_established is None and res["tcp_state_after_settle"] != "ESTABLISHED":
        first_non_established = ("after send, within settle", sent,
                                 res["tcp_state_after_settle"])
        res["first_non_established"] = first_non_established
    watcher.stop()
    fc = watcher.first_change
    res["watcher_first_non_established_t_state_acked"] = fc
    res["watcher_last_established_t_acked"] = watcher.last_est
    if fc:
        res["pings_acked_by_server_kernel_at_end"] = (fc[2] - len(req)) // len(frame) \
            if fc[2] >= 0 else None
    res["acked_timeline_t_bytes"] = watcher.acked_timeline[:: max(1, len(watcher.acked_timeline) // 40)]
    sock.close()
    time.sleep(args.settle)
    t3 = time.monotonic()
    cpu3 = cpu_seconds(pid)
    sampler.stop()
    res["rss_after_close_kib"] = rss_kib(pid) if server_alive(pid) else None
    res["server_alive"] = server_alive(pid)
    res["rss_peak_kib"] = sampler.peak_kib
    res["cpu_s_send_window"] = round(cpu1 - cpu0, 2)
    res["wall_s_send_window"] = round(t1 - t0, 2)
    res["cpu_s_send_plus_settle"] = round(cpu2 - cpu0, 2)
    res["wall_s_send_plus_settle"] = round(t2 - t0, 2)
    res["cpu_pct_send_plus_settle"] = round(100 * (cpu2 - cpu0) / (t2 - t0), 1)
    res["cpu_s_total_incl_close"] = round(cpu3 - cpu0, 2)
    res["wall_s_total_incl_close"] = round(t3 - t0, 2)
    res["progress_t_sent_rss"] = progress[:: max(1, len(progress) // 20)]
    res["rss_timeline_t_rss_cpu"] = sampler.timeline[:: max(1, len(sampler.timeline) // 30)]
    print(json.dumps(res))


if __name__ == "__main__":
    main()
