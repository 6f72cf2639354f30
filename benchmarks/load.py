"""Load test: the Procfile's gunicorn (2 workers) on loopback, concurrent clients sending mixed requests.

    .venv/bin/python benchmarks/load.py [--seconds 60] [--concurrency 16] [--out benchmarks/load.json]

Each client thread keeps one connection and sends photo, 5 s clip or both (photo + clip) requests,
chosen at random, until time is up. Errors are any non-200 answer or a failed connection.
Worker RSS is sampled every few seconds from /proc.
"""

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent
MIX = ("photo", "clip5", "both")
SAMPLE_EVERY = 5


def procfile_server(port, workers):
    """The Procfile's web command (argument list, environment), bound to loopback instead of 0.0.0.0."""
    line = next(line for line in (common.ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    command = line.split(":", 1)[1].strip().replace("0.0.0.0:", "127.0.0.1:")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return ["bash", "-c", f"exec {command}"], {"PORT": str(port), "WEB_CONCURRENCY": str(workers), "PATH": path}


def client(port, bodies, deadline, seed, records, keep_alive=True):
    """Send random requests until the deadline; append (kind, status or error name, seconds)."""
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.perf_counter() < deadline:
        kind = rng.choice(MIX)
        try:
            status, seconds = common.post(connection, *bodies[kind])
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            status, seconds = type(error).__name__, None
        records.append((kind, status, seconds))
        if not keep_alive:
            connection.close()
    connection.close()


def run_clients(port, bodies, seconds, concurrency, keep_alive=True):
    """`concurrency` client threads for `seconds`: (records, elapsed seconds)."""
    records, deadline, began = [], time.perf_counter() + seconds, time.perf_counter()
    threads = [threading.Thread(target=client, args=(port, bodies, deadline, seed, records, keep_alive), daemon=True)
               for seed in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(1, deadline - time.perf_counter() + 90))  # a request times out after 60 s
    return list(records), time.perf_counter() - began


def sample(master, samples, stop):
    """Every SAMPLE_EVERY s: (seconds since start, {worker pid: RSS MB})."""
    start = time.perf_counter()
    while not stop.wait(SAMPLE_EVERY):
        samples.append((round(time.perf_counter() - start, 1), worker_rss(master)))


def worker_rss(master):
    return {pid: round(common.rss_mb(pid), 1) for pid in common.children(master)}


def summary(records, seconds):
    """Counts, errors and latency percentiles, overall and per request kind."""
    ok = [(kind, s) for kind, status, s in records if status == 200]
    errors = [f"{kind}: {status}" for kind, status, _ in records if status != 200]
    points = (50, 95, 99)
    return {"requests": len(records), "errors": len(errors), "error_examples": errors[:10],
            "throughput_per_s": round(len(ok) / seconds, 2),
            "latency_ms": common.percentiles([s for _, s in ok], points) if ok else None,
            "by_kind": {kind: {"requests": sum(k == kind for k, _ in ok),
                               "latency_ms": common.percentiles([s for k, s in ok if k == kind], points)}
                        for kind in MIX if any(k == kind for k, _ in ok)}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY for the Procfile command")
    parser.add_argument("--out", type=Path, default=HERE / "load.json")
    args = parser.parse_args()
    inputs = common.make_inputs()
    bodies = {kind: common.multipart(common.request_fields(inputs, kind)) for kind in MIX}
    port = common.free_port()
    command, env = procfile_server(port, args.workers)
    process, ready = common.start_server(command, port, env)
    try:
        # a new connection per request, so that every worker (some still loading) gets requests
        warm_up = run_clients(port, bodies, 5, args.concurrency, keep_alive=False)[0]
        rss_start = worker_rss(process.pid)
        samples, stop = [], threading.Event()
        threading.Thread(target=sample, args=(process.pid, samples, stop), daemon=True).start()
        records, elapsed = run_clients(port, bodies, args.seconds, args.concurrency)
        stop.set()
        rss_end = worker_rss(process.pid)
    finally:
        common.stop_server(process)
    report = {"command": command[-1], "seconds": round(elapsed, 1), "concurrency": args.concurrency,
              "workers": args.workers, "mix": MIX, "server_ready_s": round(ready, 2), **summary(records, elapsed),
              "warm_up": {"requests": len(warm_up), "errors": sum(status != 200 for _, status, _ in warm_up)},
              "worker_rss_mb": {"start": rss_start, "end": rss_end, "samples": samples},
              "workers_replaced": sorted(rss_start) != sorted(rss_end)}
    show(report)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten {args.out}")


def show(report):
    latency = report["latency_ms"] or {}
    print(f"\n{report['command']}")
    print(f"{report['seconds']} s, {report['concurrency']} clients, {report['workers']} workers, mix {'/'.join(MIX)}")
    print(f"requests {report['requests']}  errors {report['errors']}  throughput {report['throughput_per_s']}/s")
    print(f"{'latency (ms)':14}{'requests':>9}{'p50':>9}{'p95':>9}{'p99':>9}")
    for name, part in [("all", {"requests": report["requests"], "latency_ms": latency}), *report["by_kind"].items()]:
        print(f"{name:14}{part['requests']:>9}" + "".join(f"{part['latency_ms'].get(p, 0):9.1f}"
                                                       for p in ("p50", "p95", "p99")))
    rss = report["worker_rss_mb"]
    for pid in rss["start"]:
        series = " ".join(f"{values.get(pid, 0):.0f}" for _, values in rss["samples"])
        print(f"worker {pid} RSS MB: start {rss['start'][pid]:.0f}, "
              f"end {rss['end'].get(pid, 0):.0f}; every {SAMPLE_EVERY} s: {series}")
    print(f"errors == 0: {'PASS' if report['errors'] == 0 else 'FAIL'}; workers replaced: {report['workers_replaced']}")


if __name__ == "__main__":
    main()
