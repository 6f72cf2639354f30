"""What the second face model costs a photo: the bench photo (640x480, one face) through the shipped
photo ensemble and through the CNN alone, side by side in one process, calls interleaved so that
other jobs on the machine slow both alike. One thread.

    .venv/bin/python benchmarks/photo_members.py [--reps 200]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import common

os.environ.update(common.ONE_THREAD)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from emorec.models import MODELS_DIR  # noqa: E402
from emorec.predictor import Predictor  # noqa: E402


def cnn_only_models(folder):
    """A models folder like the shipped one whose face card has no photo ensemble."""
    for entry in MODELS_DIR.iterdir():
        if entry.name != "face":
            (folder / entry.name).symlink_to(entry)
    (folder / "face").mkdir()
    for entry in (MODELS_DIR / "face").iterdir():
        if entry.name != "model.json":
            (folder / "face" / entry.name).symlink_to(entry)
    card = json.loads((MODELS_DIR / "face" / "model.json").read_text())
    card.pop("photo")
    (folder / "face" / "model.json").write_text(json.dumps(card))
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    photo = common.make_inputs()["photo"]
    with tempfile.TemporaryDirectory() as folder:
        predictors = {"CNN + MobileFaceNet (shipped)": Predictor(threads=1),
                      "CNN alone": Predictor(cnn_only_models(Path(folder)), threads=1)}
        wall = {name: [] for name in predictors}
        cpu = {name: [] for name in predictors}
        for predictor in predictors.values():
            predictor.predict_face(photo)
        for _ in range(args.reps):
            for name, predictor in predictors.items():
                begin, cpu_begin = time.perf_counter(), time.process_time()
                predictor.predict_face(photo)
                wall[name].append(time.perf_counter() - begin)
                cpu[name].append(time.process_time() - cpu_begin)
    for name in predictors:
        print(f"{name:<30} wall {common.percentiles(wall[name])}  CPU {common.percentiles(cpu[name])}")
    shipped, alone = (np.median(wall[name]) for name in predictors)
    print(f"wall p50 ratio shipped / CNN alone = {shipped / alone:.2f}; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
