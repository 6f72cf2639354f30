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


def fuse(probabilities, weights, rule="sum"):
    """Fuse {modality: probability vector} with normalised weights.

    "sum" is the weighted mean of the probabilities; "product" the weighted geometric mean
    (log-linear pooling), renormalised. Modalities absent from `probabilities` are left out
    and the remaining weights renormalised; a modality whose weight is zero has no say.
    """
    present = {name: np.asarray(p, np.float64) for name, p in probabilities.items()
               if weights.get(name, 0) > 0}
    if not present:
        present = {name: np.asarray(p, np.float64) for name, p in probabilities.items()}
        used = {name: 1 / len(present) for name in present}
    else:
        total = sum(weights[name] for name in present)
        used = {name: weights[name] / total for name in present}
    if rule == "sum":
        fused = sum(used[name] * p for name, p in present.items())
    elif rule == "product":
        fused = np.exp(sum(used[name] * np.log(np.clip(p, 1e-12, 1)) for name, p in present.items()))
    else:
        raise InputError(f"unknown fusion rule {rule!r}; choose from {', '.join(RULES)}")
    return fused / fused.sum(), used
