"""The aligned-face model (models/face_expression) under ONNX Runtime (basic graph optimisations, as
served, and all of them) and cv2.dnn, side by side: load time, resident memory it adds, and
per-face latency on one thread, each in a fresh process.

    .venv/bin/python benchmarks/onnx_runtimes.py [--reps 200]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common

MODEL = Path(__file__).resolve().parent.parent / "models" / "face_expression" / "mobilefacenet_int8.onnx"


def measure(runtime, reps):
    """In this process: load `runtime` (onnxruntime:<graph optimisation level> or cv2.dnn) and the
    model, then time `reps` calls on one input."""
    import numpy as np

    before, start = common.rss_mb(), time.perf_counter()
    if runtime == "cv2.dnn":
        import cv2
        cv2.setNumThreads(1)
        net = cv2.dnn.readNetFromONNX(str(MODEL))

        def run(batch):
            net.setInput(batch)
            return net.forward()
    else:
        import onnxruntime
        optimisation = runtime.split(":")[1]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, optimisation)
        session = onnxruntime.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])

        def run(batch):
            return session.run(None, {"data": batch})[0]
    face = np.random.default_rng(0).uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32)
    run(face)
    loaded = time.perf_counter() - start
    timings = []
    for _ in range(reps):
        start = time.perf_counter()
        run(face)
        timings.append(time.perf_counter() - start)
    return {"load_and_first_call_s": round(loaded, 3), "added_rss_mb": round(common.rss_mb() - before, 1),
            "latency_ms": common.percentiles(timings)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--runtime", help=argparse.SUPPRESS)  # the child process's part
    args = parser.parse_args()
    if args.runtime:
        print(json.dumps(measure(args.runtime, args.reps)))
        return
    results = {}
    for runtime in ("onnxruntime:ORT_ENABLE_BASIC", "onnxruntime:ORT_ENABLE_ALL", "cv2.dnn"):
        child = subprocess.run([sys.executable, __file__, "--runtime", runtime, "--reps", str(args.reps)],
                               env={**os.environ, **common.ONE_THREAD}, capture_output=True, text=True,
                               check=True)
        results[runtime] = json.loads(child.stdout.splitlines()[-1])
        print(runtime, results[runtime])
    shipped = results["onnxruntime:ORT_ENABLE_BASIC"]["latency_ms"]["p50"]
    for runtime in ("onnxruntime:ORT_ENABLE_ALL", "cv2.dnn"):
        print(f"{runtime} p50 / shipped (onnxruntime:ORT_ENABLE_BASIC) p50 = "
              f"{results[runtime]['latency_ms']['p50'] / shipped:.2f}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
