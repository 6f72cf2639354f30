"""`emorec batch` on the local engine and on Ray (1 and 2 workers), side by side in one run on this machine:
files/s for 640x480 photos and for 5 s clips, the fixed cost of a run, Ray's start-up, memory per worker.

    .venv/bin/python benchmarks/ray_bench.py [--files 240] [--out benchmarks/ray.json]

Each engine scores the same folder of identical files twice: one file (its fixed cost: process or actor
start, model load) and --files files, Ray after a first run (timed apart: it starts the worker processes);
steady files/s = (files - 1) / (the difference). Everything runs one thread per process (Ray: one actor
per worker, half a logical CPU each, on `ray.init(num_cpus=2)`).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent
KINDS = {"photo": "jpg", "clip5": "wav"}
WORKERS = (1, 2)


def local_run(folder, out):
    """Wall seconds of `emorec batch folder` (local engine) in a fresh process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "emorec.cli", "batch", folder, "--out", out], cwd=common.ROOT,
                   env={**os.environ, **common.ONE_THREAD}, check=True, capture_output=True)
    return time.perf_counter() - start


def ray_run(distributed, folder, out, workers):
    """Seconds of a Ray run (from the dataset's creation to the last file written; Ray already started)."""
    return distributed.run(distributed.inputs([folder]), out, workers=workers)["seconds"]


class WorkerMemory:
    """Peak resident memory of each Ray scoring actor process, sampled every 0.2 s while running."""

    def __init__(self):
        self.peaks, self.running = {}, True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        while self.running:
            for pid in ray_processes("MapWorker"):
                try:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), common.rss_mb(pid))
                except (OSError, ValueError):
                    continue
            time.sleep(0.2)

    def stop(self):
        self.running = False
        self.thread.join()
        return round(max(self.peaks.values()), 1) if self.peaks else None


def ray_processes(marker):
    """Process ids whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def steady(files, one, many):
    return round((files - 1) / (many - one), 2) if many > one else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=240, help="files per kind in the timed runs")
    parser.add_argument("--out", type=Path, default=HERE / "ray.json")
    args = parser.parse_args()
    inputs = common.make_inputs()
    results = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
               "settings": {"files": args.files, "workers": WORKERS, "threads": 1}}
    with tempfile.TemporaryDirectory() as scratch:
        folders = {}
        for kind, suffix in KINDS.items():
            for count in (1, args.files):
                folder = Path(scratch, f"{kind}-{count}")
                folder.mkdir()
                for number in range(count):
                    (folder / f"{number:06d}.{suffix}").write_bytes(inputs[kind])
                folders[kind, count] = str(folder)
        for kind in KINDS:
            print(f"local engine: {kind} ...", flush=True)
            one, many = (local_run(folders[kind, count], f"{scratch}/local-{kind}-{count}.jsonl")
                         for count in (1, args.files))
            results.setdefault("local", {})[kind] = {"one_file_s": round(one, 3), "run_s": round(many, 3),
                                                     "files_per_s": round(args.files / many, 2),
                                                     "steady_files_per_s": steady(args.files, one, many)}
        results["local"]["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)

        os.environ.update(common.ONE_THREAD)  # Ray's worker processes inherit the driver's environment
        start = time.perf_counter()
        import ray
        from emorec import distributed
        ray.init(num_cpus=2, include_dashboard=False)
        results["ray_start_s"] = round(time.perf_counter() - start, 3)
        time.sleep(2)
        results["ray_runtime_rss_mb"] = round(sum(common.rss_mb(pid) for pid in ray_processes("ray/core/src")
                                                  + ray_processes("ray/_private") + ray_processes("ray/dashboard")
                                                  if pid != os.getpid()), 1)
        memory = WorkerMemory()
        results["ray_first_run_s"] = ray_run(distributed, folders["photo", 1], f"{scratch}/ray-first.parquet", 1)
        for workers in WORKERS:
            for kind in KINDS:
                print(f"ray, {workers} workers: {kind} ...", flush=True)
                one, many = (ray_run(distributed, folders[kind, count],
                                     f"{scratch}/ray-{workers}-{kind}-{count}.parquet", workers)
                             for count in (1, args.files))
                results.setdefault(f"ray_{workers}", {})[kind] = {
                    "one_file_s": one, "run_s": many, "files_per_s": round(args.files / many, 2),
                    "steady_files_per_s": steady(args.files, one, many)}
        results["ray_worker_peak_rss_mb"] = memory.stop()
        ray.shutdown()
    results["machine"]["load_average_at_end"] = os.getloadavg()
    show(results)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten {args.out}")


def cell(value):
    return f"{value:12.2f}" if value is not None else f"{'-':>12}"


def show(results):
    machine = results["machine"]
    print(f"\n{machine['cpus']} CPUs, load average {machine['load_average_at_start'][0]:.2f} at start, "
          f"{machine['load_average_at_end'][0]:.2f} at end; {results['settings']['files']} files per kind")
    engines = ["local", *(f"ray_{workers}" for workers in WORKERS)]
    print(f"\n{'':28}" + "".join(f"{engine:>12}" for engine in engines))
    for kind in KINDS:
        for key, name in (("files_per_s", "files/s"), ("steady_files_per_s", "steady files/s"),
                          ("one_file_s", "one-file run (s)")):
            print(f"{kind + ' ' + name:28}" + "".join(cell(results[engine][kind][key]) for engine in engines))
        rates = [results[engine][kind]["steady_files_per_s"] for engine in engines]
        print(f"{kind + ' steady / local':28}" + "".join(cell(rate and rates[0] and rate / rates[0])
                                                       for rate in rates))
    print(f"\nray.init: {results['ray_start_s']:.2f} s; the first run (one photo, cold worker processes) "
          f"{results['ray_first_run_s']:.2f} s; Ray's own processes {results['ray_runtime_rss_mb']:.0f} MB; "
          f"a scoring actor at most {results['ray_worker_peak_rss_mb']} MB; the local engine's process at most "
          f"{results['local']['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
