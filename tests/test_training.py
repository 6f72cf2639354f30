"""Training (Keras 3) on tiny generated data: checkpoints, resume, export, and Keras/LiteRT parity."""

import csv
import json
import shutil

import cv2
import numpy as np
import pytest

pytest.importorskip("keras")

from emorec import datasets, train  # noqa: E402
from emorec.image import face_input  # noqa: E402
from emorec.labels import LABELS, preset  # noqa: E402
from emorec.models import Classifier, softmax  # noqa: E402
from emorec.predictor import attention_pool as numpy_attention_pool  # noqa: E402

from conftest import FER2013, shared, tone, wav_bytes, write  # noqa: E402

# Keras 3 on NumPy 2 warns about __array__ on every converted tensor; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

FER2013_TRAIN_COUNTS = [3995, 436, 4097, 7215, 4965, 4830, 3171]  # LABELS order


def write_fer_csv(path, rows_per_usage=(("Training", 42), ("PublicTest", 14), ("PrivateTest", 7)), seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for usage, count in rows_per_usage:
            for row in range(count):
                writer.writerow([row % 7, " ".join(map(str, rng.integers(0, 256, 48 * 48))), usage])
    return path


@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    """One epoch of a width-8 face CNN on a 42-face csv: the run folder and the returned network."""
    folder = tmp_path_factory.mktemp("face")
    data = write_fer_csv(folder / "fer2013.csv")
    network = train.train_face(data, folder / "run", epochs=1, batch_size=16, width=8, limit=32)
    return folder, network


def real_faces(per_label=4):
    """A few real FER2013 PrivateTest faces of each emotion, as the serving path prepares them."""
    root = shared(FER2013 / "test")
    faces = []
    for label in LABELS:
        for path in sorted((root / label).glob("PrivateTest_*.jpg"))[:per_label]:
            faces.append(face_input(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)))
    return np.stack(faces)


# ---- the face CNN -----------------------------------------------------------------------

def test_face_network_shapes():
    small, wide = train.face_network(7, width=8), train.face_network(6, width=16)
    assert small.input_shape == (None, 48, 48, 1)
    assert small.output_shape == (None, 7) and wide.output_shape == (None, 6)
    assert small.get_layer("logits").activation.__name__ == "linear"
    assert 3 * small.count_params() < wide.count_params()


def test_train_face_writes_checkpoints_and_export(face_run):
    folder, network = face_run
    run = folder / "run"
    assert {path.name for path in (run / "checkpoints").iterdir()} == {"best.keras", "last.keras", "state.json"}
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1 and [entry["epoch"] for entry in state["history"]] == [1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(state["history"][0])
    card = json.loads((run / "model.json").read_text())
    assert card["labels"] == list(LABELS) and card["temperature"] == 1.0
    assert card["architecture"] == "VGG-style CNN, width 8"
    assert card["parameters"] == network.count_params()

    classifier = Classifier(run)
    assert classifier.labels == LABELS
    logits = classifier(np.zeros((3, 48, 48, 1), np.float32))
    assert logits.shape == (3, len(LABELS)) and np.all(np.isfinite(logits))


def test_keras_and_litert_agree_on_real_faces(face_run):
    folder, network = face_run
    faces = real_faces()
    keras_probabilities = softmax(np.asarray(network(faces, training=False)))
    classifier = Classifier(folder / "run")
    litert_probabilities = softmax(classifier(faces), classifier.temperature)
    assert litert_probabilities.shape == (len(faces), len(LABELS))
    np.testing.assert_array_equal(litert_probabilities.argmax(1), keras_probabilities.argmax(1))
    np.testing.assert_allclose(litert_probabilities, keras_probabilities, atol=1e-4)


def test_resume_continues_from_saved_epoch(face_run, tmp_path, capsys):
    folder, _ = face_run
    shutil.copytree(folder / "run", tmp_path / "run")
    before = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())
    train.train_face(folder / "fer2013.csv", tmp_path / "run", epochs=2, batch_size=16, width=8, limit=32,
                     resume=True)
    assert "resuming at epoch 2 of 2" in capsys.readouterr().out
    state = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2
    assert [entry["epoch"] for entry in state["history"]] == [1, 2]
    assert state["history"][0] == before["history"][0]  # epoch 1 was not trained again
    assert state["best"] == max(entry["val_accuracy"] for entry in state["history"])
    assert Classifier(tmp_path / "run").labels == LABELS


def test_resume_when_finished_only_exports(face_run, tmp_path, capsys):
    folder, _ = face_run
    shutil.copytree(folder / "run", tmp_path / "run")
    (tmp_path / "run" / "model.tflite").unlink()
    train.train_face(folder / "fer2013.csv", tmp_path / "run", epochs=1, width=8, limit=32, resume=True)
    out = capsys.readouterr().out
    assert "Epoch" not in out
    assert json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())["epoch"] == 1
    assert (tmp_path / "run" / "model.tflite").stat().st_size > 0


def test_existing_run_needs_resume(face_run):
    folder, _ = face_run
    with pytest.raises(SystemExit, match="pass --resume"):
        train.train_face(folder / "fer2013.csv", folder / "run", epochs=1, width=8, limit=32)


