"""Training (Keras 3) on tiny generated data: checkpoints, resume, export, and Keras/LiteRT parity."""

import csv
import functools
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("keras")

from emorec import datasets, train  # noqa: E402
from emorec.cli import main  # noqa: E402
from emorec.errors import InputError  # noqa: E402
from emorec.image import face_input  # noqa: E402
from emorec.labels import LABELS, preset  # noqa: E402
from emorec.audio import load_audio  # noqa: E402
from emorec.models import MODELS_DIR, Classifier, softmax  # noqa: E402
from emorec.predictor import Predictor  # noqa: E402
from emorec.speech_features import YAMNetFeatures, speech_features  # noqa: E402

from conftest import CLIP, FER2013, RAVDESS, ROOT, models_copy, shared, tone, wav_bytes, write  # noqa: E402

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
    assert card["weights"] == "int8 (dynamic range)"
    assert card["architecture"] == "VGG-style CNN, width 8"
    assert card["parameters"] == network.count_params()

    classifier = Classifier(run)
    assert classifier.labels == LABELS
    logits = classifier(np.zeros((3, 48, 48, 1), np.float32))
    assert logits.shape == (3, len(LABELS)) and np.all(np.isfinite(logits))


def assert_litert_agrees(folder, network, faces, tolerance):
    """The exported file's logits match the Keras network's within `tolerance` of their range,
    and give the same class wherever Keras's top two are further apart than that."""
    keras_logits = np.asarray(network(faces, training=False))
    litert_logits = Classifier(folder)(faces)
    assert litert_logits.shape == keras_logits.shape == (len(faces), len(LABELS))
    atol = tolerance * np.ptp(keras_logits)
    np.testing.assert_allclose(litert_logits, keras_logits, atol=atol)
    top_two = np.sort(keras_logits, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 2 * atol
    assert clear.sum() >= len(faces) // 2
    np.testing.assert_array_equal(litert_logits.argmax(1)[clear], keras_logits.argmax(1)[clear])


def test_keras_and_quantized_litert_agree_on_real_faces(face_run):
    folder, network = face_run
    assert_litert_agrees(folder / "run", network, real_faces(), tolerance=0.02)


def test_keras_and_float_litert_agree_on_real_faces(face_run, tmp_path):
    _, network = face_run
    train.export(network, tmp_path, LABELS)
    assert json.loads((tmp_path / "model.json").read_text())["weights"] == "float32"
    assert_litert_agrees(tmp_path, network, real_faces(), tolerance=1e-4)


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
    assert "Epoch" not in out and "the run is complete at epoch 1; exporting its best epoch" in out
    assert json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())["epoch"] == 1
    assert (tmp_path / "run" / "model.tflite").stat().st_size > 0


def test_export_without_tensorflow_says_how_to_finish(face_run, tmp_path, monkeypatch):
    """As on the GPU machine (Keras on JAX, no TensorFlow): the checkpoints stay, and the message
    says that --resume exports them where TensorFlow is installed (test_resume_when_finished_only_exports)."""
    _, network = face_run
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(SystemExit, match="writing model.tflite needs TensorFlow: run the same command with --resume"):
        train.export(network, tmp_path, LABELS)
    assert list(tmp_path.iterdir()) == []


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


def test_photo_augmentation_is_seeded_keeps_range_and_degrades():
    face = cv2.imread(str(sorted(shared(FER2013 / "test" / "happy").glob("PrivateTest_*.jpg"))[0]),
                      cv2.IMREAD_GRAYSCALE)
    photo = train.AUGMENTATIONS["photo"]
    variants = [train.augment_face(face.copy(), np.random.default_rng(seed), photo) for seed in range(40)]
    again = train.augment_face(face.copy(), np.random.default_rng(7), photo)
    np.testing.assert_array_equal(variants[7], again)
    assert all(v.shape == (48, 48) and v.dtype == np.uint8 for v in variants)
    assert all(not np.array_equal(v, face) for v in variants)
    assert len({v.tobytes() for v in variants}) == len(variants)
    # Low resolution, blur and JPEG take out fine detail: less high-frequency energy than the
    # standard recipe's variants of the same face, on average.
    standard = [train.augment_face(face.copy(), np.random.default_rng(seed)) for seed in range(40)]
    detail = [np.mean([np.abs(cv2.Laplacian(v, cv2.CV_32F)).mean() for v in faces])
              for faces in (variants, standard)]
    assert detail[0] < 0.9 * detail[1]
    assert np.std([v.mean() for v in variants]) > np.std([v.mean() for v in standard])  # other light


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


