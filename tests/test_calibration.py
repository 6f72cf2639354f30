"""Calibration and fusion tuning on synthetic data whose right answers are known."""

import numpy as np
import pytest

from emorec import calibration
from emorec.calibration import (best_weights, calibrate, compare_rules, expected_calibration_error,
                                fit_stacker, fit_temperature, fused_predictions, log_probabilities, nll, stacked)
from emorec.models import softmax

CLASSES = 7


def draw(probabilities, rng):
    """One label per row, drawn from that row's probabilities."""
    return (rng.random(len(probabilities))[:, None] < probabilities.cumsum(axis=1)).argmax(axis=1)


def synthetic_logits(n=20000, temperature=1.0, seed=0):
    """Logits and labels drawn from softmax(logits / temperature): `temperature` is the true one."""
    rng = np.random.default_rng(seed)
    logits = 2 * rng.normal(size=(n, CLASSES))
    return logits, draw(softmax(logits, temperature), rng)


def pairs(n, informative="face", seed=0):
    """Face and speech probabilities of n pairs: one modality is unsure but right, the other confident noise."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, CLASSES, n)
    onehot = np.eye(CLASSES)
    right = softmax(1.5 * onehot[targets] + rng.normal(0, 0.5, (n, CLASSES)))
    noise = softmax(4 * onehot[rng.integers(0, CLASSES, n)] + rng.normal(0, 0.5, (n, CLASSES)))
    face, speech = (right, noise) if informative == "face" else (noise, right)
    return face, speech, targets


def accuracy(predictions, targets):
    return float((np.asarray(predictions) == targets).mean())


# ---- temperatures -----------------------------------------------------------------------

def test_log_probabilities_stay_finite():
    np.testing.assert_allclose(log_probabilities([[0.0, 0.25, 1.0]]), [[np.log(1e-7), np.log(0.25), 0.0]])


def test_nll():
    assert nll(np.zeros((3, CLASSES)), np.array([0, 3, 6])) == pytest.approx(np.log(CLASSES))
    logits = np.array([[2.0, 0.0], [0.0, 1.0]])
    expected = -np.mean([np.log(softmax(logits[0], 2)[0]), np.log(softmax(logits[1], 2)[1])])
    assert nll(logits, np.array([0, 1]), temperature=2) == pytest.approx(expected)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_fit_temperature_recovers_the_true_temperature(temperature):
    logits, targets = synthetic_logits(temperature=temperature)
    fitted = fit_temperature(logits, targets)
    assert fitted == pytest.approx(temperature, rel=0.08)
    assert nll(logits, targets, fitted) <= min(nll(logits, targets, t) for t in (0.5 * fitted, 2 * fitted))


def test_calibrate_cools_an_overconfident_model():
    """Raw logits 3x too sharp, served at a card temperature of 1.5: the refit finds 3 on the raw logits."""
    logits, targets = synthetic_logits(seed=1)
    served = softmax(3 * logits, 1.5)
    result = calibrate(served, targets, temperature=1.5)
    assert set(result) == {"temperature", "samples", "nll_before", "nll_after", "ece_before", "ece_after"}
    assert result["samples"] == len(targets)
    assert result["temperature"] == pytest.approx(3.0, rel=0.08)
    assert result["nll_after"] < result["nll_before"] - 0.1
    assert result["ece_after"] < 0.02 < 0.1 < result["ece_before"]
    assert result["nll_before"] == pytest.approx(nll(3 * logits, targets), abs=1e-4)


def test_calibrate_reports_the_same_after_a_rerun():
    """'Before' is the raw logits, whatever temperature the card held, so calibrating twice agrees."""
    logits, targets = synthetic_logits(seed=3)
    first = calibrate(softmax(2 * logits), targets, temperature=1.0)
    again = calibrate(softmax(2 * logits, first["temperature"]), targets, temperature=first["temperature"])
    assert again == pytest.approx(first, abs=2e-4)
    assert first["ece_before"] > first["ece_after"]


def test_calibrate_keeps_a_calibrated_model():
    logits, targets = synthetic_logits(seed=2)
    result = calibrate(softmax(logits), targets, temperature=1.0)
    assert result["temperature"] == pytest.approx(1.0, rel=0.08)
    assert result["nll_after"] == pytest.approx(result["nll_before"], abs=2e-3)


def test_expected_calibration_error():
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.full(CLASSES, 0.3), 20000)
    targets = draw(probabilities, rng)  # calibrated by construction
    assert expected_calibration_error(probabilities, targets) < 0.02
    assert expected_calibration_error(softmax(4 * np.log(probabilities)), targets) > 0.1  # overconfident
    # All in one bin: 90 % confident, half right.
    assert expected_calibration_error(np.tile([0.9, 0.1], (4, 1)), np.array([0, 0, 1, 1])) == pytest.approx(0.4)


# ---- fusion rules -----------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["sum", "product"])
@pytest.mark.parametrize("informative", ["face", "speech"])
def test_best_weights_favour_the_informative_modality(rule, informative):
    face, speech, targets = pairs(300, informative)
    weights = best_weights(face, speech, targets, rule)
    assert set(weights) == {"face", "speech"} and sum(weights.values()) == pytest.approx(1)
    assert weights[informative] > 0.5
    assert weights["face"] * 20 == pytest.approx(round(weights["face"] * 20))  # on the 0.05 grid
    chosen = accuracy(fused_predictions(face, speech, rule, weights), targets)
    assert chosen >= accuracy(fused_predictions(face, speech, rule, {"face": 0.5, "speech": 0.5}), targets)


def test_best_weights_ties_go_to_the_most_even():
    face, _, targets = pairs(100)
    assert best_weights(face, face, targets, "sum") == {"face": 0.5, "speech": 0.5}


@pytest.fixture(scope="module")
def stacker():
    face, speech, targets = pairs(1000, seed=4)
    return fit_stacker(face, speech, targets)


def test_stacker_learns_which_modality_to_trust(stacker):
    face, speech, targets = pairs(1000, seed=5)  # fresh pairs
    even = {"face": 0.5, "speech": 0.5}
    probabilities = stacked(face, speech, stacker, even)
    assert probabilities.shape == (1000, CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1)
    assert accuracy(probabilities.argmax(axis=1), targets) > 0.8  # chance is 1/7
    assert accuracy(speech.argmax(axis=1), targets) < 0.25
    assert fused_predictions(face, speech, stacker, even).tolist() == probabilities.argmax(axis=1).tolist()
    assert {len(stacker["mean"]), len(stacker["scale"]), len(stacker["coefficients"])} == {2 * CLASSES}
    assert len(stacker["bias"]) == CLASSES


def test_stacker_weights_can_silence_a_modality(stacker):
    face, speech, _ = pairs(50, seed=6)
    other = np.random.default_rng(7).dirichlet(np.ones(CLASSES), 50)
    face_only = {"face": 1.0, "speech": 0.0}
    np.testing.assert_array_equal(stacked(face, speech, stacker, face_only), stacked(face, other, stacker, face_only))
    speech_only = {"face": 0.0, "speech": 1.0}
    np.testing.assert_array_equal(stacked(face, speech, stacker, speech_only),
                                  stacked(other, speech, stacker, speech_only))
    assert not np.allclose(stacked(face, speech, stacker, face_only), stacked(face, other, stacker, speech_only))


@pytest.mark.parametrize("rule", ["sum", "product"])
def test_fixed_rules_with_one_weight_follow_that_modality(rule):
    face, speech, _ = pairs(50, seed=8)
    assert fused_predictions(face, speech, rule, {"face": 1.0, "speech": 0.0}).tolist() == face.argmax(1).tolist()
    assert fused_predictions(face, speech, rule, {"face": 0.0, "speech": 1.0}).tolist() == speech.argmax(1).tolist()


def test_compare_rules():
    face, speech, targets = pairs(240, seed=9)
    folds = np.repeat(np.arange(3), 80)
    report = compare_rules(face, speech, targets, folds)
    assert report["pairs"] == 240
    assert report["face_only"] == round(accuracy(face.argmax(1), targets), 4)
    assert report["speech_only"] == round(accuracy(speech.argmax(1), targets), 4)
    assert list(report["rules"]) == ["sum", "product", "stacker"]
    for scores in report["rules"].values():
        assert set(scores) == {"cross_validated_accuracy"}
        assert report["speech_only"] < 0.25 < 0.75 < scores["cross_validated_accuracy"] <= 1


def test_weight_grid():
    assert calibration.WEIGHT_GRID.tolist() == pytest.approx([step / 20 for step in range(21)])
