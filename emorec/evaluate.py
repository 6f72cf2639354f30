"""Evaluation of the shipped (TFLite) models: metrics JSON and a confusion-matrix PNG."""

import json
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError

PHOTOS_SPLIT = "photos-wild"
RARE_CLASS = "fear"  # 6 photos in photos_wild: the balanced accuracy is also reported without it


def metrics(targets, predictions, labels):
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (rows: truth)."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    size = len(labels)
    answered = predictions >= 0  # -1: no prediction (counted wrong, left out of the confusion matrix)
    confusion = np.bincount(targets[answered] * size + predictions[answered],
                            minlength=size * size).reshape(size, size)
    per_class = {}
    for index, label in enumerate(labels):
        hits, support = confusion[index, index], int((targets == index).sum())
        precision = hits / max(1, confusion[:, index].sum())
        recall = hits / max(1, support)
        f1 = 2 * precision * recall / max(1e-12, precision + recall)
        per_class[label] = {"precision": round(float(precision), 4), "recall": round(float(recall), 4),
                            "f1": round(float(f1), 4), "support": support}
    present = [label for label in labels if per_class[label]["support"]]
    return {"samples": int(len(targets)),
            "accuracy": round(float((targets == predictions).mean()), 4),
            "macro_f1": round(float(np.mean([per_class[label]["f1"] for label in present])), 4),
            "per_class": per_class, "labels": list(labels), "confusion": confusion.tolist()}


def plot_confusion(report, path, title):
    """Row-normalised confusion matrix with counts, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.array(report["confusion"], float)
    rates = confusion / np.maximum(1, confusion.sum(axis=1, keepdims=True))
    figure, axes = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    labels = report["labels"]
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for row in range(len(labels)):
        for column in range(len(labels)):
            axes.text(column, row, f"{rates[row, column]:.2f}\n{int(confusion[row, column])}",
                      ha="center", va="center", fontsize=7,
                      color="white" if rates[row, column] > 0.5 else "black")
    axes.set_title(f"{title}\naccuracy {report['accuracy']:.1%}, macro-F1 {report['macro_f1']:.3f}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_report(report, out, name, title):
    """`<out>/<name>.json` and `<out>/<name>.png`; returns the JSON path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    plot_confusion(report, out / f"{name}.png", title)
    return out / f"{name}.json"


def evaluate_face(predictor, data, split, batch_size=256):
    """The face model on a FER2013 split (crops as given) or, for `photos-wild`, a folder of
    labelled photos (detector on), through the serving path."""
    from . import datasets
    from tqdm import tqdm

    if split == PHOTOS_SPLIT:
        return evaluate_face_photos(predictor, data)
    faces, targets, _ = datasets.fer2013(data, split, predictor.labels)
    predictions = np.concatenate([predictor.classify_faces(faces[start:start + batch_size]).argmax(1)
                                  for start in tqdm(range(0, len(faces), batch_size), desc="faces")])
    return {"model": "face", "data": str(data), "split": split,
            **metrics(targets, predictions, predictor.labels)}


