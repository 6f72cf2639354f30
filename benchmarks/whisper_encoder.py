"""The Whisper base encoder exported with float32, float16 and int8 (dynamic range) weights, side by side:
file size, load time, resident memory, time per clip on one thread (log-mel included), and parity with
the Keras encoder (float32) on real speech: RAVDESS Actor_21 clips joined, cut to 5 s and 30 s.

    .venv/bin/python benchmarks/whisper_encoder.py --model-bin PATH/model.bin [--reps 10] [--out PATH.json]

Memory and load time come from a fresh process per variant (and per chunk length for float16), which
imports neither TensorFlow nor PyTorch. Times come from one process holding all three variants, their
runs interleaved rep by rep, so that other load on the machine hits them alike: compare their ratios.
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

import common

HERE = Path(__file__).resolve().parent
VARIANTS = ("float32", "float16", "int8")
CLIPS = ("clip5", "clip30")
FLOAT16_CHUNKS = (15, 10)  # seconds: the memory that shorter chunks save


def clips():
    """{"clip5": waveform, "clip30": waveform} of common.make_inputs' speech."""
    inputs = common.make_inputs()
    return {kind: soundfile.read(io.BytesIO(inputs[kind]), dtype="float32")[0] for kind in CLIPS}


def memory(path, folder, chunk_seconds):
    """Runs in a fresh process: load time and RSS; saves each clip's layer frames to folder."""
    started = time.perf_counter()
    from emorec.speech_encoder import WhisperEncoder
    encoder = WhisperEncoder(path, chunk_seconds=chunk_seconds)
    report = {"load_s": round(time.perf_counter() - started, 3), "rss_loaded_mb": round(common.rss_mb(), 1)}
    for kind, waveform in clips().items():
        np.save(Path(folder) / f"{kind}.npy", encoder.layer_frames(waveform))
    report.update(rss_after_mb=round(common.rss_mb(), 1), rss_peak_mb=round(common.rss_mb(field="VmHWM"), 1),
                  tensorflow_loaded="tensorflow" in sys.modules, torch_loaded="torch" in sys.modules)
    print(json.dumps(report))


def timing(paths, reps):
    """Runs in a fresh process: p50 ms per variant and clip, runs interleaved; and the log-mel's share."""
    from emorec.speech_encoder import WhisperEncoder, log_mel
    encoders = {Path(path).stem: WhisperEncoder(path) for path in paths}
    runs = {"log_mel": log_mel, **{name: encoder.layer_frames for name, encoder in encoders.items()}}
    report = {}
    for kind, waveform in clips().items():
        seconds = {name: [] for name in runs}
        for rep in range(reps + 1):  # the first round warms up
            for name, run in runs.items():
                start = time.perf_counter()
                run(waveform)
                if rep:
                    seconds[name].append(time.perf_counter() - start)
        report[kind] = {name: common.percentiles(values, (50,))["p50"] for name, values in seconds.items()}
    print(json.dumps(report))


def spawn(*args):
    """The last stdout line of this script run with `args` in a fresh one-thread process, as JSON."""
    run = subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, **common.ONE_THREAD, "PYTHONPATH": str(common.ROOT)}, timeout=3600)
    if run.returncode:
        raise RuntimeError(f"{args} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.splitlines()[-1])


def parity(frames, reference):
    """Largest absolute error over all layers and frames, that relative to the reference's largest value,
    and the largest relative error of the pooled (mean, std) clip features."""
    from emorec.speech_encoder import pool
    error = np.abs(frames - reference).max()
    pooled, pooled_reference = pool(frames), pool(reference)
    return {"max_abs": float(error), "max_abs_over_max_ref": float(error / np.abs(reference).max()),
            "pooled_max_rel": float((np.abs(pooled - pooled_reference) / (np.abs(pooled_reference) + 1e-3)).max())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-bin", required=True)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", default=str(HERE / "whisper.json"))
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = "tensorflow"
    from emorec.speech_encoder import log_mel
    from emorec.whisper_keras import build_whisper_encoder, export_tflite
    model = build_whisper_encoder(args.model_bin)
    references = {kind: model.predict(log_mel(waveform)[None], verbose=0)[0] for kind, waveform in clips().items()}
    results = {"reps": args.reps, "variants": {}, "float16_chunks": {}}
    with tempfile.TemporaryDirectory() as folder:
        paths = [export_tflite(model, Path(folder) / f"{variant}.tflite", variant) for variant in VARIANTS]
        for variant, path in zip(VARIANTS, paths):
            results["variants"][variant] = {
                "bytes": path.stat().st_size, **spawn("--memory", path, folder, 30),
                "parity_vs_keras": {kind: parity(np.load(Path(folder) / f"{kind}.npy"), reference)
                                    for kind, reference in references.items()}}
            print(variant, json.dumps(results["variants"][variant]), flush=True)
        for seconds in FLOAT16_CHUNKS:
            results["float16_chunks"][f"{seconds}s"] = spawn("--memory", paths[1], folder, seconds)
        results["p50_ms"] = spawn("--timing", args.reps, *paths)
        results["p50_ratio_to_float32"] = {kind: {variant: round(times[variant] / times["float32"], 3)
                                                  for variant in VARIANTS} for kind, times in results["p50_ms"].items()}
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({key: results[key] for key in ("float16_chunks", "p50_ms", "p50_ratio_to_float32")}))
    print(f"-> {args.out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        memory(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    elif sys.argv[1:2] == ["--timing"]:
        timing(sys.argv[3:], int(sys.argv[2]))
    else:
        main()
