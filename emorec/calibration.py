"""Calibration and fusion tuning on validation data: temperatures, ECE, fusion weights."""

import numpy as np

from .fusion import RULES, fuse
from .models import softmax


def nll(logits, targets, temperature=1.0):
    """Mean negative log-likelihood of the targets under softmax(logits / temperature)."""
    probabilities = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(targets)), targets], 1e-12, 1))))


def fit_temperature(logits, targets):
    """The temperature in [0.05, 20] that minimises validation NLL (golden-section on log T)."""
    low, high = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if nll(logits, targets, np.exp(a)) < nll(logits, targets, np.exp(b)):
            high = b
        else:
            low = a
    return float(np.exp((low + high) / 2))


def expected_calibration_error(probabilities, targets, bins=15):
    """ECE: the confidence-weighted gap between confidence and accuracy over equal-width bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    edges = np.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def search_fusion(face, speech, targets, steps=21):
    """Accuracy of every rule and face weight in a grid over validation pairs, best first.

    `face` and `speech` are calibrated probabilities [n, classes] of the same pairs.
    """
    results = []
    for rule in RULES:
        for face_weight in np.linspace(0, 1, steps):
            weights = {"face": float(face_weight), "speech": float(1 - face_weight)}
            fused = np.stack([fuse({"face": f, "speech": s}, weights, rule)[0] for f, s in zip(face, speech)])
            results.append({"rule": rule, "weights": weights,
                            "accuracy": float((fused.argmax(axis=1) == targets).mean())})
    # Ties go to the most even weights, which hold up best when one modality is weak.
    return sorted(results, key=lambda r: (-r["accuracy"], abs(r["weights"]["face"] - 0.5)))
