"""The label set, each dataset's mapping onto it, and that the shipped models agree with it."""

import json

import pytest

from emorec import labels
from emorec.labels import FER2013_CSV, LABELS, PRESETS, RAVDESS
from emorec.models import MODELS_DIR

from conftest import assert_valid_result


def test_label_order():
    assert LABELS == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def test_presets():
    assert PRESETS["seven"] == LABELS
    assert PRESETS["six"] == ("angry", "disgust", "fear", "happy", "neutral", "sad")
    assert "surprise" not in labels.preset("six")
    with pytest.raises(ValueError, match="unknown label preset"):
        labels.preset("eight")


def test_fer2013_csv_order_is_not_alphabetical():
    assert dict(enumerate(FER2013_CSV)) == {0: "angry", 1: "disgust", 2: "fear", 3: "happy",
                                            4: "sad", 5: "surprise", 6: "neutral"}
    assert sorted(FER2013_CSV) == list(LABELS)


def test_ravdess_codes():
    assert RAVDESS["02"] is None  # calm has no place in the label set
    assert RAVDESS["01"] == "neutral" and RAVDESS["06"] == "fear" and RAVDESS["08"] == "surprise"
    assert set(RAVDESS.values()) - {None} == set(LABELS)


@pytest.mark.parametrize("mapping", [labels.CREMA_D, labels.TESS, labels.EMODB, labels.RAVDESS])
def test_corpus_maps_land_in_the_label_set(mapping):
    assert set(mapping.values()) - {None} <= set(LABELS)


@pytest.mark.parametrize("modality", ["face", "speech"])
def test_shipped_model_cards_use_the_label_set(modality):
    card = json.loads((MODELS_DIR / modality / "model.json").read_text())
    assert tuple(card["labels"]) == LABELS


def test_predictor_probabilities_in_label_order(predictor, astronaut, clip):
    assert predictor.labels == LABELS
    result = predictor.predict(image=astronaut, audio=clip)
    for part in (result["face"], result["face"]["faces"][0], result["speech"],
                 result["speech"]["segments"][0], result["fusion"]):
        assert_valid_result(part, LABELS)
