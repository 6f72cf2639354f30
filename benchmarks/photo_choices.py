"""The face model card's table of what was tried on real photos, side by side, in one run.

    .venv/bin/python benchmarks/photo_choices.py [--photos ../shared/data/photos_wild]
        [--fer2013 ../shared/data/fer2013] [--out benchmarks/photo_choices.json]

Every photo goes through the shipped detector once; each member's logits are then computed for
every framing and flip variant, and the variants are mixed as the serving path mixes them
(weighted sum of log-probabilities, see `emorec.models.log_linear`). Balanced accuracy (mean
recall per class, photos without a face counted wrong) over 7 classes and over 6 without fear
(6 photos). Also: the mix on FER2013 PublicTest crops (no landmarks: the crop resized to 112x112
for the MobileFaceNet), and the shipped photo path on the photos downscaled so that each face is
N pixels wide, which sets the `low_resolution_px` threshold.
"""

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emorec import datasets  # noqa: E402
from emorec.image import (TEMPLATE_112, align_crop, aligned_face_input, face_input,  # noqa: E402
                          landmark_transform, load_image)
from emorec.models import log_linear  # noqa: E402
from emorec.predictor import Predictor  # noqa: E402

CROP_SCALES = (0.85, 0.95, 1.05, 1.15)  # CNN crop side / detector box side (shipped: 0.95)
TEMPLATE_ZOOMS = (0.9, 1.0, 1.1)  # MobileFaceNet template scaled about its centre (shipped: 1.0)
WEIGHTS = np.round(np.linspace(0, 1, 11), 2)  # MobileFaceNet's share of the log-linear mix
FACE_WIDTHS = (96, 64, 48, 32, 24, 16)  # face box widths of the downscaled photos
RARE = "fear"
DISGUST_BIASES = (0.5, 1.0, 2.0)  # added to the mix's disgust log-probability (disgust is rarely found)


def balanced(targets, predictions, labels, leave_out=()):
    """Mean recall over the classes present but those left out (-1 predictions count wrong)."""
    return float(np.mean([(predictions[targets == index] == index).mean() for index, label in enumerate(labels)
                          if label not in leave_out and (targets == index).any()]))


def members(predictor):
    """The shipped photo ensemble's CNN and MobileFaceNet models."""
    by_kind = {kind: model for model, kind, _ in predictor.face_model.photo_members}
    return by_kind["crop"], by_kind["aligned"]


def photo_logits(predictor, photos):
    """Per photo: CNN logits [scale (then the landmark-warped crop), flip] and MobileFaceNet logits
    [zoom, flip]; None without a face."""
    cnn, mfn = members(predictor)
    found = []
    for path, _ in tqdm(photos, desc="photos"):
        picture = load_image(path)
        detections = sorted(predictor.detector.detect(picture), key=lambda d: -d[2] * d[3])
        if not len(detections):
            found.append(None)
            continue
        detection, grey = detections[0], cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
        crops = [align_crop(grey, detection, scale=scale) for scale in CROP_SCALES]
        # last: the 48x48 crop warped by the 5 landmarks onto the template scaled to 48 px
        crops.append(cv2.warpAffine(grey, landmark_transform(detection, TEMPLATE_112 * 48 / 112), (48, 48),
                                    flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE))
        crops = np.stack([face_input(crop) for crop in crops])
        crop_logits = cnn(np.concatenate([crops, crops[:, :, ::-1]])).reshape(2, len(crops), -1)
        aligned = []
        for zoom in TEMPLATE_ZOOMS:
            template = ((TEMPLATE_112 - 56) * zoom + 56).astype(np.float32)
            face = aligned_face_input(picture, detection, template)
            aligned.append(mfn(np.stack([face, face[:, :, ::-1]])))
        found.append((crop_logits.transpose(1, 0, 2), np.stack(aligned)))
    return found


