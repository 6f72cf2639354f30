"""Late fusion: weight parsing, the sum and product rules, and fusion inside the Predictor."""

import numpy as np
import pytest

from emorec import fusion
from emorec.errors import InputError
from emorec.fusion import fuse, parse_weights
from emorec.labels import LABELS

from conftest import assert_valid_result, wav_bytes


# ---- parse_weights ----------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("face=0.6,speech=0.4", {"face": 0.6, "speech": 0.4}),
    ("face=3,speech=1", {"face": 0.75, "speech": 0.25}),
    (" face = 1 , speech = 1 ", {"face": 0.5, "speech": 0.5}),
    ("speech=2", {"face": 0.0, "speech": 1.0}),
    ("face=1,speech=0", {"face": 1.0, "speech": 0.0}),
    ("face=1e-3,speech=3e-3", {"face": 0.25, "speech": 0.75}),
    ("face=1,", {"face": 1.0, "speech": 0.0}),
    ({"face": 0.2, "speech": 0.2}, {"face": 0.5, "speech": 0.5}),
    ({"speech": "4"}, {"face": 0.0, "speech": 1.0}),
])
def test_parse_weights_normalises(text, expected):
    weights = parse_weights(text)
    assert list(weights) == list(fusion.MODALITIES)
    assert weights == pytest.approx(expected)
    assert sum(weights.values()) == pytest.approx(1)


@pytest.mark.parametrize("text, message", [
    ("voice=1", "'voice' is not one of face, speech"),
    ("face=1,text=1", "'text' is not one of face, speech"),
    ("Face=1", "is not one of"),
    ("face=-0.5,speech=1", "non-negative"),
    ("face=nan,speech=1", "finite"),
    ("face=inf", "finite"),
    ("face=0,speech=0", "at least one positive weight"),
    ("", "at least one positive weight"),
    ("face=high", "'high' is not a number"),
    ("face", "is not a number"),
    ("face=1;speech=1", "is not a number"),
    ({"face": None}, "is not a number"),
    ({"face": [1]}, "is not a number"),
    ({"emotion": 1}, "is not one of"),
])
def test_parse_weights_rejects_bad_input(text, message):
    with pytest.raises(InputError, match=message):
        parse_weights(text)


# ---- fuse -------------------------------------------------------------------------------

FACE = np.array([0.5, 0.5])
SPEECH = np.array([0.9, 0.1])
EVEN = {"face": 0.5, "speech": 0.5}


def test_sum_rule_is_weighted_mean():
    fused, used = fuse({"face": FACE, "speech": SPEECH}, EVEN, "sum")
    np.testing.assert_allclose(fused, [0.7, 0.3])
    assert used == {"face": 0.5, "speech": 0.5}
    fused, _ = fuse({"face": FACE, "speech": SPEECH}, {"face": 0.75, "speech": 0.25}, "sum")
    np.testing.assert_allclose(fused, [0.6, 0.4])


def test_product_rule_is_renormalised_weighted_geometric_mean():
    fused, _ = fuse({"face": FACE, "speech": SPEECH}, EVEN, "product")
    expected = np.sqrt(FACE * SPEECH)
    np.testing.assert_allclose(fused, expected / expected.sum())
    np.testing.assert_allclose(fused, [0.75, 0.25])


def test_product_rule_is_sharper_on_agreement_and_vetoes_zeros():
    a, b = np.array([0.6, 0.3, 0.1]), np.array([0.6, 0.1, 0.3])
    summed, _ = fuse({"face": a, "speech": b}, EVEN, "sum")
    product, _ = fuse({"face": a, "speech": b}, EVEN, "product")
    assert product[0] > summed[0]
    fused, _ = fuse({"face": np.array([0.0, 1.0]), "speech": np.array([0.9, 0.1])}, EVEN, "product")
    assert fused[0] < 1e-4
    assert np.all(np.isfinite(fused))


@pytest.mark.parametrize("rule", fusion.RULES)
def test_missing_modality_rests_on_the_other(rule):
    fused, used = fuse({"speech": SPEECH}, {"face": 0.9, "speech": 0.1}, rule)
    np.testing.assert_allclose(fused, SPEECH)
    assert used == {"speech": 1.0}


@pytest.mark.parametrize("rule", fusion.RULES)
def test_zero_weight_has_no_say(rule):
    fused, used = fuse({"face": FACE, "speech": SPEECH}, {"face": 1.0, "speech": 0.0}, rule)
    np.testing.assert_allclose(fused, FACE)
    assert used == {"face": 1.0}


def test_only_zero_weight_modalities_present_share_equally():
    fused, used = fuse({"face": FACE}, {"face": 0.0, "speech": 1.0})
    np.testing.assert_allclose(fused, FACE)
    assert used == {"face": 1.0}


@pytest.mark.parametrize("rule", fusion.RULES)
def test_fused_probabilities_sum_to_one(rule):
    rng = np.random.default_rng(1)
    for _ in range(20):
        face, speech = rng.dirichlet(np.ones(7)), rng.dirichlet(np.ones(7))
        weights = parse_weights({"face": rng.uniform(0, 1), "speech": rng.uniform(0.01, 1)})
        fused, _ = fuse({"face": face, "speech": speech}, weights, rule)
        assert fused.sum() == pytest.approx(1) and np.all(fused >= 0)