def real_fer_folder(folder, per_label=2):
    """A Kaggle-layout FER2013 folder of real faces: PrivateTest files renamed as Training and PublicTest."""
    for label in LABELS:
        sources = sorted(shared(FER2013 / "test" / label).glob("PrivateTest_*.jpg"))[:2 * per_label]
        for number, source in enumerate(sources):
            usage, split = ("Training", "train") if number < per_label else ("PublicTest", "test")
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            shutil.copy(source, folder / split / label / f"{usage}_{number}.jpg")
    return folder


def test_fer2013_pack_round_trip(tmp_path):
    """The pack holds Training (lossy WebP, within a few grey levels) and PublicTest (exact), with
    labels and names; `train face --data` reads it like the folder it came from."""
    source = real_fer_folder(tmp_path / "fer")
    size = datasets.pack_fer2013(source, tmp_path / "packs" / "fer.npz")
    assert size == (tmp_path / "packs" / "fer.npz").stat().st_size
    for split, tolerance in (("train", 4), ("public-test", 0)):
        faces, targets, names = datasets.fer2013(source, split)
        packed, packed_targets, packed_names = datasets.fer2013(tmp_path / "packs" / "fer.npz", split)
        assert packed.shape == faces.shape == (14, 48, 48) and packed.dtype == np.uint8
        np.testing.assert_array_equal(packed_targets, targets)
        assert packed_names == names
        assert np.abs(packed.astype(int) - faces).mean() <= tolerance
    assert np.abs(packed.astype(int) - faces).max() == 0  # PublicTest: lossless
    six, six_targets, _ = datasets.fer2013(tmp_path / "packs" / "fer.npz", "train", preset("six"))
    assert len(six) == 12 and set(six_targets) == set(range(6))
    with pytest.raises(InputError, match="no FER2013 PrivateTest images"):
        datasets.fer2013(tmp_path / "packs" / "fer.npz", "private-test")


def test_pack_command_and_its_errors(tmp_path, capsys):
    source = real_fer_folder(tmp_path / "fer", per_label=1)
    assert main(["train", "face", "--pack", "--data", str(source), "--out", str(tmp_path / "fer.npz")]) == 0
    assert "FER2013 Training and PublicTest packed" in capsys.readouterr().out
    assert len(datasets.fer2013(tmp_path / "fer.npz", "train")[0]) == 7
    assert main(["train", "speech", "--pack", "--data", str(source), "--out", str(tmp_path / "x.npz")]) == 2
    assert "emorec: error: --pack packs FER2013 faces" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"not a pack")
    with pytest.raises(InputError, match="not a FER2013 pack"):
        datasets.fer2013(tmp_path / "bad.npz", "train")


def test_time_limit_stops_after_the_last_epoch_that_fits():
    class Model:
        stop_training = False

    for seconds, stops in ((0, True), (3600, False)):
        limit = train.TimeLimit(seconds)
        limit.set_model(Model())
        limit.on_epoch_begin(0)
        limit.on_epoch_end(0)
        assert limit.model.stop_training is stops


