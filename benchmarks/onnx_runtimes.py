"""The aligned-face model (models/face_expression) under ONNX Runtime (all graph optimisations, as
served, and the basic ones) and cv2.dnn, and the OpenCV Zoo's original file it was rewritten from (PRelu
as Max, scripts/face_expression_export.py) under ONNX Runtime as served, side by side: load time,
resident memory it adds, and per-face latency on one thread, each in a fresh process.

    .venv/bin/python benchmarks/onnx_runtimes.py [--reps 200] [--out benchmarks/onnx_runtimes.json]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common

SERVED = Path(__file__).resolve().parent.parent / "models" / "face_expression" / "mobilefacenet_int8.onnx"
ORIGINAL = (common.SHARED / "models" / "face_expression_mobilefacenet"
            / "facial_expression_recognition_mobilefacenet_2022july_int8.onnx")
# name: (model file, runtime)
RUNS = {"served, onnxruntime:ORT_ENABLE_ALL": (SERVED, "onnxruntime:ORT_ENABLE_ALL"),
        "served, onnxruntime:ORT_ENABLE_BASIC": (SERVED, "onnxruntime:ORT_ENABLE_BASIC"),
        "served, cv2.dnn": (SERVED, "cv2.dnn"),
        "original, onnxruntime:ORT_ENABLE_ALL": (ORIGINAL, "onnxruntime:ORT_ENABLE_ALL"),
        "original, onnxruntime:ORT_ENABLE_BASIC": (ORIGINAL, "onnxruntime:ORT_ENABLE_BASIC")}


def measure(model, runtime, reps):
    """In this process: load `runtime` (onnxruntime:<graph optimisation level> or cv2.dnn) and the
    model file, then time `reps` calls on one input."""
    import numpy as np

    before, start = common.rss_mb(), time.perf_counter()
    if runtime == "cv2.dnn":
        import cv2
        cv2.setNumThreads(1)
        net = cv2.dnn.readNetFromONNX(str(model))

        def run(batch):
            net.setInput(batch)
            return net.forward()
    else:
        import onnxruntime
        optimisation = runtime.split(":")[1]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, optimisation)
        session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

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
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    parser.add_argument("--run", help=argparse.SUPPRESS)  # the child process's part: a RUNS name
    args = parser.parse_args()
    if args.run:
        print(json.dumps(measure(*RUNS[args.run], args.reps)))
        return
    results = {}
    for name in RUNS:
        child = subprocess.run([sys.executable, __file__, "--run", name, "--reps", str(args.reps)],
                               env={**os.environ, **common.ONE_THREAD}, capture_output=True, text=True,
                               check=True)
        results[name] = json.loads(child.stdout.splitlines()[-1])
        print(name, results[name])
    served, *others = RUNS
    for name in others:
        print(f"{name} p50 / {served} p50 = "
              f"{results[name]['latency_ms']['p50'] / results[served]['latency_ms']['p50']:.2f}")
    print(f"load average {os.getloadavg()[0]:.2f}")
    Path(args.out).write_text(json.dumps({"reps": args.reps, "runs": results,
                                          "load_average_at_end": os.getloadavg()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