def test_unknown_rule():
    with pytest.raises(InputError, match="unknown fusion rule 'max'"):
        fuse({"face": FACE}, EVEN, "max")


# ---- inside the Predictor ---------------------------------------------------------------

@pytest.fixture(scope="module")
def both(predictor, astronaut, clip):
    return predictor.predict(image=astronaut, audio=clip)


def test_default_fusion_uses_both(both, predictor):
    fused = both["fusion"]
    assert fused["status"] == "fused" and fused["sources"] == ["face", "speech"]
    assert fused["weights"] == predictor.default_weights
    assert_valid_result(fused, LABELS)
    face = np.array(list(both["face"]["probabilities"].values()))
    speech = np.array(list(both["speech"]["probabilities"].values()))
    expected, _ = fuse({"face": face, "speech": speech}, predictor.default_weights, predictor.fusion_rule,
                       predictor.fusion_adaptive)
    np.testing.assert_allclose(list(fused["probabilities"].values()), expected, atol=2e-6)


def test_face_only_weights_equal_the_face_result(predictor, astronaut, clip, both):
    result = predictor.predict(image=astronaut, audio=clip, weights="face=1,speech=0")
    assert result["fusion"]["weights"] == {"face": 1.0, "speech": 0.0}
    assert result["fusion"]["sources"] == ["face"] and result["fusion"]["status"] == "face_only"
    assert result["fusion"]["probabilities"] == pytest.approx(result["face"]["probabilities"], abs=2e-6)
    assert result["fusion"]["label"] == result["face"]["label"]
    assert result["face"] == both["face"] and result["speech"] == both["speech"]


def test_speech_only_weights_equal_the_speech_result(predictor, astronaut, clip):
    result = predictor.predict(image=astronaut, audio=clip, weights={"speech": 1})
    assert result["fusion"]["sources"] == ["speech"]
    assert result["fusion"]["probabilities"] == pytest.approx(result["speech"]["probabilities"], abs=2e-6)


def test_no_face_rests_on_speech(predictor, chelsea, clip, clip_result):
    result = predictor.predict(image=chelsea, audio=clip)
    assert result["face"]["status"] == "no_face"
    assert result["fusion"]["status"] == "speech_only" and result["fusion"]["sources"] == ["speech"]
    assert result["fusion"]["probabilities"] == pytest.approx(clip_result["probabilities"], abs=2e-6)


def test_image_only_rests_on_face(predictor, astronaut):
    result = predictor.predict(image=astronaut)
    assert result["speech"] is None
    assert result["fusion"]["status"] == "face_only"
    assert result["fusion"]["probabilities"] == pytest.approx(result["face"]["probabilities"], abs=2e-6)


def test_nothing_found(predictor, chelsea):
    result = predictor.predict(image=chelsea, audio=wav_bytes(np.zeros(16000)))
    assert result["fusion"]["status"] == "no_signal"
    assert result["fusion"]["label"] is None and result["fusion"]["sources"] == []


def test_predictor_rejects_bad_weights_and_no_input(predictor, astronaut):
    with pytest.raises(InputError, match="not one of face, speech"):
        predictor.predict(image=astronaut, weights="voice=1")
    with pytest.raises(InputError, match="give an image, an audio clip, or both"):
        predictor.predict()


def test_product_rule_setting(predictor, astronaut, clip, both, monkeypatch):
    monkeypatch.setattr(predictor, "fusion_rule", "product")
    monkeypatch.setattr(predictor, "fusion_adaptive", 0.0)
    fused = predictor.predict(image=astronaut, audio=clip)["fusion"]
    face = np.array(list(both["face"]["probabilities"].values()))
    speech = np.array(list(both["speech"]["probabilities"].values()))
    weights = predictor.default_weights  # the shipped defaults, normalised
    expected = face ** weights["face"] * speech ** weights["speech"]
    np.testing.assert_allclose(list(fused["probabilities"].values()), expected / expected.sum(), atol=2e-6)


def test_certainty_is_one_for_one_hot_and_zero_for_uniform():
    assert fusion.certainty([1.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert fusion.certainty([1 / 3] * 3) == pytest.approx(0.0, abs=1e-9)
    assert 0 < fusion.certainty([0.6, 0.3, 0.1]) < 1


@pytest.mark.parametrize("rule", fusion.RULES)
def test_adaptive_weighting_silences_an_unsure_modality(rule):
    unsure, sure = np.full(3, 1 / 3), np.array([0.1, 0.7, 0.2])
    fused, used = fuse({"face": unsure, "speech": sure}, EVEN, rule, adaptive=1.0)
    assert used["face"] < 1e-5 and used["speech"] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(fused, sure, atol=1e-4)
    _, fixed = fuse({"face": unsure, "speech": sure}, EVEN, rule, adaptive=0.0)
    assert fixed == pytest.approx(EVEN)


def test_adaptive_weighting_scales_weights_by_certainty():
    face, speech = np.array([0.8, 0.1, 0.1]), np.array([0.5, 0.3, 0.2])
    _, used = fuse({"face": face, "speech": speech}, {"face": 0.25, "speech": 0.75}, "product", adaptive=1.0)
    raw = {"face": 0.25 * fusion.certainty(face), "speech": 0.75 * fusion.certainty(speech)}
    assert used["face"] == pytest.approx(raw["face"] / sum(raw.values()))
    assert sum(used.values()) == pytest.approx(1.0)
