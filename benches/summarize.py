"""Turns the load generator's JSON lines into the results table (medians per scenario)."""
import json
import statistics
import sys

path, smoke = sys.argv[1], sys.argv[2] == "1"
runs = {}
with open(path) as lines:
    for line in lines:
        record = json.loads(line)
        runs.setdefault(record["label"], []).append(record)

# (label, what, key path, unit, target, compare)
MEASURES = [
    ("idle-ws-5k", "idle WebSocket, server memory per connection", ("kib_per_connection",), "KiB", 6, "le"),
    ("idle-sse-5k", "idle SSE, server memory per connection", ("kib_per_connection",), "KiB", 4, "le"),
    ("fanout-ws-1k", "fan-out, server CPU-s per 1M deliveries, 1k WS", ("cpu_seconds_per_million",), "s", 1.2, "le"),
    ("fanout-ws-5k", "fan-out, server CPU-s per 1M deliveries, 5k WS", ("cpu_seconds_per_million",), "s", 1.0, "le"),
    ("fanout-sse-1k", "fan-out, server CPU-s per 1M deliveries, 1k SSE", ("cpu_seconds_per_million",), "s", 1.0, "le"),
    ("latency-ws-1k", "p99 delivery latency, 1k WS at 20 publishes/s", ("latency_ms", "p99"), "ms", 12, "le"),
    ("connect-ws-5k", "WebSocket connects per second with JWT auth", ("connects_per_second",), "/s", 8000, "ge"),
]
EXTRA = [
    ("fanout-ws-1k", "fan-out deliveries per second, 1k WS", ("deliveries_per_second",), "/s"),
    ("fanout-ws-5k", "fan-out deliveries per second, 5k WS", ("deliveries_per_second",), "/s"),
    ("fanout-sse-1k", "fan-out deliveries per second, 1k SSE", ("deliveries_per_second",), "/s"),
    ("latency-ws-1k", "p50 delivery latency, 1k WS at 20 publishes/s", ("latency_ms", "p50"), "ms"),
    ("latency-ws-1k", "p99.9 delivery latency, 1k WS at 20 publishes/s", ("latency_ms", "p999"), "ms"),
    ("connect-ws-5k", "WebSocket connect latency p99", ("latency_ms", "p99"), "ms"),
    ("idle-ws-5k", "idle WebSocket connect rate", ("connects_per_second",), "/s"),
]


def value(record, keys):
    for key in keys:
        record = record.get(key) if isinstance(record, dict) else None
    return record


def fmt(number):
    if number is None:
        return "n/a"
    return f"{number:,.0f}" if abs(number) >= 100 else f"{number:.2f}"


def median(label, keys):
    values = [value(r, keys) for r in runs.get(label, [])]
    values = [v for v in values if v is not None]
    return (statistics.median(values), values) if values else (None, [])


lost = sum(r.get("lost", 0) for records in runs.values() for r in records)
print("| measure | median | runs | target | met |")
print("|---|---|---|---|---|")
if smoke:
    for label, records in runs.items():
        print(f"| {label} (smoke) | {records[0].get('mode')} ok | 1 | runs | yes |")
else:
    for label, what, keys, unit, target, compare in MEASURES:
        mid, values = median(label, keys)
        met = "n/a" if mid is None else ("yes" if (mid <= target if compare == "le" else mid >= target) else "no")
        sign = "≤" if compare == "le" else "≥"
        print(f"| {what} | {fmt(mid)} {unit} | {', '.join(fmt(v) for v in values)} | {sign} {target} {unit} | {met} |")
    for label, what, keys, unit in EXTRA:
        mid, values = median(label, keys)
        print(f"| {what} | {fmt(mid)} {unit} | {', '.join(fmt(v) for v in values)} | | |")
print(f"| lost messages, all runs | {lost} | {sum(len(r) for r in runs.values())} runs | 0 | {'yes' if lost == 0 else 'no'} |")
sys.exit(0 if lost == 0 else 1)