def test_six_label_training_from_folders(tmp_path):
    """The Kaggle folder layout and the six-label preset, end to end (the smallest possible run)."""
    rng = np.random.default_rng(3)
    for usage, folder, count in (("Training", "train", 2), ("PublicTest", "test", 1)):
        for label in LABELS:
            for number in range(count):
                path = tmp_path / "fer" / folder / label / f"{usage}_{label}{number}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    network = train.train_face(tmp_path / "fer", tmp_path / "run", epochs=1, batch_size=8, width=4,
                               label_preset="six")
    assert network.output_shape == (None, 6)
    assert json.loads((tmp_path / "run" / "model.json").read_text())["labels"] == list(preset("six"))
    assert Classifier(tmp_path / "run")(np.zeros((1, 48, 48, 1), np.float32)).shape == (1, 6)


# ---- training pieces --------------------------------------------------------------------

def test_class_weights_favour_disgust():
    targets = np.repeat(np.arange(7), FER2013_TRAIN_COUNTS)
    weights = train.class_weights(targets, 7)
    assert max(weights, key=weights.get) == LABELS.index("disgust")
    assert min(weights, key=weights.get) == LABELS.index("happy")
    assert np.average([weights[t] for t in range(7)], weights=FER2013_TRAIN_COUNTS) == pytest.approx(1)
    assert weights[1] / weights[3] == pytest.approx(np.sqrt(7215 / 436))


def test_class_weights_with_an_absent_class():
    weights = train.class_weights(np.array([0, 0, 1]), 3)
    assert set(weights) == {0, 1, 2} and all(np.isfinite(list(weights.values())))


def test_cosine_schedule():
    rate = train.cosine_schedule(1e-3, epochs=10, warmup=2)
    assert [rate(0), rate(1), rate(2)] == pytest.approx([5e-4, 1e-3, 1e-3])
    assert rate(6) == pytest.approx(5e-4)
    values = [rate(epoch) for epoch in range(2, 10)]
    assert values == sorted(values, reverse=True) and values[-1] > 0


def test_augment_face_is_seeded_and_keeps_shape():
    face = (np.arange(48 * 48) % 256).astype(np.uint8).reshape(48, 48)
    first = train.augment_face(face.copy(), np.random.default_rng(5))
    second = train.augment_face(face.copy(), np.random.default_rng(5))
    assert first.shape == (48, 48) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, face)


def test_face_batches():
    faces = np.random.default_rng(0).integers(0, 256, (10, 48, 48), dtype=np.uint8)
    targets = np.array([0, 1, 2, 3, 4, 5, 6, 0, 1, 2])
    weights = {label: label + 1.0 for label in range(7)}
    batches = train.FaceBatches(faces, targets, 7, batch_size=4, seed=0, weights=weights)
    assert len(batches) == 3
    x, y, w = batches[0]
    assert x.shape == (4, 48, 48, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (4, 7) and np.all(y.sum(1) == 1)
    np.testing.assert_array_equal(w, y.argmax(1) + 1.0)
    seen = np.concatenate([batches[i][1].argmax(1) for i in range(len(batches))])
    assert sorted(seen) == sorted(targets)  # every face once per epoch


def test_fer2013_csv_for_training_round_trip(tmp_path):
    path = write_fer_csv(tmp_path / "f.csv", (("Training", 14),))
    faces, targets, _ = datasets.fer2013(path, "train")
    assert faces.shape == (14, 48, 48)
    assert [LABELS[t] for t in targets[:7]] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


# ---- the speech head --------------------------------------------------------------------

def test_attention_pool_matches_serving():
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(2, 5, 8)).astype(np.float32)
    mask = np.array([[True] * 5, [True, True, True, False, False]])
    pooled = np.asarray(train.attention_pool(outputs, mask))
    np.testing.assert_allclose(pooled[0], numpy_attention_pool(outputs[0]), atol=1e-5)
    np.testing.assert_allclose(pooled[1], numpy_attention_pool(outputs[1, :3]), atol=1e-5)


def test_pad_sequences():
    batch, mask = train.pad_sequences([np.ones((2, 4)), np.ones((5, 4))])
    assert batch.shape == (2, 5, 4) and mask.tolist() == [[True, True, False, False, False], [True] * 5]
    assert batch[0, 2:].sum() == 0


def test_train_speech_on_a_tiny_corpus(tmp_path, predictor):
    """Actors 1-20 with a few tone 'clips' each: embeddings cached, head trained, exported, served."""
    for actor in (1, 2, 17, 18):
        for emotion in ("01", "03", "05"):
            write(tmp_path / "corpus" / f"Actor_{actor:02d}", f"03-01-{emotion}-01-01-01-{actor:02d}.wav",
                  wav_bytes(tone(0.3 + 0.4 * actor / 18, frequency=200 * int(emotion) + actor)))
    yamnet = predictor.models_dir / "yamnet" / "yamnet.tflite"
    network = train.train_speech(tmp_path / "corpus", tmp_path / "run", yamnet, tmp_path / "cache",
                                 epochs=1, batch_size=4, variants=1)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 6 * 2 + 6  # train clean + augmented, validation
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["labels"] == list(LABELS) and card["pooling"] == "attention"
    classifier = Classifier(tmp_path / "run")
    embeddings = np.random.default_rng(0).normal(size=(1, 4, 1024)).astype(np.float32)
    np.testing.assert_allclose(classifier(embeddings), np.asarray(network(embeddings)), atol=1e-4)
    assert classifier(embeddings).shape == (1, 4, len(LABELS) + 1)
