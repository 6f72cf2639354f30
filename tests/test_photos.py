"""Faces in real photos: the landmark warp, the photo ensemble, the low-resolution flag, and the
evaluation on labelled photos."""

import json
import shutil

import cv2
import numpy as np
import pytest

from emorec import datasets
from emorec.errors import InputError
from emorec.image import TEMPLATE_112, align_crop, aligned_face_input, landmark_transform, load_image
from emorec.models import MODELS_DIR, log_linear, softmax
from emorec.predictor import Predictor

from conftest import ASTRONAUT, CHELSEA, error_lines, image_bytes, models_copy, run_cli, shared, write


def detection_with_landmarks(landmarks):
    """A YuNet-shaped row (box, 5 landmarks, score) around the given landmarks."""
    landmarks = np.asarray(landmarks, np.float32)
    low, high = landmarks.min(axis=0) - 20, landmarks.max(axis=0) + 20
    return np.concatenate([low, high - low, landmarks.ravel(), [0.9]]).astype(np.float32)


def similar_landmarks(angle=25.0, scale=2.5, shift=(140.0, 60.0)):
    """The template's landmarks moved by a rotation, scaling and shift (a similarity transform)."""
    theta = np.radians(angle)
    rotation = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return TEMPLATE_112 @ rotation.T + shift


# ---- the 5-point warp ---------------------------------------------------------------------

def test_landmark_transform_puts_the_landmarks_on_the_template():
    landmarks = similar_landmarks()
    matrix = landmark_transform(detection_with_landmarks(landmarks))
    moved = landmarks @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(moved, TEMPLATE_112, atol=0.05)


def test_aligned_face_input_draws_each_landmark_at_its_template_place():
    landmarks = similar_landmarks(angle=-15.0, scale=3.0, shift=(200.0, 120.0))
    picture = np.zeros((600, 600, 3), np.uint8)
    for point in landmarks:
        cv2.circle(picture, (int(round(point[0])), int(round(point[1]))), 6, (0, 0, 255), -1)  # red in BGR
    face = aligned_face_input(picture, detection_with_landmarks(landmarks))
    assert face.shape == (3, 112, 112) and face.dtype == np.float32
    assert face.min() >= -1.0 and face.max() <= 1.0
    red = face[0] > 0.5  # channels are RGB after the warp
    for x, y in TEMPLATE_112:
        assert red[int(round(y)), int(round(x))]
    assert not (face[2] > 0.5).any()  # no blue: the channels were swapped to RGB


def test_aligned_face_input_on_a_real_face(predictor):
    picture = load_image(ASTRONAUT)
    detection = predictor.detector.detect(picture)[0]
    face = aligned_face_input(picture, detection)
    eyes = face[:, 45:58, 30:82].mean()  # the eye band is darker than the cheeks below it
    assert eyes < face[:, 75:85, 30:82].mean()


# ---- the photo ensemble -------------------------------------------------------------------

def test_log_linear_weights_log_probabilities():
    first, second = np.array([[2.0, 0.0, -1.0]]), np.array([[0.0, 3.0, 0.0]])
    np.testing.assert_allclose(softmax(log_linear([first, second], [1.0, 0.0])), softmax(first))
    mixed = log_linear([first, second], [0.5, 0.5])
    np.testing.assert_allclose(softmax(mixed), softmax((first + second) / 2), atol=1e-12)


def test_shipped_card_mixes_the_cnn_and_the_aligned_face_model(predictor):
    kinds = [(kind, weight) for _, kind, weight in predictor.face_model.photo_members]
    assert [kind for kind, _ in kinds] == ["crop", "aligned"]
    assert sum(weight for _, weight in kinds) == pytest.approx(1.0)
    picture = load_image(ASTRONAUT)
    detections = predictor.detector.detect(picture)[:1]
    (cnn, _, cnn_weight), (other, _, other_weight) = predictor.face_model.photo_members
    grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
    crop = align_crop(grey, detections[0])[None, :, :, None] / np.float32(255)
    cnn_logits = (cnn(crop) + cnn(crop[:, :, ::-1])) / 2  # the card asks for flip averaging
    other_logits = other(aligned_face_input(picture, detections[0])[None])
    expected = softmax(log_linear([cnn_logits, other_logits], [cnn_weight, other_weight]),
                       predictor.face_model.photo_temperature)
    np.testing.assert_allclose(predictor.classify_photo_faces(picture, detections), expected, atol=1e-6)
    result = predictor.predict_face(ASTRONAUT)
    assert result["probabilities"] == pytest.approx(dict(zip(predictor.labels, expected[0])), abs=1e-6)


def test_cnn_only_photo_card_matches_the_crops_path(tmp_path, predictor):
    cnn_only = {"members": [{"file": "model.tflite", "input": "crop", "weight": 1.0}],
                "temperature": predictor.face_model.temperature}
    folder = models_copy(tmp_path, face_card={"photo": cnn_only})
    alone = Predictor(folder)
    picture = load_image(ASTRONAUT)
    detections = alone.detector.detect(picture)
    crops = [align_crop(cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY), d) for d in detections]
    np.testing.assert_allclose(alone.classify_photo_faces(picture, detections), alone.classify_faces(crops),
                               atol=1e-6)
    assert alone.classify_photo_faces(picture, detections)[0] != pytest.approx(
        predictor.classify_photo_faces(picture, detections)[0], abs=1e-4)  # the second member counts


