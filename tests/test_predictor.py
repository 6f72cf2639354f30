"""The Predictor: loading model folders, settings in the model cards, and the result format."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from emorec.audio import load_audio, speech_frames
from emorec.labels import LABELS
from emorec.models import MODELS_DIR, softmax
from emorec.predictor import Predictor

from conftest import assert_valid_result, models_copy


def test_result_is_json_serialisable(predictor, astronaut, clip):
    result = predictor.predict(image=astronaut, audio=clip)
    assert set(result) == {"face", "speech", "fusion"}
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_missing_modality_is_none(predictor, astronaut, clip):
    assert predictor.predict(image=astronaut)["speech"] is None
    assert predictor.predict(audio=clip)["face"] is None


def test_classify_faces(predictor):
    faces = [np.full((48, 48), 128, np.uint8), np.zeros((100, 80), np.uint8), np.full((30, 30, 3), 200, np.uint8)]
    probabilities = predictor.classify_faces(faces)
    assert probabilities.shape == (3, len(LABELS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-6)


def test_speech_head_reads_the_front_end_features(predictor, clip, clip_result):
    """Clip and segment probabilities are the head on the front end's clip and window features;
    the speech score is YAMNet's best "Speech" frame."""
    waveform = load_audio(clip)
    scores = predictor.yamnet(speech_frames(waveform))[1]
    assert scores.shape == (9,)  # 9 frames in 4.4 s
    assert clip_result["speech_score"] == pytest.approx(scores.max(), abs=1e-4)
    features, windows, spans = predictor.speech_front_end.timeline(waveform)
    np.testing.assert_array_equal(features, predictor.speech_front_end(waveform))
    expected = softmax(predictor.speech_model(np.concatenate([features[None], windows])),
                       predictor.speech_model.temperature)
    np.testing.assert_allclose(list(clip_result["probabilities"].values()), expected[0], atol=2e-6)
    assert len(clip_result["segments"]) == len(spans) == len(windows) > 1
    assert spans[0][0] == 0 and spans[-1][1] == pytest.approx(clip_result["duration"], abs=0.6)
    for segment, (start, end), row in zip(clip_result["segments"], spans, expected[1:]):
        assert (segment["start"], segment["end"]) == (round(start, 3), round(end, 3))
        np.testing.assert_allclose(list(segment["probabilities"].values()), row, atol=2e-6)


def test_repeat_predictions_are_identical(predictor, astronaut, clip):
    assert predictor.predict(image=astronaut, audio=clip) == predictor.predict(image=astronaut, audio=clip)


def test_thread_safe(predictor, astronaut, camera, clip):
    expected = {path: predictor.predict(image=image, audio=clip) for path, image in
                (("a", astronaut), ("c", camera))}
    results, errors = [], []

    def work(name, image):
        try:
            for _ in range(3):
                results.append((name, predictor.predict(image=image, audio=clip)))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(name, image))
               for name, image in (("a", astronaut), ("c", camera)) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 12
    assert all(result == expected[name] for name, result in results)


# ---- model folders and settings ---------------------------------------------------------

def test_models_folder_with_fusion_settings(tmp_path, astronaut, clip):
    folder = models_copy(tmp_path, fusion={"rule": "product", "weights": {"face": 1, "speech": 3}})
    custom = Predictor(folder)
    assert custom.fusion_rule == "product"
    assert custom.default_weights == {"face": 0.25, "speech": 0.75}
    result = custom.predict(image=astronaut, audio=clip)
    assert result["fusion"]["weights"] == {"face": 0.25, "speech": 0.75}
    face = np.array(list(result["face"]["probabilities"].values()))
    speech = np.array(list(result["speech"]["probabilities"].values()))
    expected = face ** 0.25 * speech ** 0.75
    np.testing.assert_allclose(list(result["fusion"]["probabilities"].values()), expected / expected.sum(),
                               atol=2e-6)


def test_fusion_settings_live_in_the_fusion_folder(tmp_path):
    folder = models_copy(tmp_path)
    (folder / "fusion.json").write_text(json.dumps({"rule": "product", "weights": {"face": 1, "speech": 0}}))
    custom = Predictor(folder)  # the old place, <models>/fusion.json, is not read
    assert custom.fusion_rule == "sum" and custom.default_weights == {"face": 0.5, "speech": 0.5}


def test_unknown_fusion_rule_is_refused_at_load(tmp_path):
    folder = models_copy(tmp_path, fusion={"rule": "stacker", "weights": {"face": 0.5, "speech": 0.5}})
    with pytest.raises(ValueError, match="fusion rule 'stacker'"):
        Predictor(folder)


def test_mismatched_labels_are_refused(tmp_path):
    folder = models_copy(tmp_path, speech_card={"labels": list(reversed(LABELS))})
    with pytest.raises(ValueError, match="differ"):
        Predictor(folder)


