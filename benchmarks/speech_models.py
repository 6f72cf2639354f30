"""Two models folders' speech paths side by side (a changed speech head or front end against the one
before): `Predictor.predict_speech` p50 on the benchmark's 5 s and 30 s clips, one thread, the two
predictors' runs interleaved rep by rep in one process so that other load hits them alike.

    .venv/bin/python benchmarks/speech_models.py BEFORE_MODELS_DIR [AFTER_MODELS_DIR] [--reps 15]

AFTER defaults to the bundled models; BEFORE can be a folder of links to them with another speech/.
"""

import argparse
import time

import numpy as np

import common
from emorec.audio import load_audio
from emorec.models import MODELS_DIR
from emorec.predictor import Predictor


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after", nargs="?", default=str(MODELS_DIR))
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    inputs = common.make_inputs()
    clips = {name: load_audio(inputs[name]) for name in ("clip5", "clip30")}
    predictors = {"before": Predictor(args.before), "after": Predictor(args.after)}
    seconds = {(side, name): [] for side in predictors for name in clips}
    for rep in range(args.reps + 1):  # the first rep warms up and is dropped
        for side, predictor in predictors.items():
            for name, clip in clips.items():
                started = time.perf_counter()
                predictor.predict_speech(clip)
                if rep:
                    seconds[side, name].append(time.perf_counter() - started)
    for name in clips:
        before, after = (1000 * np.median(seconds[side, name]) for side in predictors)
        print(f"{name} p50: before {before:.1f} ms, after {after:.1f} ms, after / before {after / before:.3f}")


if __name__ == "__main__":
    main()
