"""Calibration and fusion tuning on validation data: temperatures, ECE, fusion rules."""

import numpy as np

from .fusion import RULES, fuse
from .models import softmax

ADAPTIVE = 0.0  # certainty weighting of the fused modalities (see fusion.fuse): off, chosen on validation (fusion card)
WEIGHT_GRID = np.linspace(0, 1, 21)


def log_probabilities(probabilities):
    """Log of probability vectors, floored so that a rounded-off zero stays finite."""
    return np.log(np.clip(np.asarray(probabilities, np.float64), 1e-7, 1))


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


def calibrate(probabilities, targets, temperature):
    """Refit the temperature of a model whose outputs at `temperature` are `probabilities`.

    Log-probabilities times the temperature are the logits up to a per-row constant, which
    softmax ignores. Returns the new temperature and the NLL and ECE of the raw logits
    (temperature 1, "before") and at the new temperature ("after"), so a rerun reports the same.
    """
    logits = temperature * log_probabilities(probabilities)
    fitted = fit_temperature(logits, targets)
    return {"temperature": round(fitted, 4), "samples": int(len(targets)),
            "nll_before": round(nll(logits, targets), 4),
            "nll_after": round(nll(logits, targets, fitted), 4),
            "ece_before": round(expected_calibration_error(softmax(logits), targets), 4),
            "ece_after": round(expected_calibration_error(softmax(logits, fitted), targets), 4)}


def fused_predictions(face, speech, rule, weights):
    """Argmax labels of a fixed rule ("sum", "product" or a fitted stacker) over pairs."""
    if isinstance(rule, dict):
        return stacked(face, speech, rule, weights).argmax(axis=1)
    return np.array([fuse({"face": f, "speech": s}, weights, rule, ADAPTIVE)[0].argmax()
                     for f, s in zip(face, speech)])


def best_weights(face, speech, targets, rule):
    """The face weight on a 0.05 grid that maximises pair accuracy; ties go to the most even."""
    scored = []
    for face_weight in WEIGHT_GRID:
        weights = {"face": round(float(face_weight), 2), "speech": round(float(1 - face_weight), 2)}
        accuracy = float((fused_predictions(face, speech, rule, weights) == targets).mean())
        scored.append((-accuracy, abs(face_weight - 0.5), weights))
    return min(scored, key=lambda item: item[:2])[2]


def fit_stacker(face, speech, targets, l2=1e-2, steps=1500, rate=0.5):
    """A learned rule: multinomial logistic regression on both modalities' log-probabilities."""
    features = np.hstack([log_probabilities(face), log_probabilities(speech)])
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    x = (features - mean) / scale
    classes = face.shape[1]
    onehot = np.eye(classes)[targets]
    coefficients, bias = np.zeros((x.shape[1], classes)), np.zeros(classes)
    for _ in range(steps):
        error = (softmax(x @ coefficients + bias) - onehot) / len(x)
        coefficients -= rate * (x.T @ error + l2 * coefficients)
        bias -= rate * error.sum(axis=0)
    return {"mean": mean.tolist(), "scale": scale.tolist(), "coefficients": coefficients.tolist(),
            "bias": bias.tolist()}


def stacked(face, speech, stacker, weights):
    """The stacker's probabilities; user weights scale each modality's log-probabilities (0.5 each as fitted)."""
    features = np.hstack([2 * weights["face"] * log_probabilities(face),
                          2 * weights["speech"] * log_probabilities(speech)])
    x = (features - np.array(stacker["mean"])) / np.array(stacker["scale"])
    return softmax(x @ np.array(stacker["coefficients"]) + np.array(stacker["bias"]))


