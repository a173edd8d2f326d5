"""Turns benches/cluster.sh's JSON lines into its tables (medians per case and load)."""
import json
import statistics
import sys

path, smoke = sys.argv[1], sys.argv[2] == "1"
runs = {}
with open(path) as lines:
    for line in lines:
        record = json.loads(line)
        runs.setdefault((record["case"], record["load"]), []).append(record)

CASES = ["one-node", "one-node-2x", "one-node-redis", "two-nodes"]
LOADS = {"fanout": "as fast as possible", "latency": "paced"}


def by_server(record, key, single):
    """A per-server list: the loadgen's own for several servers, else the single figure."""
    if key in record:
        return record[key]
    value = record
    for part in single:
        value = value.get(part) if isinstance(value, dict) else None
    return [value]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def median_at(records, key, single, index):
    return median([(by_server(r, key, single) + [None] * 2)[index] for r in records])


def fmt(number, digits=2):
    if number is None:
        return "–"
    return f"{number:,.{digits}f}"


def per_publish_us(record, index):
    cpu = (by_server(record, "cpu_s_by_server", ("server_cpu_seconds",)) + [None] * 2)[index]
    return None if cpu is None else cpu / record["publishes"] * 1e6


def load_name(load, records):
    first = records[0]
    pace = f"{first['rate']:g}/s" if first.get("rate") else LOADS.get(load, load)
    return f"{load} ({first['publishes']} publishes, {pace})"


lost = duplicates = failures = 0
print("| case | load | subscribers (per node) | deliveries/s | CPU-s per 1M deliveries: node a | node b | total (runs) | p50 / p99 ms: node a | node b | lost | duplicates | failed publishes |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for case in CASES:
    for load in LOADS:
        records = runs.get((case, load), [])
        if not records:
            continue
        nodes = records[0]["nodes"]
        run_lost = sum(r["lost"] for r in records)
        run_dups = sum(r["duplicates"] for r in records)
        run_failures = sum(r["publish_failures"] for r in records)
        lost, duplicates, failures = lost + run_lost, duplicates + run_dups, failures + run_failures
        per_million = [
            median_at(records, "cpu_seconds_per_million_by_server", ("cpu_seconds_per_million",), i)
            for i in range(2)
        ]
        latency = [
            (
                median_at(records, "p50_ms_by_server", ("latency_ms", "p50"), i),
                median_at(records, "p99_ms_by_server", ("latency_ms", "p99"), i),
            )
            for i in range(2)
        ]
        total = median([r["cpu_seconds_per_million"] for r in records])
        total_runs = ", ".join(fmt(r["cpu_seconds_per_million"], 3) for r in records)
        rate = median([r["deliveries_per_second"] for r in records])
        subscribers = records[0]["connections"]
        b = lambda text: text if nodes > 1 else "–"
        print(
            f"| {case} | {load_name(load, records)} | {subscribers:,} ({subscribers // nodes:,}) | {fmt(rate, 0)} "
            f"| {fmt(per_million[0], 3)} | {b(fmt(per_million[1], 3))} | {fmt(total, 3)} ({total_runs}) "
            f"| {fmt(latency[0][0])} / {fmt(latency[0][1])} | {b(fmt(latency[1][0]) + ' / ' + fmt(latency[1][1]))} "
            f"| {run_lost} | {run_dups} | {run_failures} |"
        )

print()
print("The backplane's cost per publish: each node's CPU per publish, minus one-node's (the same")
print("publishes to as many subscribers, with no backplane). Node a takes the publishes, node b")
print("only reads them from the log. Redis's CPU is over the whole run, joins and connects included.")
print()
print("| case | load | node a: CPU µs per publish | minus one-node | node b: CPU µs per publish | minus one-node | redis-server CPU-s, whole run |")
print("|---|---|---|---|---|---|---|")
for load in LOADS:
    base = median([per_publish_us(r, 0) for r in runs.get(("one-node", load), [])])
    for case in CASES:
        records = runs.get((case, load), [])
        if not records:
            continue
        nodes = records[0]["nodes"]
        cost = [median([per_publish_us(r, i) for r in records]) for i in range(2)]
        extra = [None if c is None or base is None else c - base for c in cost]
        redis = median([r.get("redis_cpu_seconds_whole_run") for r in records])
        b = lambda text: text if nodes > 1 else "–"
        print(
            f"| {case} | {load_name(load, records)} | {fmt(cost[0], 1)} | {fmt(extra[0], 1) if case != 'one-node' else '–'} "
            f"| {b(fmt(cost[1], 1))} | {b(fmt(extra[1], 1))} | {fmt(redis)} |"
        )
print()
print(f"Lost deliveries, all runs: {lost}; duplicates: {duplicates}; failed publishes: {failures}"
      f" ({sum(len(r) for r in runs.values())} runs{', smoke sizes' if smoke else ''}).")
sys.exit(0 if lost == duplicates == failures == 0 else 1)
