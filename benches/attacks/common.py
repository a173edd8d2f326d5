"""Shared helpers for the dualcast probes: HS256 JWTs and /proc sampling of the server."""

import base64
import hashlib
import hmac
import json
import math
import os
import socket
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_hs256(secret: str, sub: str, role: str = "player", ttl: int = 3600) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"sub": sub, "exp": int(time.time()) + ttl, "role": role}
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is state (field 3); utime is field 14, stime field 15 -> index 11, 12
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Sampler(threading.Thread):
    """Samples the server's RSS every `interval` s; keeps the peak and a short timeline."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.peak_at = 0.0
        self.timeline = []  # (t, rss_kib, cpu_s)
        self.t0 = time.monotonic()
        self._halt = threading.Event()

    def run(self):
        last_tl = -1.0
        while not self._halt.is_set():
            try:
                rss = rss_kib(self.pid)
                cpu = cpu_seconds(self.pid)
            except OSError:
                break
            t = time.monotonic() - self.t0
            if rss > self.peak_kib:
                self.peak_kib, self.peak_at = rss, t
            if t - last_tl >= 0.5:
                self.timeline.append((round(t, 2), rss, round(cpu, 2)))
                last_tl = t
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(2)


def server_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        return False


def healthz_once(host: str, port: int, timeout: float = 5.0):
    """One GET /healthz on a fresh connection; (seconds, status line or error)."""
    t = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        status = data.split(b"\r\n", 1)[0].decode(errors="replace")
    except OSError as e:
        status = f"error: {e!r}"
    return time.perf_counter() - t, status


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = max(0, min(len(v) - 1, math.ceil(p / 100.0 * len(v)) - 1))  # nearest rank
    return v[k]
