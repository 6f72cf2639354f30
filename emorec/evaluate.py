"""Evaluation of the shipped (TFLite) models: metrics JSON and a confusion-matrix PNG."""

import json
from pathlib import Path

import numpy as np


def metrics(targets, predictions, labels):
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (rows: truth)."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    size = len(labels)
    confusion = np.bincount(targets * size + predictions, minlength=size * size).reshape(size, size)
    per_class = {}
    for index, label in enumerate(labels):
        hits = confusion[index, index]
        precision = hits / max(1, confusion[:, index].sum())
        recall = hits / max(1, confusion[index].sum())
        f1 = 2 * precision * recall / max(1e-12, precision + recall)
        per_class[label] = {"precision": round(float(precision), 4), "recall": round(float(recall), 4),
                            "f1": round(float(f1), 4), "support": int(confusion[index].sum())}
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
    """The face model on a FER2013 split, through the serving path (crops as given)."""
    from . import datasets
    from tqdm import tqdm

    faces, targets, _ = datasets.fer2013(data, split, predictor.labels)
    predictions = np.concatenate([predictor.classify_faces(faces[start:start + batch_size]).argmax(1)
                                  for start in tqdm(range(0, len(faces), batch_size), desc="faces")])
    return {"model": "face", "data": str(data), "split": split,
            **metrics(targets, predictions, predictor.labels)}


def evaluate_speech(predictor, data, split):
    """The speech model on a canonical RAVDESS split (actors 1-16/17-20/21-24)."""
    from . import datasets
    from tqdm import tqdm

    clips = datasets.ravdess_split(datasets.speech_clips(data, predictor.labels), split)
    predictions = [predictor.labels.index(predictor.predict_speech(path)["label"])
                   for path, _, _ in tqdm(clips, desc="clips")]
    return {"model": "speech", "data": str(data), "split": split,
            "actors": [min(datasets.SPEECH_SPLITS[split]), max(datasets.SPEECH_SPLITS[split])],
            **metrics([clip[1] for clip in clips], predictions, predictor.labels)}
