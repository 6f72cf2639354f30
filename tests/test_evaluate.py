"""Evaluation: metrics with unanswered samples, and fusion accuracy on pseudo-pairs under perturbations."""

import numpy as np
import pytest

from emorec import evaluate
from emorec.errors import InputError
from emorec.evaluate import CONDITIONS, evaluate_fusion, metrics
from emorec.labels import LABELS

from conftest import FER2013, PAIR_LABELS, RAVDESS, shared

CONDITIONS_TESTED = ("clean", "face removed", "speech removed", "speech + white noise 10 dB", "face darkened (x0.25)")


def test_metrics_count_no_prediction_as_wrong():
    report = metrics([0, 1, 1, 2], [0, -1, 1, -1], ["a", "b", "c"])
    assert report["samples"] == 4 and report["accuracy"] == 0.5
    assert report["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]  # unanswered samples are left out
    assert report["per_class"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}


def test_unanswered_samples_lower_recall():
    report = metrics([0, 1, 1, 2], [0, -1, 1, -1], ["a", "b", "c"])
    assert report["per_class"]["b"]["support"] == 2 and report["per_class"]["b"]["recall"] == 0.5
    assert report["per_class"]["c"]["recall"] == 0 and report["macro_f1"] < 1


def test_conditions():
    assert list(CONDITIONS)[0] == "clean" and CONDITIONS["clean"] == (None, None)
    assert CONDITIONS["face removed"] == ("face", None) and CONDITIONS["speech removed"] == ("speech", None)
    assert {changed for changed, _ in CONDITIONS.values()} == {None, "face", "speech"}
    assert sum(name.startswith("speech + ") for name in CONDITIONS) == 6  # white noise and babble at 3 SNRs


def test_white_noise_has_the_asked_signal_to_noise_ratio():
    rng = np.random.default_rng(0)
    speech = 0.1 * np.sin(np.arange(16000) / 5)
    noisy = CONDITIONS["speech + white noise 10 dB"][1](speech, 0, [speech], rng)
    ratio = 10 * np.log10(np.mean(speech ** 2) / np.mean((noisy - speech) ** 2))
    assert ratio == pytest.approx(10, abs=0.2) and noisy.dtype == np.float32


@pytest.fixture(scope="module")
def rows():
    """One pseudo-pair per label of PAIR_LABELS: a FER2013 PrivateTest crop and an actor-21 clip."""
    return [{"image": str(sorted((shared(FER2013) / "test" / label).glob("PrivateTest_*.jpg"))[0]),
             "audio": str(shared(RAVDESS / "Actor_21" / f"03-01-{code}-02-01-01-21.wav")), "label": label}
            for label, code in PAIR_LABELS.items()]


@pytest.fixture(scope="module")
def report(predictor, rows):
    return evaluate_fusion(predictor, rows, crops=True, conditions=CONDITIONS_TESTED)


def accuracies(predictor, rows, weights=None, face=True, speech=True):
    """Face, speech and fused accuracy of the rows, predicted straight from the files."""
    hits = {"face": [], "speech": [], "fused": []}
    for row in rows:
        results = {"face": predictor.predict_face(row["image"], crops=True) if face else None,
                   "speech": predictor.predict_speech(row["audio"]) if speech else None}
        results["fused"] = predictor.fuse(results["face"], results["speech"], weights)
        for name, result in results.items():
            hits[name].append(result is not None and result["label"] == row["label"])
    return {name: round(float(np.mean(found)), 4) for name, found in hits.items()}


def test_evaluate_fusion_report(predictor, rows, report):
    assert report["pairs"] == 3 and report["weights"] == predictor.default_weights
    assert list(report["conditions"]) == list(CONDITIONS_TESTED)
    for accuracy in report["conditions"].values():
        assert set(accuracy) == {"face", "speech", "fused"}
        assert all(value is None or 0 <= value <= 1 for value in accuracy.values())
    # The clean condition's fused metrics sit at the top level.
    assert report["samples"] == 3 and report["accuracy"] == report["conditions"]["clean"]["fused"]
    assert np.array(report["confusion"]).sum() == 3 and report["labels"] == list(LABELS)


def test_clean_inputs_score_as_the_files_do(predictor, rows, report):
    """The perturbation path re-encodes the decoded inputs losslessly: clean scores equal direct ones."""
    assert report["conditions"]["clean"] == accuracies(predictor, rows)


def test_removed_modality_has_no_accuracy(predictor, rows, report):
    clean, conditions = report["conditions"]["clean"], report["conditions"]
    assert conditions["face removed"] == {"face": None, "speech": clean["speech"], "fused": clean["speech"]}
    assert conditions["speech removed"] == {"face": clean["face"], "speech": None, "fused": clean["face"]}
    assert conditions["speech + white noise 10 dB"]["face"] == clean["face"]
    assert conditions["face darkened (x0.25)"]["speech"] == clean["speech"]


def test_noise_is_seeded(predictor, rows, report):
    again = evaluate_fusion(predictor, rows, crops=True, conditions=["speech + white noise 10 dB"])
    assert again["conditions"]["speech + white noise 10 dB"] == report["conditions"]["speech + white noise 10 dB"]


def test_each_distinct_file_is_predicted_once_per_condition(predictor, rows, report, monkeypatch):
    """A manifest pairing every clip with every face: 3 clips and 3 faces, not 9 of each."""
    calls = {"face": 0, "speech": 0}
    for kind in calls:
        method = getattr(predictor, f"predict_{kind}")
        monkeypatch.setattr(predictor, f"predict_{kind}",
                            lambda *args, kind=kind, method=method: calls.__setitem__(kind, calls[kind] + 1)
                            or method(*args))
    crossed = [{"image": face["image"], "audio": clip["audio"], "label": clip["label"]}
               for clip in rows for face in rows]
    tested = ["clean", "speech + white noise 10 dB", "face darkened (x0.25)"]
    crossed_report = evaluate_fusion(predictor, crossed, crops=True, conditions=tested)
    assert calls == {"face": 3 * 2, "speech": 3 * 2}  # clean, then the one condition that changes it
    # Every clip meets its own face once and two others: speech accuracy over the crossing is the clips'.
    for name in tested:
        assert crossed_report["conditions"][name]["speech"] == report["conditions"][name]["speech"]


def test_certainty_exponents_compared_on_the_same_predictions(predictor, rows, report, monkeypatch):
    """Each exponent's column is what fusing with that exponent shipped would score."""
    tested = ["clean", "speech + white noise 10 dB", "face removed"]
    compared = evaluate_fusion(predictor, rows, crops=True, conditions=tested, exponents=(0.0, 1.0))
    assert list(compared["certainty_exponents"]) == ["0.0", "1.0"]
    for exponent in (0.0, 1.0):
        monkeypatch.setattr(predictor, "fusion_adaptive", exponent)
        alone = evaluate_fusion(predictor, rows, crops=True, conditions=tested)
        found = compared["certainty_exponents"][str(exponent)]
        assert found["conditions"] == {name: alone["conditions"][name]["fused"] for name in tested}
        # "face removed" keeps one modality only: the mean is over the other two conditions.
        assert found["mean_with_both"] == pytest.approx((found["conditions"]["clean"]
                                                         + found["conditions"]["speech + white noise 10 dB"]) / 2,
                                                        abs=1e-4)
    assert "certainty_exponents" not in report


def test_user_weights(predictor, rows):
    weights = {"face": 1.0, "speech": 0.0}
    report = evaluate_fusion(predictor, rows, crops=True, weights=weights)
    assert report["weights"] == weights and list(report["conditions"]) == ["clean"]
    assert report["conditions"]["clean"]["fused"] == report["conditions"]["clean"]["face"]


@pytest.mark.parametrize("labels, found", [([None, "angry"], "None"), (["calm", "happy"], "calm")])
def test_rows_need_known_labels(predictor, labels, found):
    rows = [{"image": "a.png", "audio": "b.wav", **({"label": label} if label else {})} for label in labels]
    with pytest.raises(InputError, match=f"needs a label column with labels from angry, .*; found {found}$"):
        evaluate_fusion(predictor, rows)


def test_write_report_with_removed_modalities(report, tmp_path):
    path = evaluate.write_report(report, tmp_path, "metrics-pairs", "fusion")
    assert path == tmp_path / "metrics-pairs.json"
    assert (tmp_path / "metrics-pairs.png").stat().st_size > 0
    assert '"face": null' in path.read_text()


def test_balanced_accuracy_is_mean_recall_over_present_classes():
    # class 0: 3 of 4 right, class 2: 1 of 2 right; class 1 never occurs and does not count
    assert evaluate.balanced_accuracy([0, 0, 0, 0, 2, 2], [0, 0, 0, 1, 2, 0]) == pytest.approx((0.75 + 0.5) / 2, abs=1e-4)


def test_cross_corpus_scores_restrict_predictions_to_the_shared_classes():
    """A model's disgust (1) logit is highest on two clips of a corpus without disgust: restricted to
    the shared classes 0, 2, 3 those clips take their best shared class; disgust clips are left out."""
    logits = np.array([[5, 9, 0, 0], [0, 9, 5, 0], [0, 0, 0, 5], [5, 0, 0, 0], [0, 9, 0, 0]], float)
    targets = [0, 2, 3, 2, 1]
    scores = evaluate.shared_class_scores(targets, logits, [0, 2, 3])
    assert scores["samples"] == 4 and scores["class_indices"] == [0, 2, 3]
    assert scores["accuracy"] == 0.75  # clip 3 (truth 2, predicted 0) is the one wrong
    assert scores["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3, abs=1e-4)
    assert scores["balanced_accuracy_unrestricted"] == pytest.approx((0 + 0 + 1) / 3, abs=1e-4)  # disgust answers count wrong