def test_unknown_photo_member_input_is_refused(tmp_path):
    folder = models_copy(tmp_path, face_card={"photo": {"members": [
        {"file": "model.tflite", "input": "thermal", "weight": 1.0}]}})
    with pytest.raises(ValueError, match="unknown photo member input"):
        Predictor(folder)


def test_crops_never_use_the_aligned_face_model(predictor):
    crop = np.full((48, 48), 120, np.uint8)
    crop[14:20, 10:38] = 40
    result = predictor.predict_face(image_bytes(crop), crops=True)
    np.testing.assert_allclose(list(result["probabilities"].values()), predictor.classify_faces([crop])[0],
                               atol=1e-6)


# ---- low resolution -----------------------------------------------------------------------

def test_small_faces_are_flagged_low_resolution(predictor):
    threshold = predictor.face_model.low_resolution_px
    assert threshold > 0
    picture = load_image(ASTRONAUT)
    result = predictor.predict_face(ASTRONAUT)
    side = max(result["faces"][0]["box"][2:])
    assert side >= threshold and not result["faces"][0]["low_resolution"]
    factor = 0.7 * threshold / side  # the same photo, its face now under the threshold
    small = cv2.resize(picture, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    found = predictor.predict_face(cv2.imencode(".png", small)[1].tobytes())
    assert found["status"] == "ok", "YuNet should still find the face"
    assert max(found["faces"][0]["box"][2:]) < threshold and found["faces"][0]["low_resolution"]


def test_low_resolution_threshold_comes_from_the_card(tmp_path):
    folder = models_copy(tmp_path, face_card={"photo": {**json.loads((MODELS_DIR / "face" / "model.json")
                                                                       .read_text())["photo"],
                                                        "low_resolution_px": 10_000}})
    assert Predictor(folder).predict_face(ASTRONAUT)["faces"][0]["low_resolution"]


# ---- labelled photos and their evaluation -------------------------------------------------

@pytest.fixture
def photo_folder(tmp_path):
    """Two labelled photos: the astronaut (a face, labelled happy) and a cat (no face, labelled sad)."""
    folder = tmp_path / "photos"
    for label, source in (("happy", ASTRONAUT), ("sad", CHELSEA)):
        (folder / label).mkdir(parents=True)
        shutil.copy(shared(source), folder / label / source.name)
    write(folder, "labels.csv", "image,label\nhappy/astronaut.png,happy\nsad/chelsea.png,sad\n")
    return folder


def test_labelled_photos_from_the_csv_or_the_folders(photo_folder):
    expected = [(str(photo_folder / "happy" / "astronaut.png"), 3),
                (str(photo_folder / "sad" / "chelsea.png"), 5)]
    assert datasets.labelled_photos(photo_folder) == expected
    (photo_folder / "labels.csv").unlink()
    assert datasets.labelled_photos(photo_folder) == expected


def test_labelled_photos_errors(tmp_path, photo_folder):
    with pytest.raises(InputError, match="no folder"):
        datasets.labelled_photos(tmp_path / "missing")
    write(photo_folder, "labels.csv", "file,emotion\nhappy/astronaut.png,happy\n")
    with pytest.raises(InputError, match="columns image, label"):
        datasets.labelled_photos(photo_folder)
    with pytest.raises(InputError, match="no photos labelled"):
        datasets.labelled_photos(write(tmp_path, "empty/other/x.jpg", b"").parent.parent)


def test_evaluate_face_on_labelled_photos(tmp_path, photo_folder):
    result = run_cli("evaluate", "face", "--data", photo_folder, "--split", "photos-wild",
                     "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "metrics-photos-wild.json").read_text())
    assert (tmp_path / "out" / "metrics-photos-wild.png").stat().st_size > 0
    assert report["samples"] == 2 and report["no_face"] == 1 and report["low_resolution"] == 0
    happy_hit = report["per_class"]["happy"]["recall"]
    assert report["per_class"]["sad"]["recall"] == 0  # the cat has no face: counted wrong
    assert report["balanced_accuracy"] == report["balanced_accuracy_without_fear"] == happy_hit / 2
    assert report["accuracy"] == happy_hit / 2
    assert 0 <= report["ece"] <= 1 and report["calibration"]["samples"] == 1
    assert "balanced accuracy" in result.stdout


def test_evaluate_photos_bad_input(tmp_path):
    result = run_cli("evaluate", "face", "--data", tmp_path / "nothing", "--split", "photos-wild")
    assert result.returncode == 2 and error_lines(result.stderr) == [
        f"emorec: error: {tmp_path / 'nothing'}: no folder of labelled photos there"]
    result = run_cli("evaluate", "face", "--data", tmp_path, "--split", "public-test", "--calibrate")
    assert result.returncode == 2 and error_lines(result.stderr) == [
        "emorec: error: --calibrate needs evaluate face --split photos-wild"]


def test_split_half_calibration_finds_overconfidence():
    """Labels drawn from softmax(logits / 2): the model is over-confident by a temperature of 2."""
    from emorec.evaluate import split_half_calibration

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 7))
    targets = np.array([rng.choice(7, p=p) for p in softmax(logits, 2.0)])
    report = split_half_calibration(softmax(logits), targets, 1.0)
    assert report["temperature"] == pytest.approx(2.0, rel=0.1)
    assert report["split_half_ece_refitted"] < report["split_half_ece_temperature_1"] / 2
