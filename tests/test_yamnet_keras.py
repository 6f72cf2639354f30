"""The Keras 3 YAMNet (emorec.yamnet_keras) against the served LiteRT YAMNet: shapes and parity.

Thresholds come from measurements on all 439 frames of RAVDESS Actor_01 plus 26 noise frames
(XNNPACK, x86-64): embedding cosine worst 0.99914, 1st percentile 0.99953, median 0.99992;
log-mel max |diff| 0.016, mean 2e-7. The residue is int8 rounding that flips where the two
runtimes' float sums differ in the last bit, so the bounds below leave a margin for other CPUs.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from emorec.audio import FRAME_SAMPLES, load_audio, speech_frames  # noqa: E402
from emorec.models import EMBEDDING_TENSOR, MODELS_DIR, YAMNet  # noqa: E402
from emorec.yamnet_keras import build_yamnet, trainable_from  # noqa: E402

from conftest import RAVDESS, shared  # noqa: E402

TFLITE = MODELS_DIR / "yamnet" / "yamnet.tflite"
CLIPS = ["03-01-01-01-01-01-01.wav", "03-01-05-02-01-01-01.wav", "03-01-08-02-02-02-01.wav"]


@pytest.fixture(scope="module")
def model():
    return build_yamnet(TFLITE)


@pytest.fixture(scope="module")
def lite():
    lite = YAMNet(TFLITE)  # layers (15,): the embedding alone
    (embedding,) = lite.layers
    names = {d["index"]: d["name"] for d in lite.interpreter.get_tensor_details()}
    assert names[embedding].startswith(EMBEDDING_TENSOR)
    return lite


def run_lite(lite, frames):
    """LiteRT embeddings [n, 1024], scores [n, 521] and log-mel patches [n, 96, 64], frame by frame."""
    interpreter, embeddings, scores, patches = lite.interpreter, [], [], []
    for frame in frames:
        interpreter.set_tensor(lite.input["index"], frame[None].astype(np.float32))
        interpreter.invoke()
        embeddings.append(interpreter.get_tensor(lite.layers[0])[0].copy())
        scores.append(interpreter.get_tensor(lite.outputs[0]["index"])[0].copy())
        patches.append(interpreter.get_tensor(lite.outputs[1]["index"]).copy())
    return np.array(embeddings), np.array(scores), np.array(patches)


def run_keras(model, frames):
    embeddings, scores = model.predict_on_batch(frames)
    patches = keras.Model(model.input, model.get_layer("log_mel").output).predict_on_batch(frames)
    return np.asarray(embeddings), np.asarray(scores), np.asarray(patches)


def cosine(a, b):
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def assert_parity(model, lite, frames):
    embeddings, scores, patches = run_keras(model, frames)
    want_embeddings, want_scores, want_patches = run_lite(lite, frames)
    similarity = cosine(embeddings, want_embeddings)
    assert similarity.min() > 0.998 and np.median(similarity) > 0.9995, similarity
    assert np.abs(embeddings - want_embeddings).max() < 0.5
    assert np.abs(scores - want_scores).max() < 0.08
    assert np.abs(patches - want_patches).max() < 0.05
    assert np.abs(patches - want_patches).mean() < 1e-5


def test_shapes(model):
    frames = np.zeros((3, FRAME_SAMPLES), np.float32)
    embeddings, scores, patches = run_keras(model, frames)
    assert embeddings.shape == (3, 1024) and scores.shape == (3, 521) and patches.shape == (3, 96, 64)
    assert np.all((scores >= 0) & (scores <= 1)) and np.all(embeddings >= 0)  # sigmoid; ReLU before the pool
    assert model.input.shape[1:] == (FRAME_SAMPLES,)


def test_parity_on_speech(model, lite):
    frames = np.concatenate([speech_frames(load_audio(shared(RAVDESS / "Actor_01" / name))) for name in CLIPS])
    assert_parity(model, lite, frames)


def test_parity_on_noise(model, lite):
    rng = np.random.default_rng(0)
    frames = np.concatenate([rng.uniform(-1, 1, (2, FRAME_SAMPLES)),
                             0.05 * rng.standard_normal((2, FRAME_SAMPLES)),
                             1e-4 * rng.standard_normal((1, FRAME_SAMPLES))]).astype(np.float32)
    assert_parity(model, lite, frames)


def test_trainable_from():
    model = build_yamnet(TFLITE)
    assert not model.get_layer("log_mel").trainable_weights
    trainable_from(model, 13)
    trainable = {layer.name for layer in model.layers if layer.trainable_weights}
    assert trainable == {"layer13_depthwise", "layer13_pointwise", "layer14_depthwise", "layer14_pointwise", "logits"}
    trainable_from(model, 1)
    assert len(model.trainable_weights) == 2 + 13 * 4 + 2  # layer1, 13 separable layers, logits