def balanced_accuracy(targets, predictions, leave_out=()):
    """Mean recall over the classes that occur in `targets` but those in `leave_out` (label indices);
    a prediction of -1 (no answer) counts wrong. Chance is 1 / the number of classes counted."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    recalls = [(predictions[targets == label] == label).mean() for label in np.unique(targets)
               if label not in leave_out]
    return round(float(np.mean(recalls)), 4)


def split_half_calibration(probabilities, targets, temperature):
    """The temperature refit on all the photos (its ECE measured on the same photos), and, honestly
    held out, the expected calibration error on each half (alternate photos) of a temperature fitted
    on the other half, beside the ECE at temperature 1 on the same halves (both averaged)."""
    from .calibration import calibrate, expected_calibration_error, log_probabilities
    from .models import softmax

    logits = temperature * log_probabilities(probabilities)  # the logits at temperature 1, up to a constant
    halves = np.arange(len(targets)) % 2
    refitted, unscaled = [], []
    for half in (0, 1) if len(targets) > 1 else ():
        fitted = calibrate(probabilities[halves == half], targets[halves == half], temperature)["temperature"]
        other = halves != half
        refitted.append(expected_calibration_error(softmax(logits[other], fitted), targets[other]))
        unscaled.append(expected_calibration_error(softmax(logits[other]), targets[other]))
    return {**calibrate(probabilities, targets, temperature),
            "split_half_ece_temperature_1": round(float(np.mean(unscaled)), 4) if unscaled else None,
            "split_half_ece_refitted": round(float(np.mean(refitted)), 4) if refitted else None}


def evaluate_face_photos(predictor, data):
    """The photo path on labelled real photos: each photo's largest face against its label.

    Photos where no face is found count as wrong (and are counted). Balanced accuracy (mean recall
    per class) is the headline, also without the rare class; the expected calibration error covers
    the photos with a face, at the shipped temperature and split-half refitted (see
    `split_half_calibration`).
    """
    from . import datasets
    from .calibration import expected_calibration_error
    from tqdm import tqdm

    photos = datasets.labelled_photos(data, predictor.labels)
    targets = np.array([label for _, label in photos])
    results = [predictor.predict_face(path) for path, _ in tqdm(photos, desc="photos")]
    found = np.array([result["status"] == "ok" for result in results])
    predictions = np.array([predictor.labels.index(result["label"]) if result["label"] else -1
                            for result in results])
    report = {"model": "face", "data": str(data), "split": PHOTOS_SPLIT,
              **metrics(targets, predictions, predictor.labels)}
    report["balanced_accuracy"] = balanced_accuracy(targets, predictions)
    if RARE_CLASS in predictor.labels:
        report[f"balanced_accuracy_without_{RARE_CLASS}"] = balanced_accuracy(
            targets, predictions, (predictor.labels.index(RARE_CLASS),))
    report["no_face"] = int((~found).sum())
    with_face = [result for result in results if result["faces"]]
    report["low_resolution"] = sum(result["faces"][0]["low_resolution"] for result in with_face)
    if with_face:
        probabilities = np.array([list(result["probabilities"].values()) for result in with_face])
        report["ece"] = round(expected_calibration_error(probabilities, targets[found]), 4)
        report["calibration"] = split_half_calibration(probabilities, targets[found],
                                                       predictor.face_model.photo_temperature)
    return report


def shared_class_scores(targets, logits, shared):
    """Scores on the clips whose label is in `shared` (label indices), with each prediction the best
    of the shared classes: a corpus without disgust clips cannot tell whether a "disgust" answer was
    right, so cross-corpus figures are about ranking the classes both sides know. The unrestricted
    argmax over every class is reported beside it."""
    targets, logits = np.asarray(targets), np.asarray(logits)
    keep = np.isin(targets, shared)
    restricted = np.asarray(shared)[logits[keep][:, shared].argmax(axis=1)]
    unrestricted = logits[keep].argmax(axis=1)
    return {"class_indices": [int(index) for index in shared], "samples": int(keep.sum()),
            "accuracy": round(float((restricted == targets[keep]).mean()), 4),
            "balanced_accuracy": balanced_accuracy(targets[keep], restricted),
            "balanced_accuracy_unrestricted": balanced_accuracy(targets[keep], unrestricted)}


def speech_logits(folder, data, split, cache, models_dir=None, channel=None):
    """A speech head's logits on a speaker split of a corpus folder: the head (`folder`: model.tflite
    and model.json), its front end, the decodable clips, their logits, and the undecodable paths.

    The features come from the front end the card names, through the serving decoder (cached per
    clip), standardised per speaker or corpus when the head was trained so. `channel` sends every
    clip through a codec round trip or the telephone band first (`CHANNELS`).
    """
    from . import datasets
    from .models import MODELS_DIR, Classifier
    from .speech_features import Transmitted, decoded, front_end, normalise, speech_features

    if not (Path(folder) / "model.json").is_file():
        raise InputError(f"{folder}: no speech model (model.json and model.tflite) there")
    model = Classifier(folder)
    clips = datasets.speaker_split(datasets.speech_clips(data, model.labels), split)
    if not clips:
        raise InputError(f"{data}: no clips of {split} speakers (RAVDESS and nEMO have speaker splits; "
                         "other corpora: --split all)")
    extractor = front_end(model.card.get("front_end", "yamnet"), models_dir or MODELS_DIR, model.card)
    if channel:
        extractor = Transmitted(extractor, channel)
    decodable, (features,) = decoded(clips, speech_features([clip.path for clip in clips], extractor, cache))
    left_out = sorted({clip.path for clip in clips} - {clip.path for clip in decodable})
    (features,) = normalise([features], decodable, model.card.get("feature_normalisation", "none"))
    logits = np.concatenate([model(features[start:start + 256]) for start in range(0, len(features), 256)])
    return model, extractor, decodable, logits, left_out


def evaluate_speech(folder, data, split, cache, models_dir=None, channel=None):
    """A speech head on a speaker split of a corpus folder (`speech_logits`).

    Besides the metrics over every label as served, it reports each speaker's accuracy, balanced
    accuracy, the expected calibration error at the head's temperature and at 1, and the scores on
    the classes that the corpus has and the head was trained on, predictions restricted to those
    (`shared_class_scores`).
    """
    from .calibration import expected_calibration_error
    from .models import softmax

    model, extractor, clips, logits, left_out = speech_logits(folder, data, split, cache, models_dir, channel)
    targets, predictions = np.array([clip.label for clip in clips]), logits.argmax(axis=1)
    right = predictions == targets
    speakers = np.array([str(clip.speaker) for clip in clips])
    trained = model.card.get("trained_labels", model.labels)
    shared = [index for index, label in enumerate(model.labels) if label in trained and index in targets]
    return {"model": "speech", "model_folder": str(folder), "front_end": extractor.name,
            "feature_normalisation": model.card.get("feature_normalisation", "none"), "data": str(data),
            "split": split, "channel": channel or "as stored",
            "corpora": sorted({clip.corpus for clip in clips}),
            "speakers": sorted(set(speakers)), "undecodable_left_out": left_out,
            "per_speaker": {speaker: {"samples": int((speakers == speaker).sum()),
                                      "accuracy": round(float(right[speakers == speaker].mean()), 4)}
                            for speaker in sorted(set(speakers))},
            **metrics(targets, predictions, model.labels),
            "balanced_accuracy": balanced_accuracy(targets, predictions),
            "temperature": model.temperature,
            "ece": round(expected_calibration_error(softmax(logits, model.temperature), targets), 4),
            "ece_temperature_1": round(expected_calibration_error(softmax(logits), targets), 4),
            "shared_classes": {"labels": [model.labels[index] for index in shared],
                               **shared_class_scores(targets, logits, shared)}}


def _with_noise(waveform, noise, snr_db):
    """The waveform plus `noise` (tiled or cut to length) scaled to the given signal-to-noise ratio."""
    noise = np.resize(noise, len(waveform))
    scale = np.sqrt(np.mean(waveform ** 2) / (np.mean(noise ** 2) + 1e-12) / 10 ** (snr_db / 10))
    return np.clip(waveform + scale * noise, -1, 1).astype(np.float32)


def _white_noise(waveform, index, waveforms, rng, snr):
    return _with_noise(waveform, rng.standard_normal(len(waveform)), snr)


def _babble(waveform, index, waveforms, rng, snr, talkers=6):
    """Six other clips of the manifest (fewer if it is small) summed behind this one: a crowd."""
    if len(waveforms) < 2:
        raise InputError("babble noise needs a manifest of at least two distinct clips")
    others = rng.choice([i for i in range(len(waveforms)) if i != index], min(talkers, len(waveforms) - 1),
                        replace=False)
    length = max(len(waveforms[i]) for i in others)
    return _with_noise(waveform, sum(np.resize(waveforms[i], length) for i in others), snr)


def _blur(image, *_):
    return cv2.GaussianBlur(image, (0, 0), 2 * image.shape[0] / 48)


def _darken(image, *_):
    return (image * 0.25).astype(np.uint8)


def _occlude(image, *_):
    image = image.copy()
    image[image.shape[0] // 2:] = 0
    return image


# Robustness conditions: (modality changed, change(input, index, all inputs, rng)); None removes it.
CONDITIONS = {
    "clean": (None, None),
    **{f"speech + white noise {snr} dB": ("speech", partial(_white_noise, snr=snr)) for snr in (20, 10, 0)},
    **{f"speech + babble {snr} dB": ("speech", partial(_babble, snr=snr)) for snr in (20, 10, 0)},
    "face blurred (Gaussian, sigma 2 px at 48 px)": ("face", _blur),
    "face darkened (x0.25)": ("face", _darken),
    "face lower half occluded": ("face", _occlude),
    "face removed": ("face", None),
    "speech removed": ("speech", None),
}
# Certainty exponents of the fusion weights compared under the robustness conditions (0: fixed weights).
EXPONENTS = (0.0, 0.5, 1.0)


def evaluate_fusion(predictor, rows, crops=False, weights=None, conditions=("clean",), exponents=(), seed=0):
    """Face-only, speech-only and fused accuracy over a pseudo-paired manifest, per condition.

    `rows` are dicts with image, audio and label. Each distinct file is predicted once per
    condition, its perturbation seeded by (seed, its index), so a manifest that pairs a clip
    with ten faces costs one prediction of the clip. The clean condition also gets the fused
    metrics (per class, confusion). Perturbed inputs go through the same decoders as files.
    `exponents` are certainty exponents to compare on the same predictions: each gets the fused
    accuracy per condition and its mean over the conditions that keep both modalities.
    """
    import io
    import soundfile
    from tqdm import tqdm
    from .audio import SAMPLE_RATE, load_audio
    from .image import load_image

    unknown = {row.get("label") for row in rows} - set(predictor.labels)
    if unknown:
        raise InputError(f"the pairs csv needs a label column with labels from {', '.join(predictor.labels)}; "
                         f"found {', '.join(map(str, sorted(unknown, key=str)))}")
    targets = np.array([predictor.labels.index(row["label"]) for row in rows])
    row_files, inputs = {}, {}  # per modality: each row's file index; the distinct files, decoded
    for kind, column, load in (("face", "image", load_image), ("speech", "audio", load_audio)):
        indices = {}
        row_files[kind] = [indices.setdefault(row[column], len(indices)) for row in rows]
        inputs[kind] = [load(path) for path in indices]

    def predict(kind, value):
        """A modality's result for a decoded input, encoded again to go through the file decoders."""
        if kind == "face":
            return predictor.predict_face(cv2.imencode(".png", value)[1].tobytes(), crops)
        buffer = io.BytesIO()
        soundfile.write(buffer, value, SAMPLE_RATE, format="WAV", subtype="FLOAT")
        return predictor.predict_speech(buffer.getvalue())

    def per_row(kind, name, change=None):
        """Each row's result for its `kind` input, every distinct input predicted once."""
        values = inputs[kind]
        found = [predict(kind, value if change is None else
                         change(value, index, values, np.random.default_rng([seed, index])))
                 for index, value in enumerate(tqdm(values, desc=name, leave=False))]
        return [found[index] for index in row_files[kind]]

    def label_indices(found):
        """Each result's label index, -1 where there is none."""
        return np.array([predictor.labels.index(result["label"]) if result and result["label"] else -1
                         for result in found])

    def accuracy(found):
        return round(float((label_indices(found) == targets).mean()), 4)

    clean = {kind: per_row(kind, f"clean {kind}") for kind in inputs}
    report = {"pairs": len(rows), "weights": weights or predictor.default_weights, "conditions": {}}
    compared = {exponent: {} for exponent in exponents}
    for name in conditions:
        changed, change = CONDITIONS[name]
        results = dict(clean)  # only the changed modality is predicted again
        if change is not None:
            results[changed] = per_row(changed, name, change)
        elif changed is not None:
            results[changed] = [None] * len(rows)
        fused = {exponent: [predictor.fuse(face, speech, weights, exponent)
                            for face, speech in zip(results["face"], results["speech"])]
                 for exponent in (None, *exponents)}
        results["fused"] = fused.pop(None)
        removed = changed if change is None else None
        report["conditions"][name] = {modality: None if modality == removed else accuracy(found)
                                      for modality, found in results.items()}
        for exponent, found in fused.items():
            compared[exponent][name] = accuracy(found)
        if name == "clean":
            report.update(metrics(targets, label_indices(results["fused"]), predictor.labels))
    both = [name for name, found in report["conditions"].items() if None not in (found["face"], found["speech"])]
    if exponents:
        report["certainty_exponents"] = {
            str(exponent): {"conditions": found,
                            "mean_with_both": round(float(np.mean([found[name] for name in both])), 4) if both else None}
            for exponent, found in compared.items()}
    return report