def photo_table(predictor, photos):
    """Rows (name, 7-class, 6-class balanced accuracy) of every variant on the photos."""
    labels = predictor.labels
    targets = np.array([label for _, label in photos])
    found = photo_logits(predictor, photos)
    has_face = np.array([item is not None for item in found])
    cnn = np.stack([item[0] for item in found if item is not None])  # [photos, scale, flip, classes]
    mfn = np.stack([item[1] for item in found if item is not None])  # [photos, zoom, flip, classes]
    shipped_scale, shipped_zoom = CROP_SCALES.index(0.95), TEMPLATE_ZOOMS.index(1.0)
    cnn, cnn_warped = cnn[:, :len(CROP_SCALES)], cnn[:, len(CROP_SCALES)]
    cnn_flip, mfn_plain = cnn[:, shipped_scale].mean(1), mfn[:, shipped_zoom, 0]

    def row(name, logits):
        predictions = np.full(len(targets), -1)
        predictions[has_face] = logits.argmax(1)
        return {"variant": name, "balanced_7": round(balanced(targets, predictions, labels), 4),
                "balanced_6_without_fear": round(balanced(targets, predictions, labels, (RARE,)), 4),
                "accuracy": round(float((predictions == targets).mean()), 4)}

    rows = [row(f"CNN alone, crop {scale}x box, flip averaged" if flip else f"CNN alone, crop {scale}x box",
                cnn[:, index].mean(1) if flip else cnn[:, index, 0])
            for index, scale in enumerate(CROP_SCALES) for flip in (False, True)]
    rows.append(row("CNN alone, crops 0.85-1.15x averaged, flip averaged", cnn.mean((1, 2))))
    rows.append(row("CNN alone, crop warped by the 5 landmarks, flip averaged", cnn_warped.mean(1)))
    rows += [row(f"MobileFaceNet alone, template zoom {zoom}" + (", flip averaged" if flip else ""),
                 mfn[:, index].mean(1) if flip else mfn[:, index, 0])
             for index, zoom in enumerate(TEMPLATE_ZOOMS) for flip in (False, True)]
    rows += [row(f"mix, MobileFaceNet weight {weight}", log_linear([cnn_flip, mfn_plain], [1 - weight, weight]))
             for weight in WEIGHTS]
    for name, cnn_logits, mfn_logits in (
            ("mix 0.3, MobileFaceNet flip averaged", cnn_flip, mfn[:, shipped_zoom].mean(1)),
            ("mix 0.3, CNN crops 0.85-1.15x averaged", cnn.mean((1, 2)), mfn_plain),
            *[(f"mix 0.3, CNN crop {scale}x box", cnn[:, index].mean(1), mfn_plain)
              for index, scale in enumerate(CROP_SCALES) if index != shipped_scale],
            *[(f"mix 0.3, MobileFaceNet template zoom {zoom}", cnn_flip, mfn[:, index, 0])
              for index, zoom in enumerate(TEMPLATE_ZOOMS) if index != shipped_zoom],
            ("mix 0.3, CNN crop warped by the 5 landmarks", cnn_warped.mean(1), mfn_plain)):
        rows.append(row(name, log_linear([cnn_logits, mfn_logits], [0.7, 0.3])))
    for bias in DISGUST_BIASES:
        shift = np.eye(len(labels))[labels.index("disgust")] * bias
        rows.append(row(f"mix 0.3, disgust log-probability +{bias}",
                        log_linear([cnn_flip, mfn_plain], [0.7, 0.3]) + shift))
    return rows, int((~has_face).sum())


def crops_table(predictor, fer2013):
    """PublicTest accuracy of the CNN and of the mix on 48x48 crops (no landmarks: crop resized)."""
    cnn, mfn = members(predictor)
    faces, targets, _ = datasets.fer2013(fer2013, "public-test", predictor.labels)
    cnn_logits = np.concatenate([predictor._crop_logits(cnn, faces[start:start + 256])
                                 for start in range(0, len(faces), 256)])
    # landmarks where the template puts them, scaled to the crop: the warp is a plain 48 -> 112 resize
    whole_crop = np.concatenate([[0, 0, 48, 48], (TEMPLATE_112 * 48 / 112).ravel(), [1]])
    mfn_logits = mfn(np.stack([aligned_face_input(cv2.cvtColor(face, cv2.COLOR_GRAY2BGR), whole_crop)
                               for face in tqdm(faces, desc="PublicTest")]))
    return [{"mobilefacenet_weight": float(weight),
             "public_test_accuracy": round(float((log_linear([cnn_logits, mfn_logits], [1 - weight, weight])
                                                  .argmax(1) == targets).mean()), 4)}
            for weight in (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)]


def resolution_table(predictor, photos):
    """The shipped photo path on photos downscaled so that the face box is N pixels wide."""
    targets = np.array([label for _, label in photos])
    rows = []
    boxes = [predictor.predict_face(path)["faces"] for path, _ in tqdm(photos, desc="boxes")]
    for width in FACE_WIDTHS:
        predictions = np.full(len(targets), -1)
        for index, ((path, _), faces) in enumerate(zip(tqdm(photos, desc=f"{width} px"), boxes)):
            if not faces:
                continue
            picture = load_image(path)
            factor = width / max(faces[0]["box"][2:])
            if factor < 1:
                picture = cv2.resize(picture, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            result = predictor.predict_face(cv2.imencode(".png", picture)[1].tobytes())
            if result["label"]:
                predictions[index] = predictor.labels.index(result["label"])
        rows.append({"face_width_px": width, "found": int((predictions >= 0).sum()),
                     "balanced_7": round(balanced(targets, predictions, predictor.labels), 4),
                     "balanced_6_without_fear": round(balanced(targets, predictions, predictor.labels,
                                                               (RARE,)), 4)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default="../shared/data/photos_wild")
    parser.add_argument("--fer2013", default="../shared/data/fer2013")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "photo_choices.json"))
    args = parser.parse_args()
    predictor = Predictor()
    photos = datasets.labelled_photos(args.photos, predictor.labels)
    rows, no_face = photo_table(predictor, photos)
    report = {"photos": len(photos), "no_face": no_face, "variants": rows,
              "crops_public_test": crops_table(predictor, args.fer2013),
              "face_width": resolution_table(predictor, photos)}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    for item in rows:
        print(f"{item['variant']:<58} {item['balanced_7']:.2%}  {item['balanced_6_without_fear']:.2%}")
    for item in report["crops_public_test"]:
        print(f"PublicTest crops, MobileFaceNet weight {item['mobilefacenet_weight']}: "
              f"{item['public_test_accuracy']:.2%}")
    for item in report["face_width"]:
        print(f"faces {item['face_width_px']} px wide: found {item['found']}, {item['balanced_7']:.2%}  "
              f"{item['balanced_6_without_fear']:.2%}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
