"""Speech clips scored in groups of one speaker or source (`emorec batch --normalise`): each clip's
features standardised by the mean and std of its group's clips, as evaluation standardises each
speaker's (`speech_features.normalise`), then classified by a head trained on features standardised so.
"""

import sys
from pathlib import Path

import numpy as np

from .audio import load_audio
from .errors import InputError
from .models import Classifier, softmax
from .scoring import failed
from .speech_features import front_end, standardise

GROUPINGS = ("folder", "batch")  # a group: the clips of one directory, or every clip of the command
MIN_CLIPS = 5  # the mean and std of fewer clips describe those clips more than the voice
HEAD = Path("speech") / "speaker"  # the speaker-standardised head's folder within a models folder


def grouped(paths, grouping):
    """{group: its paths}, groups in order of first appearance: "folder" groups clips by directory,
    "batch" puts them all in one group "batch". A group of fewer than MIN_CLIPS is refused."""
    if grouping not in GROUPINGS:
        raise ValueError(f"unknown grouping {grouping!r}; choose from {', '.join(GROUPINGS)}")
    groups = {}
    for path in paths:
        groups.setdefault(str(Path(path).parent) if grouping == "folder" else "batch", []).append(path)
    small = [f"{group} ({len(members)})" for group, members in groups.items() if len(members) < MIN_CLIPS]
    if small:
        raise InputError(f"--normalise {grouping} standardises each group by its own clips and needs at least "
                         f"{MIN_CLIPS} clips a group; too few in {', '.join(small[:3])}"
                         + (f" and {len(small) - 3} more" if len(small) > 3 else ""))
    return groups


def load_head(folder, labels):
    """The speech head in `folder`, checked to be trained on speaker-standardised features with `labels`."""
    if not (Path(folder) / "model.json").is_file():
        raise InputError(f"{folder}: no speech head (model.json and model.tflite) there; give --speech-model")
    head = Classifier(folder)
    normalisation = head.card.get("feature_normalisation", "none")
    if normalisation != "speaker":
        raise InputError(f"{folder}: the head was trained with feature normalisation {normalisation!r}; "
                         "--normalise needs one trained with `emorec train speech --normalise speaker`")
    if head.labels != tuple(labels):
        raise InputError(f"{folder}: the head's labels {', '.join(head.labels)} are not the models' "
                         f"{', '.join(labels)}")
    return head


def score(predictor, head, groups, progress=True):
    """An output row per clip, a group at a time: path, group, group_size (the decoded clips its
    statistics are over) and the plain batch's fields.

    Each clip's features come from the front end the head's card names (`_front_end`), once per clip; a
    group's features stay in memory (32 KiB a clip for Whisper base) until it is scored. A clip that
    cannot be decoded gets its error row and is left out of the statistics; the clips of a group with
    fewer than MIN_CLIPS decoded get error rows saying so.
    """
    from tqdm import tqdm

    extractor = _front_end(predictor, head)
    with tqdm(total=sum(map(len, groups.values())), desc="speech features", unit="clip", file=sys.stderr,
              disable=not progress) as bar:
        for group, paths in groups.items():
            rows, features = [{"path": path, "group": group} for path in paths], {}
            for index, path in enumerate(paths):
                try:
                    features[index] = extractor(load_audio(path))
                except InputError as error:
                    rows[index] |= failed(error)
                bar.update()
            for index, result in zip(features, _classify(predictor, head, group, list(features.values()))):
                rows[index] |= result
            for row in rows:
                yield row | {"group_size": len(features)}


def _front_end(predictor, head):
    """The Predictor's own front end when the head reads the same features (its card's settings agree),
    so the encoder is loaded once; otherwise the front end the head's card names."""
    own = predictor.speech_front_end
    if all(head.card.get(setting) == value for setting, value in own.card.items()):
        return own
    return front_end(head.card.get("front_end", "yamnet"), predictor.models_dir, head.card)


def _classify(predictor, head, group, features):
    """Results for one group's features: standardised by the group, then the head's probabilities at
    its temperature, as the Predictor gives them."""
    if len(features) < MIN_CLIPS:
        return [failed(f"{group}: only {len(features)} of its clips decoded; standardising by the group "
                       f"needs at least {MIN_CLIPS}")] * len(features)
    (standardised,) = standardise([np.stack(features)], np.zeros(len(features)))
    probabilities = softmax(head(standardised), head.temperature)
    return [{"status": "ok", **predictor._result(p)} for p in probabilities]