def test_training_imports_without_the_serving_runtimes():
    """A GPU machine has Keras but neither LiteRT, ONNX Runtime, FFmpeg (PyAV), libsndfile nor soxr
    (scripts/train_face_gpu.sh): the CLI and training import without them."""
    absent = ("ai_edge_litert", "onnxruntime", "av", "soundfile", "soxr")
    blocked = f"import sys\nfor name in {absent}: sys.modules[name] = None\n"
    result = subprocess.run([sys.executable, "-c", blocked + "import emorec.cli, emorec.train"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ---- the speech head --------------------------------------------------------------------

YAMNET = MODELS_DIR / "yamnet" / "yamnet.tflite"
SPEECH_WIDTH = 2 * (256 + 4 * 512)  # mean and std of YAMNet layers 6-10
REAL_CLIPS = [CLIP, RAVDESS / "Actor_21" / "03-01-03-02-01-01-21.wav"]


def tone_corpus(folder, actors, emotions=("01", "03", "05")):
    """RAVDESS-named tone 'clips', one per actor and emotion, each of its own pitch and length."""
    for actor in actors:
        for emotion in emotions:
            write(folder / f"Actor_{actor:02d}", f"03-01-{emotion}-01-01-01-{actor:02d}.wav",
                  wav_bytes(tone(0.3 + 0.4 * actor / 24, frequency=200 * int(emotion) + actor)))
    return folder


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory):
    """One epoch of the speech head on tones of actors 1-2 (train) and 17-18 (validation)."""
    folder = tmp_path_factory.mktemp("speech")
    network = train.train_speech(tone_corpus(folder / "corpus", (1, 2, 17, 18)), folder / "run",
                                 YAMNetFeatures(YAMNET), folder / "cache", epochs=1, batch_size=4, variants=1)
    return folder, network


@pytest.fixture(scope="module")
def real_features(tmp_path_factory):
    """Training's features of two real RAVDESS clips."""
    (features,) = speech_features([shared(path) for path in REAL_CLIPS], YAMNetFeatures(YAMNET),
                                  tmp_path_factory.mktemp("cache"))
    return features


def test_speech_head_shapes_and_standardisation():
    x = np.random.default_rng(0).normal(3, 2, (50, 10)).astype(np.float32)
    model = train.speech_head(7, x)
    assert model.input_shape == (None, 10) and model.output_shape == (None, 7)
    assert model.get_layer("logits").activation.__name__ == "linear"
    standardised = np.asarray(model.get_layer("standardise")(x))
    np.testing.assert_allclose(standardised.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(standardised.std(axis=0), 1, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(model(x, training=False)))
    assert model.count_params() == 10 * 7 + 7 + 2 * 10 + 1  # the linear layer; mean, variance and count


def test_mlp_head_has_a_hidden_layer_and_exports(tmp_path):
    x = np.random.default_rng(0).normal(0, 1, (40, 10)).astype(np.float32)
    model = train.speech_head(7, x, "mlp")
    assert model.get_layer("hidden").units == train.MLP_UNITS
    assert model.count_params() == 10 * train.MLP_UNITS + train.MLP_UNITS + train.MLP_UNITS * 7 + 7 + 2 * 10 + 1
    train.export(model, tmp_path, LABELS, front_end="whisper-base")
    served = Classifier(tmp_path)
    np.testing.assert_allclose(served(x[:3]), np.asarray(model(x[:3], training=False)), rtol=1e-4, atol=1e-5)


def test_middle_means_head_reads_the_middle_layers_means_and_exports(tmp_path):
    x = np.random.default_rng(0).normal(0, 1, (40, 8 * 4)).astype(np.float32)  # 8 layers: 2 means, 2 stds each
    model = train.speech_head(7, x, "middle-means", groups=8)
    columns = [4 * layer + column for layer in train.MIDDLE_LAYERS for column in (0, 1)]
    np.testing.assert_array_equal(np.asarray(model.get_layer("middle_means")(x)), x[:, columns])
    assert model.get_layer("logits").kernel_regularizer.l2 == pytest.approx(train.MIDDLE_L2)
    assert model.count_params() == len(columns) * 7 + 7 + 2 * len(columns) + 1
    x[:, [c for c in range(32) if c not in columns]] = 1e3  # the other columns do not count
    np.testing.assert_allclose(np.asarray(model(x, training=False)),
                               np.asarray(model(np.where(x == 1e3, 0, x), training=False)), rtol=1e-6)
    train.export(model, tmp_path, LABELS, front_end="whisper-base")
    np.testing.assert_allclose(Classifier(tmp_path)(x[:3]), np.asarray(model(x[:3], training=False)),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="the middle-means head reads all 8 Whisper layers"):
        front_end = SimpleNamespace(name="whisper-base", card={"whisper_layers": [3]})
        train.train_speech(tmp_path, tmp_path / "run", front_end, tmp_path / "cache", head="middle-means")


def test_layer_weighted_head_sums_layers_by_learned_weights_and_exports(tmp_path):
    x = np.random.default_rng(0).normal(0, 1, (40, 3 * 4)).astype(np.float32)
    model = train.speech_head(7, x, "layer-weighted", groups=3)
    weighting = model.get_layer("layer_weights")
    parts = x.reshape(40, 3, 4)
    np.testing.assert_allclose(np.asarray(weighting(parts)), parts.mean(axis=1), rtol=1e-5, atol=1e-6)  # equal at first
    weighting.logits.assign(np.log([1.0, 2.0, 5.0]))
    np.testing.assert_allclose(np.asarray(weighting(parts)), np.einsum("l,bld->bd", [0.125, 0.25, 0.625], parts),
                               rtol=1e-5, atol=1e-6)
    assert model.count_params() == 4 * 7 + 7 + 3 + 2 * 12 + 1  # the linear layer on one layer's width, 3 weights
    train.export(model, tmp_path, LABELS, front_end="whisper-base")
    served = Classifier(tmp_path)
    np.testing.assert_allclose(served(x[:3]), np.asarray(model(x[:3], training=False)), rtol=1e-4, atol=1e-5)
    assert train._layer_weights(model) == {"layer_weights": [0.125, 0.25, 0.625]}
    with pytest.raises(InputError, match="the layer-weighted head needs the Whisper front end, not yamnet"):
        train.train_speech(tmp_path, tmp_path / "run", YAMNetFeatures(YAMNET), tmp_path / "cache",
                           head="layer-weighted")


def test_train_speech_on_a_tiny_corpus(speech_run):
    """Features cached per clip and variant, head trained, exported with the YAMNet layers it reads."""
    folder, network = speech_run
    assert len(list((folder / "cache").glob("*.npy"))) == 6 * 2 + 6  # train clean + augmented, validation
    assert (folder / "run" / "checkpoints" / "best.keras").exists()
    card = json.loads((folder / "run" / "model.json").read_text())
    assert card == {"labels": list(LABELS), "temperature": 1.0, "weights": "float32", "front_end": "yamnet",
                    "input": "mean and std over frames of YAMNet layer features",
                    "yamnet_layers": list(train.SPEECH_LAYERS), "corpora": ["ravdess"],
                    "trained_labels": list(LABELS), "feature_normalisation": "none", "variants": 1,
                    "augmentation": "signal", "head": "linear", "missing_classes": "masked",
                    "parameters": SPEECH_WIDTH * 7 + 7 + 2 * SPEECH_WIDTH + 1}
    history = json.loads((folder / "run" / "checkpoints" / "state.json").read_text())["history"]
    assert history[0]["val_mean_accuracy"] == history[0]["val_ravdess_accuracy"]  # one corpus: its accuracy
    assert network.count_params() == card["parameters"]
    assert Classifier(folder / "run").input["shape"].tolist() == [1, SPEECH_WIDTH]


def test_speech_features_are_the_serving_features(speech_run, real_features, tmp_path):
    """Training's cached features of real clips are what a Predictor serving the head computes."""
    served = Predictor(models_copy(tmp_path, speech=speech_run[0] / "run"))
    assert real_features.shape == (2, SPEECH_WIDTH) and real_features.dtype == np.float32
    for row, path in zip(real_features, REAL_CLIPS):
        np.testing.assert_allclose(row, served.speech_front_end.timeline(load_audio(path))[0], rtol=1e-6, atol=1e-7)


class CachedOnly:
    """A stand-in for a front end that only has cached answers."""

    name = "cached only"

    def __init__(self, key):
        self.key = key

    def __call__(self, waveform):
        raise AssertionError("the front end ran although the features were cached")


def test_speech_features_are_cached_per_layer_choice(tmp_path):
    clips = [shared(path) for path in REAL_CLIPS]
    yamnet = YAMNetFeatures(YAMNET, (15,))
    (first,) = speech_features(clips, yamnet, tmp_path)
    assert first.shape == (2, 2 * 1024)
    (again,) = speech_features(clips, CachedOnly(yamnet.key), tmp_path)
    np.testing.assert_array_equal(again, first)
    with pytest.raises(AssertionError, match="front end ran"):  # other layers: not in the cache
        speech_features(clips, CachedOnly(YAMNetFeatures(YAMNET, (14,)).key), tmp_path)


def test_speech_feature_variants_are_seeded_augmentations(tmp_path):
    clips = [shared(CLIP)]
    yamnet = YAMNetFeatures(YAMNET, (15,))
    clean, first, second = speech_features(clips, yamnet, tmp_path / "a", variants=2, seed=0)
    np.testing.assert_array_equal(clean, speech_features(clips, yamnet, tmp_path / "b")[0])
    assert not np.allclose(first, clean) and not np.allclose(first, second)
    for variant, again in zip((clean, first, second),
                              speech_features(clips, yamnet, tmp_path / "c", variants=2, seed=0)):
        np.testing.assert_array_equal(variant, again)  # recomputed in another cache: the same
    reseeded = speech_features(clips, yamnet, tmp_path / "d", variants=1, seed=1)
    np.testing.assert_array_equal(reseeded[0], clean)
    assert not np.allclose(reseeded[1], first)
    channel = speech_features(clips, yamnet, tmp_path / "a", variants=2, seed=0, augment="channel")
    np.testing.assert_array_equal(channel[0], clean)  # the clean clip is shared by the recipes' caches
    assert not np.allclose(channel[1], first) and not np.allclose(channel[2], second)
    assert len(list((tmp_path / "a").glob("*.npy"))) == 5  # clean + 2 copies per recipe


def test_keras_litert_and_predictor_agree_on_real_speech(speech_run, real_features, tmp_path):
    """Training's features through the Keras head, the exported TFLite and a Predictor serving it."""
    folder, network = speech_run
    keras_logits = np.asarray(network(real_features, training=False))
    np.testing.assert_allclose(Classifier(folder / "run")(real_features), keras_logits, rtol=1e-4, atol=1e-3)
    served = Predictor(models_copy(tmp_path, speech=folder / "run"))
    for path, logits in zip(REAL_CLIPS, keras_logits):
        result = served.predict_speech(path)
        np.testing.assert_allclose(list(result["probabilities"].values()), softmax(logits), atol=1e-4)


def test_speech_cross_validation_command(cli_predictor, capsys, monkeypatch, tmp_path):
    """Two recipes, two folds of actors and the canonical split, one epoch each, on tones."""
    from emorec.cli import main

    corpus = tone_corpus(tmp_path / "corpus", (1, 13, 21), emotions=("03", "05"))
    write(corpus, "emodb/13a01Wa.wav", wav_bytes(tone(0.5)))  # not RAVDESS: left out
    recipes = {"mean embedding": ((15,), 0, "mean"), "mean+std of layers 6-10, 1 copy": (train.SPEECH_LAYERS, 1,
                                                                                        "mean+std")}
    monkeypatch.setattr(train, "SPEECH_RECIPES", recipes)
    monkeypatch.setattr(train, "speech_cross_validation",
                        functools.partial(train.speech_cross_validation, folds=2, epochs=1, batch_size=4))
    assert main(["evaluate", "speech", "--cross-validate", "--data", str(corpus), "--cache", str(tmp_path / "cache"),
                 "--out", str(tmp_path)]) == 0
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 6 + 6 * 2  # layer 15 clean; layers 6-10 and a copy
    report = json.loads((tmp_path / "cross-validation.json").read_text())
    assert (report["data"], report["folds"], report["epochs"]) == (str(corpus), 2, 1)
    assert list(report["recipes"]) == list(recipes)
    canonical = "canonical test (actors 21-24, trained on 1-16)"
    for name, (layers, copies, statistics) in recipes.items():
        recipe = report["recipes"][name]
        assert (recipe["yamnet_layers"], recipe["augmented_copies"], recipe["statistics"]) == \
            (list(layers), copies, statistics)
        held_out = {"actors 1-12": 2, "actors 13-24": 4, canonical: 2}  # clips scored in each split
        assert list(recipe["folds"]) == list(held_out)
        assert all(score * held_out[split] == round(score * held_out[split]) and 0 <= score <= 1
                   for split, score in recipe["folds"].items())
        folds = [recipe["folds"]["actors 1-12"], recipe["folds"]["actors 13-24"]]
        assert recipe["cross_validation_mean"] == pytest.approx(np.mean(folds), abs=1e-4)
        assert recipe["cross_validation_std"] == pytest.approx(np.std(folds), abs=1e-4)
        assert recipe["canonical_test"] == recipe["folds"][canonical]
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"-> {tmp_path / 'cross-validation.json'}"
    for line, (name, recipe) in zip(lines[-3:-1], report["recipes"].items()):
        assert line.startswith(name) and line.endswith(f"canonical test {recipe['canonical_test']:.1%}")


def test_cross_validation_creates_the_out_folder(cli_predictor, monkeypatch, tmp_path):
    from emorec.cli import main

    monkeypatch.setattr(train, "speech_cross_validation", lambda *args: {"recipes": {}})
    main(["evaluate", "speech", "--cross-validate", "--data", str(tmp_path), "--out", str(tmp_path / "new")])
    assert (tmp_path / "new" / "cross-validation.json").exists()


# ---- several corpora: the masked loss, weights, validation per corpus ---------------------

NEMO_PRESENT = [label != "disgust" for label in LABELS]


def masked_loss(y_true, logits, smoothing=0.1):
    """The loss's mean over the batch."""
    loss = train.MaskedCrossEntropy(label_smoothing=smoothing)
    return float(loss(np.array(y_true, np.float32), np.array(logits, np.float32)))


def test_masked_loss_with_every_class_is_keras_cross_entropy():
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(0, 3, (5, 7)), np.eye(7)[[0, 1, 3, 6, 2]]
    keras_loss = train.keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    assert masked_loss(targets, logits) == pytest.approx(float(keras_loss(targets, logits)), rel=1e-5)


def test_masked_class_gets_no_probability_mass_and_no_gradient():
    """A nEMO clip (no disgust): the loss is the cross-entropy over the six other classes, with the
    smoothing spread over them, whatever the disgust logit is."""
    logits = np.array([[2.0, 0.0, -1.0, 0.5, 1.0, -0.5, 0.3]])
    y_true = np.where(NEMO_PRESENT, 0.0, -1.0)[None]
    y_true[0, LABELS.index("happy")] = 1
    present = logits[0, NEMO_PRESENT]
    log_p = present - np.log(np.exp(present).sum())
    target = 0.9 * (np.array(LABELS)[NEMO_PRESENT] == "happy") + 0.1 / 6
    expected = -(target * log_p).sum()
    for disgust in (-5.0, 0.0, 50.0):  # the masked logit moves the loss not at all: zero gradient
        logits[0, LABELS.index("disgust")] = disgust
        assert masked_loss(y_true, logits) == pytest.approx(expected, rel=1e-5)
    unmasked = np.eye(7, dtype=np.float32)[[LABELS.index("happy")]]
    assert masked_loss(unmasked, logits) > expected + 10  # unmasked, disgust at 50 costs a lot


def test_masked_loss_gradient_leaves_the_masked_logit_alone():
    tf = pytest.importorskip("tensorflow")
    if train.keras.backend.backend() != "tensorflow":
        pytest.skip("gradient checked with the TensorFlow backend")
    logits = tf.Variable(np.random.default_rng(1).normal(0, 2, (3, 7)).astype(np.float32))
    y_true = np.tile(np.where(NEMO_PRESENT, 0.0, -1.0).astype(np.float32), (3, 1))
    y_true[[0, 1, 2], [0, 3, 6]] = 1
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(train.MaskedCrossEntropy(label_smoothing=0.1).call(y_true, logits))
    gradient = tape.gradient(loss, logits).numpy()
    np.testing.assert_array_equal(gradient[:, LABELS.index("disgust")], 0)
    assert np.abs(gradient[:, NEMO_PRESENT]).min() > 0
    np.testing.assert_allclose(gradient.sum(axis=1), 0, atol=1e-6)  # softmax over the present classes


def test_masked_targets_and_corpus_class_weights():
    clips = [datasets.Clip("a.wav", 0, 1, "ravdess"), datasets.Clip("b.wav", 1, 1, "ravdess"),
             datasets.Clip("c.opus", 0, "EB0", "nemo"), datasets.Clip("d.opus", 0, "EB0", "nemo"),
             datasets.Clip("e.opus", 5, "IC0", "nemo")]
    targets = train.masked_targets(clips, LABELS)
    np.testing.assert_array_equal(targets[0], np.eye(7)[0])
    np.testing.assert_array_equal(targets[2], np.where(NEMO_PRESENT, np.eye(7)[0], -1))
    negative = train.masked_targets(clips, LABELS, "negative")  # nEMO's missing disgust: a wrong answer
    np.testing.assert_array_equal(negative, np.eye(7)[[0, 1, 0, 0, 5]])
    with pytest.raises(ValueError, match="missing_classes"):
        train.masked_targets(clips, LABELS, "dropped")
    weights = train.corpus_class_weights(clips)
    assert weights.mean() == pytest.approx(1)
    # each (corpus, class) cell weighs the same in total: nEMO's two angry clips share one cell's weight
    assert weights[2] == weights[3] == pytest.approx(weights[0] / 2) and weights[4] == pytest.approx(weights[0])


def nemo_tones(folder, speakers=("EB0", "MK0", "IC0", "TP0"), emotions=("anger", "happiness", "neutral")):
    """nEMO's layout with tone 'clips' (Opus, 24 kHz): one per speaker and emotion."""
    rows = ["file_id\temotion\tspeaker_id"]
    for number, (speaker, emotion) in enumerate((s, e) for s in speakers for e in emotions):
        name = f"{speaker}_{emotion}_{number}.opus"
        write(folder / "samples", name, wav_bytes(tone(0.4, 24000, 300 + 40 * number), 24000, "OPUS", "OGG"))
        rows.append(f"{name}\t{emotion}\t  {speaker}")
    write(folder, "data.tsv", "\n".join(rows) + "\n")
    return folder


def test_train_speech_on_two_corpora_per_speaker(tmp_path):
    """RAVDESS and nEMO tones: validation accuracy per corpus and their mean, the corpora on the card."""
    ravdess, nemo = tone_corpus(tmp_path / "ravdess", (1, 17)), nemo_tones(tmp_path / "nemo")
    train.train_speech([ravdess, nemo], tmp_path / "run", YAMNetFeatures(YAMNET, (15,)), tmp_path / "cache",
                       epochs=1, batch_size=4, variants=0, normalisation="speaker", missing_classes="negative")
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["corpora"] == ["nemo", "ravdess"] and card["trained_labels"] == list(LABELS)
    assert card["feature_normalisation"] == "speaker" and card["missing_classes"] == "negative"
    logs = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())["history"][0]
    both = (logs["val_nemo_accuracy"], logs["val_ravdess_accuracy"])
    assert logs["val_mean_accuracy"] == pytest.approx(np.mean(both))
    assert logs["val_ravdess_accuracy"] * 3 == round(logs["val_ravdess_accuracy"] * 3)  # actor 17: three clips
    assert logs["val_nemo_accuracy"] * 6 == round(logs["val_nemo_accuracy"] * 6)  # IC0 and TP0: six clips


@pytest.mark.parametrize("missing_classes, lowest", [("masked", -1), ("negative", 0)])
def test_train_speech_scores_validation_as_it_trains(tmp_path, monkeypatch, missing_classes, lowest):
    """The validation loss treats nEMO's missing disgust as the training loss does."""
    class Fitted(Exception):
        pass

    def fit(build, training, validation, *args, **kwargs):
        raise Fitted(training[1].min(), validation[1].min())

    monkeypatch.setattr(train, "_fit", fit)
    with pytest.raises(Fitted) as fitted:
        train.train_speech(nemo_tones(tmp_path / "nemo"), tmp_path / "run", YAMNetFeatures(YAMNET, (15,)),
                           tmp_path / "cache", epochs=1, variants=0, missing_classes=missing_classes)
    assert fitted.value.args == (lowest, lowest)


def test_train_speech_on_nemo_alone_leaves_disgust_untrained(tmp_path):
    train.train_speech(nemo_tones(tmp_path / "nemo"), tmp_path / "run", YAMNetFeatures(YAMNET, (15,)),
                       tmp_path / "cache", epochs=1, batch_size=4, variants=0)
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["corpora"] == ["nemo"] and "disgust" not in card["trained_labels"] and len(card["labels"]) == 7


def test_train_speech_exports_int8_weights_and_re_exports_a_finished_run(tmp_path):
    from emorec.models import Classifier

    corpus = nemo_tones(tmp_path / "nemo")

    def run(quantize):
        train.train_speech(corpus, tmp_path / "run", YAMNetFeatures(YAMNET, (15,)), tmp_path / "cache", epochs=1,
                           batch_size=4, variants=0, quantize=quantize, resume=quantize)

    features = np.ones((1, 2048), np.float32)  # YAMNet layer 15's mean and std
    run(False)
    float_size = (tmp_path / "run" / "model.tflite").stat().st_size
    float_logits = Classifier(tmp_path / "run")(features)
    run(True)  # the finished run, its best epoch exported again with int8 weights
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["weights"] == "int8 (dynamic range)"
    assert (tmp_path / "run" / "model.tflite").stat().st_size < float_size / 2
    np.testing.assert_allclose(Classifier(tmp_path / "run")(features), float_logits, rtol=0.05)  # weights to 1 in 127


def test_evaluate_speech_on_nemo_test_speakers(speech_run, capsys, tmp_path):
    """The tiny RAVDESS head on nEMO's test speakers: metrics-nemo-test beside the head, shared classes."""
    from emorec.cli import main

    folder, network = speech_run
    nemo = nemo_tones(tmp_path / "nemo", speakers=("KD0", "WR0", "EB0"), emotions=("anger", "sadness"))
    assert main(["evaluate", "speech", "--data", str(nemo), "--model", str(folder / "run"), "--cache",
                 str(folder / "cache")]) == 0
    report = json.loads((folder / "run" / "metrics-nemo-test.json").read_text())
    assert (report["corpora"], report["speakers"], report["samples"]) == (["nemo"], ["KD0", "WR0"], 4)
    assert [each["samples"] for each in report["per_speaker"].values()] == [2, 2]
    assert np.mean([each["accuracy"] for each in report["per_speaker"].values()]) == pytest.approx(report["accuracy"])
    assert report["shared_classes"]["labels"] == ["angry", "sad"] and report["shared_classes"]["samples"] == 4
    assert (folder / "run" / "metrics-nemo-test.png").stat().st_size > 0
    assert "speech on nemo-test: accuracy" in capsys.readouterr().out