def compare_rules(face, speech, targets, folds):
    """Each rule's accuracy over validation pairs, cross-validated over `folds` (a group per pair).

    Sum and product pick a face weight, the stacker its coefficients, on the other folds; the
    held-out fold scores them. Also gives each modality alone on the same pairs.
    """
    even = {"face": 0.5, "speech": 0.5}
    report = {"pairs": int(len(targets)),
              "face_only": round(float((face.argmax(axis=1) == targets).mean()), 4),
              "speech_only": round(float((speech.argmax(axis=1) == targets).mean()), 4), "rules": {}}
    for rule in ("sum", "product", "stacker"):
        correct = 0
        for fold in np.unique(folds):
            train, held = folds != fold, folds == fold
            if rule == "stacker":
                chosen, weights = fit_stacker(face[train], speech[train], targets[train]), even
            else:
                chosen, weights = rule, best_weights(face[train], speech[train], targets[train], rule)
            correct += (fused_predictions(face[held], speech[held], chosen, weights) == targets[held]).sum()
        report["rules"][rule] = {"cross_validated_accuracy": round(float(correct / len(targets)), 4)}
    return report


def speaker_head_calibration(folder, speech, cache, models_dir):
    """The temperature of a speaker-standardised head (`batch --normalise`) on RAVDESS actors 17-20,
    each actor's clips standardised together, as evaluation and `batch --normalise folder` do."""
    from .evaluate import speech_logits

    _, _, clips, logits, _ = speech_logits(folder, speech, "validation", cache, models_dir)
    return calibrate(softmax(logits), np.array([clip.label for clip in clips]), 1.0)


def tune(predictor, faces, speech, cache, per_clip=10, seed=0):
    """Temperatures and the fusion rule, all chosen on validation data.

    Faces: FER2013 PublicTest; speech: RAVDESS actors 17-20. Pseudo-pairs are dealt within
    folds, one per validation actor, each with its own quarter of the faces, so that the
    cross-validation of the rules never scores a pair whose clip or face it was fitted on.
    Returns {"face": calibration, "speech": calibration, "fusion": settings with the report}, and
    "speaker": the calibration of the models' speaker-standardised head where they have one
    (its features cached in `cache`).
    """
    from . import datasets
    from .speaker_groups import HEAD

    face_images, face_targets, _ = datasets.fer2013(faces, "public-test", predictor.labels)
    clips = datasets.ravdess_split(datasets.speech_clips(speech, predictor.labels), "validation")
    speech_targets = np.array([clip[1] for clip in clips])
    outputs = {"face": predictor.classify_faces(face_images),
               "speech": np.array([list(predictor.predict_speech(path)["probabilities"].values())
                                   for path, *_ in clips])}
    result = {}
    for name, targets, model in (("face", face_targets, predictor.face_model),
                                 ("speech", speech_targets, predictor.speech_model)):
        result[name] = calibrate(outputs[name], targets, model.temperature)
        outputs[name] = softmax(model.temperature * log_probabilities(outputs[name]),
                                result[name]["temperature"])
    if (predictor.models_dir / HEAD / "model.json").is_file():
        result["speaker"] = speaker_head_calibration(predictor.models_dir / HEAD, speech, cache, predictor.models_dir)

    actors = np.array([clip[2] for clip in clips])
    pairs = []
    for fold, actor in enumerate(sorted(set(actors))):
        clip_indices = np.flatnonzero(actors == actor)
        face_indices = np.flatnonzero(np.arange(len(face_targets)) % len(set(actors)) == fold)
        pairs += [(clip_indices[clip], face_indices[face], fold) for clip, face in
                  datasets.pair_up(speech_targets[clip_indices], face_targets[face_indices], per_clip, seed)]
    clip_index, face_index, folds = map(np.array, zip(*pairs))
    face, speech, targets = outputs["face"][face_index], outputs["speech"][clip_index], speech_targets[clip_index]
    report = compare_rules(face, speech, targets, folds)
    # The stacker is a yardstick: the shipped rule is the better of the two that serving knows.
    rule = max(RULES, key=lambda name: report["rules"][name]["cross_validated_accuracy"])
    settings = {"rule": rule, "weights": best_weights(face, speech, targets, rule), "adaptive": ADAPTIVE}
    settings["validation"] = {**report, "faces_per_clip": per_clip, "seed": seed,
                              "pairs_from": "RAVDESS actors 17-20 x FER2013 PublicTest (pseudo-paired)"}
    result["fusion"] = settings
    return result
