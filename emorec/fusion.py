"""Late fusion of the face and speech probability vectors."""

import numpy as np

from .errors import InputError

MODALITIES = ("face", "speech")
RULES = ("sum", "product")


def parse_weights(text):
    """Weights from 'face=0.6,speech=0.4' (or a dict), normalised to sum to 1."""
    if isinstance(text, dict):
        pairs = list(text.items())
    else:
        pairs = [item.partition("=")[::2] for item in str(text).split(",") if item.strip()]
    weights = {}
    for name, value in pairs:
        name = str(name).strip()
        if name not in MODALITIES:
            raise InputError(f"bad weights {text!r}: {name!r} is not one of face, speech")
        try:
            weights[name] = float(value)
        except (TypeError, ValueError):
            raise InputError(f"bad weights {text!r}: {value!r} is not a number") from None
        if not np.isfinite(weights[name]) or weights[name] < 0:
            raise InputError(f"bad weights {text!r}: weights must be finite and non-negative")
    total = sum(weights.values())
    if total <= 0:
        raise InputError(f"bad weights {text!r}: give at least one positive weight, e.g. face=0.6,speech=0.4")
    return {name: weights.get(name, 0.0) / total for name in MODALITIES}


def certainty(probabilities):
    """1 minus the normalised entropy: 1 for a one-hot vector, 0 for a uniform one."""
    p = np.clip(np.asarray(probabilities, np.float64), 1e-12, 1)
    return float(1 + np.sum(p * np.log(p)) / np.log(len(p)))


def fuse(probabilities, weights, rule="sum", adaptive=0.0):
    """Fuse {modality: probability vector} with normalised weights.

    "sum" is the weighted mean of the probabilities; "product" the weighted geometric mean
    (log-linear pooling), renormalised. With `adaptive` > 0 each weight is scaled by the
    modality's certainty to that power, so an unsure modality (a blurred face) has less say.
    Modalities absent from `probabilities` are left out and the remaining weights renormalised;
    a modality whose weight is zero has no say; one left alone is returned as it is. Returns the
    fused vector and the weights used.
    """
    if rule not in RULES:
        raise InputError(f"unknown fusion rule {rule!r}; choose from {', '.join(RULES)}")
    base = {name: weights.get(name, 0) for name in probabilities if weights.get(name, 0) > 0}
    base = base or dict.fromkeys(probabilities, 1.0)
    present = {name: np.asarray(probabilities[name], np.float64) for name in base}
    raw = {name: base[name] * max(certainty(p), 1e-6) ** adaptive for name, p in present.items()}
    used = {name: value / sum(raw.values()) for name, value in raw.items()}
    if len(present) == 1:  # one modality is its own fusion, its probabilities as given
        return next(iter(present.values())), used
    if rule == "sum":
        fused = sum(used[name] * p for name, p in present.items())
    else:
        fused = np.exp(sum(used[name] * np.log(np.clip(p, 1e-12, 1)) for name, p in present.items()))
    return fused / fused.sum(), used
