"""The Whisper base encoder exported with float32, float16 and int8 (dynamic range) weights, side by side:
file size, load time, resident memory, p50 per clip on one thread (log-mel included), and parity with the
Keras encoder (float32) on real speech: RAVDESS Actor_21 clips joined, cut to 5 s and 30 s.

    .venv/bin/python benchmarks/whisper_encoder.py --model-bin PATH/model.bin [--reps 10] [--out benchmarks/whisper.json]

Each variant is timed in a fresh process that imports neither TensorFlow nor PyTorch.
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


def clips():
    """{"clip5": waveform, "clip30": waveform} of common.make_inputs' speech."""
    inputs = common.make_inputs()
    return {kind: soundfile.read(io.BytesIO(inputs[kind]), dtype="float32")[0] for kind in CLIPS}


def child(path, folder, reps):
    """Runs in the timed process: prints load time, RSS, p50s; saves each clip's layer frames to folder."""
    started = time.perf_counter()
    from emorec.speech_encoder import WhisperEncoder, log_mel
    encoder = WhisperEncoder(path)
    report = {"load_s": round(time.perf_counter() - started, 3), "rss_loaded_mb": round(common.rss_mb(), 1),
              "p50_ms": {}, "log_mel_p50_ms": {}}
    for kind, waveform in clips().items():
        np.save(Path(folder) / f"{kind}.npy", encoder.layer_frames(waveform))
        for name, run in (("p50_ms", encoder.layer_frames), ("log_mel_p50_ms", log_mel)):
            timings = []
            for _ in range(reps):
                start = time.perf_counter()
                run(waveform)
                timings.append(time.perf_counter() - start)
            report[name][kind] = common.percentiles(timings, (50,))["p50"]
    report.update(rss_after_mb=round(common.rss_mb(), 1), rss_peak_mb=round(common.rss_mb(field="VmHWM"), 1),
                  tensorflow_loaded="tensorflow" in sys.modules, torch_loaded="torch" in sys.modules)
    print(json.dumps(report))


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
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for variant in VARIANTS:
            path = export_tflite(model, Path(folder) / f"{variant}.tflite", variant)
            run = subprocess.run([sys.executable, __file__, "--child", str(path), folder, str(args.reps)],
                                 env={**os.environ, **common.ONE_THREAD, "PYTHONPATH": str(common.ROOT)},
                                 capture_output=True, text=True, timeout=1800)
            if run.returncode:
                raise RuntimeError(f"{variant} failed:\n{run.stderr[-3000:]}")
            results[variant] = {"bytes": path.stat().st_size, **json.loads(run.stdout.splitlines()[-1]),
                                "parity_vs_keras": {kind: parity(np.load(Path(folder) / f"{kind}.npy"), reference)
                                                    for kind, reference in references.items()}}
            print(variant, json.dumps(results[variant]), flush=True)
    Path(args.out).write_text(json.dumps({"reps": args.reps, "variants": results}, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
