"""The face detector and the aligned-face model against what they replaced, side by side in one process,
one thread: emorec.image.FaceDetector (YuNet on ONNX Runtime) against cv2.FaceDetectorYN, and the served
MobileFaceNet (PRelu as Max) against the OpenCV Zoo's original file.

    .venv/bin/python benchmarks/detector.py [--reps 50] [--out benchmarks/detector.json]

Agreement: every photos_wild photo (searched at most 1280 px, as photos are) and every 20th frame of the
four sample takes (at most 640 px, as videos are): the number of faces each detector finds, and the largest
difference between their rows (box, landmarks, score). The MobileFaceNet's logits are compared on the
aligned faces of those photos, and the photo path's labels (Predictor.predict_face) on photos_wild with
each detector: how many change, and by how much the probabilities move. Time: p50 of `--reps` calls on a take's first frame at 640x360 and on a
160 px window around its face, and emorec.image.shrink against INTER_AREA on the window before it is scaled.
"""

import argparse
import json
import os
import time
from pathlib import Path

import common

os.environ.update(common.ONE_THREAD)

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from emorec.image import AROUND_MAX_SIDE, FaceDetector, aligned_face_input, shrink  # noqa: E402
from emorec.models import MODELS_DIR, ONNXModel  # noqa: E402
from emorec.predictor import Predictor  # noqa: E402

YUNET = MODELS_DIR / "face_detection" / "yunet.onnx"
ORIGINAL_MOBILEFACENET = (common.SHARED / "models" / "face_expression_mobilefacenet"
                          / "facial_expression_recognition_mobilefacenet_2022july_int8.onnx")


class OpenCVDetector:
    """cv2.FaceDetectorYN with FaceDetector.detect's scaling: what served before."""

    def __init__(self):
        self.detector = cv2.FaceDetectorYN.create(str(YUNET), "", (320, 320), 0.7, 0.3, 5000)

    def detect(self, image, max_side=1280):
        scale = min(1.0, max_side / max(image.shape[:2]))
        if scale < 1.0:
            image = shrink(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
        self.detector.setInputSize(image.shape[1::-1])
        faces = self.detector.detect(image)[1]
        faces = np.zeros((0, 15), np.float32) if faces is None else faces
        faces[:, :14] /= scale
        return faces


def pictures():
    """(BGR picture, longest side searched) of every photos_wild photo and every 20th frame of the takes."""
    for path in sorted((common.SHARED / "data" / "photos_wild").glob("*/*")):
        if (photo := cv2.imread(str(path))) is not None:
            yield photo, 1280
    for take in sorted((common.SHARED / "samples" / "video").glob("*.mp4")):
        with av.open(str(take)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index % 20 == 0:
                    yield frame.to_ndarray(format="bgr24"), 640


def photo_labels(predictor):
    """(path, label, confidence, probabilities) of the photo path on each photos_wild photo with a face."""
    results = []
    for path in sorted((common.SHARED / "data" / "photos_wild").glob("*/*")):
        if path.suffix != ".csv" and (result := predictor.predict_face(path.read_bytes()))["status"] == "ok":
            results.append((path, result["label"], result["confidence"], np.array(list(result["probabilities"].values()))))
    return results


def label_changes():
    """How the photo path's photos_wild labels change from cv2.FaceDetectorYN to FaceDetector."""
    predictor = Predictor()
    ours = photo_labels(predictor)
    predictor.detector = OpenCVDetector()
    theirs = photo_labels(predictor)
    changed = [(a, b) for a, b in zip(ours, theirs) if a[1] != b[1]]
    return {"photos": len(ours), "labels_changed": len(changed),
            "changed_confidence_range": [min(a[2] for a, _ in changed), max(a[2] for a, _ in changed)] if changed else None,
            "largest_probability_change": max(float(np.abs(a[3] - b[3]).max()) for a, b in zip(ours, theirs)),
            "changed": [f"{a[0].parent.name}/{a[0].name}: {b[1]} -> {a[1]}" for a, b in changed]}


def p50_ms(function, reps):
    timings = []
    for _ in range(reps):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return round(float(np.median(timings)) * 1000, 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    served, opencv = FaceDetector(YUNET), OpenCVDetector()
    models = ONNXModel(MODELS_DIR / "face_expression" / "mobilefacenet_int8.onnx"), ONNXModel(ORIGINAL_MOBILEFACENET)
    count = faces = different_counts = 0
    row_difference = logit_difference = 0.0
    for picture, max_side in pictures():
        ours, theirs = served.detect(picture, max_side), opencv.detect(picture, max_side)
        count, faces = count + 1, faces + len(theirs)
        if ours.shape != theirs.shape:
            different_counts += 1
            continue
        if len(ours):
            row_difference = max(row_difference, float(np.abs(ours - theirs).max()))
            if max_side == 1280:
                aligned = np.stack([aligned_face_input(picture, row) for row in ours])
                logit_difference = max(logit_difference, float(np.abs(models[0](aligned) - models[1](aligned)).max()))
    with av.open(str(common.SHARED / "samples" / "video" / "01-01-03-01-01-02-05.mp4")) as container:
        frame = cv2.resize(next(container.decode(video=0)).to_ndarray(format="bgr24"), (640, 360),
                           interpolation=cv2.INTER_AREA)
    x, y, width, height = served.detect(frame)[0][:4]
    side = 2 * max(width, height)
    left, top = max(0, int(x + width / 2 - side / 2)), max(0, int(y + height / 2 - side / 2))
    window = frame[top:int(top + side), left:int(left + side)]
    target = tuple(round(value * AROUND_MAX_SIDE / max(window.shape[:2])) for value in window.shape[1::-1])
    report = {
        "load_average": os.getloadavg()[0],
        "agreement": {"pictures": count, "faces_opencv": faces, "pictures_with_other_face_counts": different_counts,
                      "largest_row_difference": row_difference,
                      "largest_mobilefacenet_logit_difference_photos_wild": logit_difference},
        "photo_path_with_each_detector": label_changes(),
        "p50_ms": {
            "frame 640x360, FaceDetector": p50_ms(lambda: served.detect(frame), args.reps),
            "frame 640x360, cv2.FaceDetectorYN": p50_ms(lambda: opencv.detect(frame, 640), args.reps),
            f"window {window.shape[1]}x{window.shape[0]} at 160 px, FaceDetector":
                p50_ms(lambda: served.detect(window, AROUND_MAX_SIDE), args.reps),
            f"window {window.shape[1]}x{window.shape[0]} at 160 px, cv2.FaceDetectorYN":
                p50_ms(lambda: opencv.detect(window, AROUND_MAX_SIDE), args.reps),
            "window scaled, shrink": p50_ms(lambda: shrink(window, target), args.reps),
            "window scaled, INTER_AREA": p50_ms(lambda: cv2.resize(window, target, interpolation=cv2.INTER_AREA),
                                                args.reps)},
    }
    print(json.dumps(report, indent=1))
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
