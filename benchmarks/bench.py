"""emorec against the original system's way of serving (TensorFlow eager Keras in Flask, see
baseline.py), side by side in one run: start-up, memory, per-request latency in-process and over HTTP.

    .venv/bin/python benchmarks/bench.py [--quick] [--out benchmarks/results.json]

Everything is pinned to one thread. Ratios are ours/baseline; speed-up = baseline p50 / ours p50,
which is also the throughput ratio ours/baseline of a one-thread worker serving one request at a time.
"""

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent
KINDS = ("photo", "crop", "clip5", "clip30")
BACKENDS = ("emorec", "baseline")
APPS = {"emorec": ["emorec.web:create_app()"], "baseline": ["--pythonpath", str(HERE), "baseline:create_app()"]}
ENV = {**common.ONE_THREAD, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
WARMUP = 2


def probe(backend, folder, reps):
    """Figures of a fresh serving process (probe.py); ready_s counts from the spawn, interpreter included."""
    spawned = time.time()
    result = subprocess.run([sys.executable, str(HERE / "probe.py"), backend, folder, str(reps)],
                            env={**os.environ, **ENV}, capture_output=True, text=True, timeout=900)
    if result.returncode:
        raise RuntimeError(f"probe {backend} failed:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.splitlines()[-1])
    report["ready_s"] = report.pop("ready_at") - spawned
    report["interpreter_s"] = report.pop("started_at") - spawned
    return report


def serve(backend, inputs, reps):
    """POST /api/predict to gunicorn (1 worker, 1 thread) from one client: latencies, worker RSS."""
    port = common.free_port()
    command = [*common.gunicorn(port), *APPS[backend]]
    process, ready = common.start_server(command, port, ENV)
    try:
        (worker,) = common.children(process.pid)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        latency = {}
        for kind in KINDS:
            body, content_type = common.multipart(common.request_fields(inputs, kind))
            timings = []
            for _ in range(WARMUP + reps):
                status, seconds = common.post(connection, body, content_type)
                if status != 200:
                    raise RuntimeError(f"{backend} {kind}: HTTP {status}")
                timings.append(seconds)
            latency[kind] = common.percentiles(timings[WARMUP:])
        return {"ready_s": ready, "latency_ms": latency, "worker_rss_mb": common.rss_mb(worker),
                "tensorflow_mapped": common.maps_tensorflow(worker)}
    finally:
        common.stop_server(process)


def rows(results):
    """(name, ours, baseline, unit, is a latency) table rows."""
    table = [("ready, fresh process", "process", "ready_s", "s"), ("  of which import", "process", "import_s", "s"),
             ("  of which model load", "process", "load_s", "s"), ("RSS after load", "process", "rss_loaded_mb", "MB"),
             ("RSS after requests", "process", "rss_after_mb", "MB"), ("RSS peak", "process", "rss_peak_mb", "MB"),
             ("gunicorn ready", "http", "ready_s", "s"), ("gunicorn worker RSS", "http", "worker_rss_mb", "MB")]
    found = [(name, results["emorec"][part][key], results["baseline"][part][key], unit, False)
             for name, part, key, unit in table]
    found += [(f"{kind} p50 CPU time in-process", results["emorec"]["process"]["cpu_ms"][kind]["p50"],
               results["baseline"]["process"]["cpu_ms"][kind]["p50"], "ms", True) for kind in KINDS]
    for part, where in (("process", "in-process"), ("http", "HTTP")):
        for kind in KINDS:
            for point in ("p50", "p95"):
                found.append((f"{kind} {point} {where}", results["emorec"][part]["latency_ms"][kind][point],
                              results["baseline"][part]["latency_ms"][kind][point], "ms", True))
    return found


def targets(results):
    """(target, measured, passed) against the serving goals: issue 7's, the photo latency as issue 21
    revised it, and the speech latency, start-up and worker memory as issue 20 (the Whisper encoder) set them."""
    ours = results["emorec"]
    worker_mb = max(ours["process"]["rss_after_mb"], ours["http"]["worker_rss_mb"])
    speedups = {kind: results["baseline"]["http"]["latency_ms"][kind]["p50"] / ours["http"]["latency_ms"][kind]["p50"]
                for kind in KINDS}
    slowest = min(speedups, key=speedups.get)
    photo, clip5, clip30 = (ours["process"]["latency_ms"][kind]["p50"] for kind in ("photo", "clip5", "clip30"))
    ready = ours["process"]["ready_s"]
    return [("photo p50 <= 30 ms (in-process; issue 21, two face models)", f"{photo:.1f} ms", photo <= 30),
            ("5 s clip p50 <= 150 ms (in-process; issue 20)", f"{clip5:.1f} ms", clip5 <= 150),
            ("30 s clip p50 <= 900 ms (in-process; issue 20)", f"{clip30:.1f} ms", clip30 <= 900),
            ("ready <= 1.5 s (fresh process; issue 20)", f"{ready:.2f} s", ready <= 1.5),
            ("<= 350 MB per worker (max RSS after requests; issue 20)", f"{worker_mb:.0f} MB", worker_mb <= 350),
            ("no TensorFlow in emorec (sys.modules, worker's libraries)",
             str(not (ours["process"]["tensorflow_loaded"] or ours["http"]["tensorflow_mapped"])),
             not (ours["process"]["tensorflow_loaded"] or ours["http"]["tensorflow_mapped"])),
            (">= 10x baseline throughput (HTTP speed-up, every input)",
             f"{speedups[slowest]:.1f}x (lowest: {slowest})", speedups[slowest] >= 10)]


def show(results):
    machine = results["machine"]
    print(f"\n{machine['cpus']} CPUs, load average {machine['load_average_at_start'][0]:.2f} at start, "
          f"{machine['load_average_at_end'][0]:.2f} at end; {results['settings']['timed_requests_per_input']} "
          f"timed requests per input after {WARMUP} warm-up, one thread everywhere")
    print("baseline: TensorFlow eager Keras in Flask/gunicorn; face CNN with random weights, YAMNet float "
          "weights + random dense head (timing only)")
    print("ours/base: emorec / baseline (lower is better); speed-up: baseline / emorec latency, on p50 rows the "
          "throughput ratio emorec / baseline of a 1-thread worker")
    print(f"\n{'':34}{'emorec':>10}{'baseline':>10}{'ours/base':>11}{'speed-up':>10}")
    for name, ours, base, unit, latency in rows(results):
        speedup = f"{base / ours:9.1f}x" if latency else ""
        print(f"{name + f' ({unit})':34}{ours:10.2f}{base:10.2f}{ours / base:11.3f}{speedup}")
    print(f"\n{'target':56}{'measured':>24}  result")
    for name, measured, passed in results["targets"]:
        print(f"{name:56}{measured:>24}  {'PASS' if passed else 'FAIL'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 timed requests per input instead of 40")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    reps = 8 if args.quick else 40
    inputs = common.make_inputs()
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_average_at_start": os.getloadavg()},
               "settings": {"timed_requests_per_input": reps, "warm-up": WARMUP, "threads": 1,
                            "inputs": {kind: len(data) for kind, data in inputs.items()}}}
    with tempfile.TemporaryDirectory() as folder:
        for name, data in inputs.items():
            Path(folder, name).write_bytes(data)
        for backend in BACKENDS:
            print(f"{backend}: fresh process ...", flush=True)
            results[backend] = {"process": probe(backend, folder, reps)}
    for backend in BACKENDS:
        print(f"{backend}: gunicorn ...", flush=True)
        results[backend]["http"] = serve(backend, inputs, reps)
    results["rows"] = [{"name": name, "unit": unit, "emorec": ours, "baseline": base, "ours_over_baseline": ours / base,
                        **({"speedup": base / ours} if latency else {})}
                       for name, ours, base, unit, latency in rows(results)]
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["targets"] = targets(results)
    show(results)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
