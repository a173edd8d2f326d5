#!/usr/bin/env python3
"""Sequential GET /healthz on fresh connections; prints JSON with latencies (ms)."""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import healthz_once, percentile  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--interval", type=float, default=0.04,
                    help="start a request every this many s (back to back when slower)")
    ap.add_argument("--deadline", type=float, default=0.0,
                    help="stop starting requests after this many s (0: no limit)")
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args()
    lat, statuses = [], {}
    t0 = time.monotonic()
    for i in range(args.count):
        start_at = t0 + i * args.interval
        now = time.monotonic()
        if args.deadline and now - t0 > args.deadline:
            break
        if start_at > now:
            time.sleep(start_at - now)
        secs, status = healthz_once(args.host, args.port, args.timeout)
        lat.append(secs * 1000)
        statuses[status] = statuses.get(status, 0) + 1
    ok = lat
    print(json.dumps({
        "n": len(lat),
        "wall_s": round(time.monotonic() - t0, 2),
        "p50_ms": round(percentile(ok, 50), 2),
        "p99_ms": round(percentile(ok, 99), 2),
        "max_ms": round(max(ok), 2) if ok else None,
        "statuses": statuses,
    }))


if __name__ == "__main__":
    main()