def test_card_labels_are_used(tmp_path, predictor, astronaut):
    six = ["a", "b", "c", "d", "e", "f", "g"]
    folder = models_copy(tmp_path, face_card={"labels": six}, speech_card={"labels": six})
    result = Predictor(folder).predict(image=astronaut)
    assert list(result["face"]["probabilities"]) == six
    assert list(result["face"]["probabilities"].values()) == \
        list(predictor.predict(image=astronaut)["face"]["probabilities"].values())


def test_temperature_softens(tmp_path, predictor):
    face = np.full((48, 48), 90, np.uint8)
    face[10:20, 10:38] = 200
    folder = models_copy(tmp_path, face_card={"temperature": 3.0})
    warm = Predictor(folder).classify_faces([face])[0]
    logits = predictor.face_model(face[None, :, :, None].astype(np.float32) / 255)[0]
    np.testing.assert_allclose(warm, softmax(logits, 3.0), atol=1e-6)
    assert warm.max() < predictor.classify_faces([face])[0].max()


def test_flip_test_time_augmentation(tmp_path, predictor):
    face = np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))  # not mirror-symmetric
    folder = models_copy(tmp_path, face_card={"flip_tta": True})
    flipped = Predictor(folder).classify_faces([face])[0]
    batch = face[None, :, :, None].astype(np.float32) / 255
    logits = (predictor.face_model(batch) + predictor.face_model(batch[:, :, ::-1]))[0] / 2
    np.testing.assert_allclose(flipped, softmax(logits, predictor.face_model.temperature), atol=1e-6)


def test_predict_face_result_shape(predictor, astronaut):
    result = predictor.predict_face(astronaut)
    assert set(result) == {"status", "faces", "label", "confidence", "probabilities"}
    assert set(result["faces"][0]) == {"box", "low_resolution", "label", "confidence", "probabilities"}
    assert_valid_result(result, LABELS)


def test_predict_speech_result_shape(clip_result):
    assert set(clip_result) == {"status", "duration", "speech_score", "label", "confidence",
                                "probabilities", "segments"}
    assert set(clip_result["segments"][0]) == {"start", "end", "label", "confidence", "probabilities"}


# ---- the shipped models on a few real test-split samples --------------------------------

def reported_accuracy(modality, split):
    """The accuracy the shipped model's own evaluation report (committed beside it) claims."""
    return json.loads((MODELS_DIR / modality / f"metrics-{split}.json").read_text())["accuracy"]


def test_speech_model_beats_chance_on_held_out_actors(predictor):
    """Strong-intensity RAVDESS clips of actors 21-24 (never trained on), one repetition each."""
    from emorec.datasets import ravdess_split, speech_clips
    from conftest import RAVDESS, shared

    reported = reported_accuracy("speech", "ravdess-test")

    def fields(clip):  # RAVDESS's name: modality-channel-emotion-intensity-statement-repetition-actor
        return Path(clip[0]).name.split("-")

    clips = [clip for clip in ravdess_split(speech_clips(shared(RAVDESS)), "test")
             if fields(clip)[5] == "01" and (fields(clip)[3] == "02" or LABELS[clip[1]] == "neutral")]
    assert len(clips) == 56
    hits = sum(predictor.predict_speech(path)["label"] == LABELS[label] for path, label, *_ in clips)
    # Chance is 1/7; 56 clips put the sample accuracy within about 0.2 of the reported figure.
    assert hits / len(clips) >= max(2 / 7, reported - 0.2)


def test_face_model_beats_chance_on_fer2013_private_test(predictor):
    """20 FER2013 PrivateTest faces per emotion through the serving path."""
    import cv2
    from conftest import FER2013, shared

    reported = reported_accuracy("face", "private-test")
    faces, targets = [], []
    for index, label in enumerate(LABELS):
        for path in sorted((shared(FER2013) / "test" / label).glob("PrivateTest_*.jpg"))[:20]:
            faces.append(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
            targets.append(index)
    predictions = predictor.classify_faces(faces).argmax(1)
    assert len(set(predictions.tolist())) >= 4  # not one label for everything
    assert (predictions == np.array(targets)).mean() >= max(2 / 7, reported - 0.2)


def test_face_ensemble_averages_its_members_logits(tmp_path, predictor):
    from emorec.models import Classifier
    faces = np.random.default_rng(0).random((3, 48, 48, 1)).astype(np.float32)
    folder = models_copy(tmp_path) / "face"
    (folder / "twin.tflite").symlink_to(MODELS_DIR / "face" / "model.tflite")
    card = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**card, "ensemble": ["model.tflite", "twin.tflite"]}))
    ensemble = Classifier(folder)
    assert len(ensemble.members) == 2
    member_logits = [member(faces) for member in ensemble.members]
    np.testing.assert_allclose(ensemble(faces), (member_logits[0] + member_logits[1]) / 2, atol=1e-6)
    np.testing.assert_allclose(ensemble(faces), predictor.face_model.members[0](faces), atol=1e-5)
