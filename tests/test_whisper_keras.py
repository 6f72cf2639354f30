"""The Keras Whisper base encoder (emorec.whisper_keras): the model.bin reader, the architecture against a
numpy forward pass, and (when the model.bin and CTranslate2 are here) parity with CTranslate2 and LiteRT.

The reference checks need the joined model.bin (models/whisper/README.md) at $EMOREC_WHISPER_MODEL_BIN or
.cache/whisper-base/model.bin, with config.json beside it for CTranslate2. Measured here on the clip below:
final layer vs CTranslate2 4.8.5 max |diff| 8.1e-4 (largest value 23.8); the bounds leave a margin.
"""

import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from emorec.audio import load_audio  # noqa: E402
from emorec.models import MODELS_DIR  # noqa: E402
from emorec.speech_encoder import LAYERS, MAX_SAMPLES, WIDTH, WhisperEncoder, log_mel  # noqa: E402
from emorec.whisper_keras import load_ctranslate2_weights, read_ctranslate2, whisper_encoder  # noqa: E402

from conftest import CLIP, ROOT, shared  # noqa: E402

MODEL_BIN = Path(os.environ.get("EMOREC_WHISPER_MODEL_BIN", ROOT / ".cache" / "whisper-base" / "model.bin"))


def ct2_bytes(variables, aliases=()):
    """A CTranslate2 (version 6) model.bin of {name: array} written field by field."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}

    def string(text):
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    out = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, value in variables.items():
        out += string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        out += struct.pack("<BI", codes[value.dtype], value.nbytes) + value.tobytes()
    out += struct.pack("<I", len(aliases))
    return out + b"".join(string(alias) + string(target) for alias, target in aliases)


def test_reader_reads_names_shapes_types_and_aliases(tmp_path):
    weight = np.arange(6, dtype=np.float16).reshape(2, 3) / 4
    path = tmp_path / "model.bin"
    path.write_bytes(ct2_bytes({"a/weight": weight, "a/heads": np.array(8, np.int16),
                                "b": np.array([1.5, -2], np.float32)}, [("c/weight", "a/weight")]))
    arrays = read_ctranslate2(path)
    assert set(arrays) == {"a/weight", "a/heads", "b", "c/weight"}
    assert arrays["a/weight"].dtype == np.float16 and np.array_equal(arrays["c/weight"], weight)
    assert int(arrays["a/heads"]) == 8 and arrays["b"].tolist() == [1.5, -2.0]
    path.write_bytes(struct.pack("<I", 5) + path.read_bytes()[4:])
    with pytest.raises(ValueError, match="version 5"):
        read_ctranslate2(path)


@pytest.fixture(scope="module")
def model():
    return whisper_encoder()


def test_every_layer_comes_out_at_the_real_length(model):
    table = np.random.default_rng(1).normal(size=(1500, WIDTH)).astype(np.float32)
    model.get_layer("positions").set_weights([table])
    for frames in (7, 100):
        out = np.asarray(model(np.zeros((1, frames, 80), np.float32)))
        assert out.shape == (1, LAYERS, math.ceil(frames / 2), WIDTH)
        # zero weights: the stem gives GELU(0) = 0, so layer 0 is the first rows of the position table
        np.testing.assert_allclose(out[0, 0], table[:math.ceil(frames / 2)], atol=1e-6)
    model.get_layer("positions").set_weights([np.zeros_like(table)])


def random_encoder_arrays(seed=0):
    """CTranslate2-named encoder arrays of the base shapes, small random values."""
    rng = np.random.default_rng(seed)
    shapes = {"conv1/weight": (WIDTH, 80, 3), "conv2/weight": (WIDTH, WIDTH, 3), "conv1/bias": (WIDTH,),
              "conv2/bias": (WIDTH,), "position_encodings/encodings": (1500, WIDTH),
              "layer_norm/gamma": (WIDTH,), "layer_norm/beta": (WIDTH,)}
    linears = {"self_attention/linear_0": (3 * WIDTH, WIDTH), "self_attention/linear_1": (WIDTH, WIDTH),
               "ffn/linear_0": (2048, WIDTH), "ffn/linear_1": (WIDTH, 2048)}
    for block in range(6):
        for part, (out, into) in linears.items():
            shapes[f"layer_{block}/{part}/weight"], shapes[f"layer_{block}/{part}/bias"] = (out, into), (out,)
        for part in ("self_attention", "ffn"):
            for name in ("gamma", "beta"):
                shapes[f"layer_{block}/{part}/layer_norm/{name}"] = (WIDTH,)
    scale = {True: 0.5, False: 0.05}  # gammas 1 + N(0, 0.5), the rest N(0, 0.05)
    arrays = {"encoder/" + name: (rng.normal(size=shape) * scale[name.endswith("gamma")] + name.endswith("gamma"))
              .astype(np.float16) for name, shape in shapes.items()}
    arrays["encoder/num_heads"] = np.array(8, np.int16)
    return arrays


def numpy_encoder(mel, arrays):
    """openai/whisper's AudioEncoder.forward in numpy: the 8 layer outputs [8, frames / 2, 512]."""
    get = {name[len("encoder/"):]: np.asarray(value, np.float64) for name, value in arrays.items()}
    erf = np.vectorize(math.erf)

    def gelu(x):
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))

    def conv(x, name, stride):
        padded = np.pad(x, ((1, 1), (0, 0)))
        count = (len(x) - 1) // stride + 1
        return sum(padded[k:k + stride * count:stride] @ get[name + "/weight"][:, :, k].T for k in range(3)) \
            + get[name + "/bias"]

    def norm(x, name):
        centred = x - x.mean(axis=-1, keepdims=True)
        return centred / np.sqrt((centred ** 2).mean(axis=-1, keepdims=True) + 1e-5) * get[name + "/gamma"] \
            + get[name + "/beta"]

    def linear(x, name):
        return x @ get[name + "/weight"].T + get[name + "/bias"]

    x = gelu(conv(gelu(conv(mel.astype(np.float64), "conv1", 1)), "conv2", 2))
    x = x + get["position_encodings/encodings"][:len(x)]
    outputs = [x]
    for block in range(6):
        prefix = f"layer_{block}/"
        qkv = linear(norm(x, prefix + "self_attention/layer_norm"), prefix + "self_attention/linear_0")
        q, k, v = np.split(qkv, 3, axis=-1)
        q, k, v = (t.reshape(len(x), 8, 64).transpose(1, 0, 2) for t in (q, k, v))
        scores = q @ k.transpose(0, 2, 1) / 8
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        mixed = (weights / weights.sum(axis=-1, keepdims=True)) @ v
        x = x + linear(mixed.transpose(1, 0, 2).reshape(len(x), WIDTH), prefix + "self_attention/linear_1")
        hidden = gelu(linear(norm(x, prefix + "ffn/layer_norm"), prefix + "ffn/linear_0"))
        x = x + linear(hidden, prefix + "ffn/linear_1")
        outputs.append(x)
    return np.stack(outputs + [norm(x, "layer_norm")])


def test_weights_land_where_whisper_uses_them(model):
    arrays = random_encoder_arrays()
    load_ctranslate2_weights(model, arrays)
    mel = np.random.default_rng(2).normal(size=(13, 80)).astype(np.float32)
    expected = numpy_encoder(mel, arrays)
    np.testing.assert_allclose(np.asarray(model(mel[None]))[0], expected, rtol=1e-3, atol=1e-3)
    arrays["encoder/num_heads"] = np.array(6, np.int16)
    with pytest.raises(ValueError, match="not a Whisper base"):
        load_ctranslate2_weights(model, arrays)


@pytest.fixture(scope="module")
def whisper_base():
    if not MODEL_BIN.exists():
        pytest.skip(f"{MODEL_BIN} is not here (see models/whisper/README.md)")
    return load_ctranslate2_weights(whisper_encoder(), read_ctranslate2(MODEL_BIN))


def test_matches_ctranslate2_on_real_speech(whisper_base):
    ctranslate2 = pytest.importorskip("ctranslate2")
    wave = load_audio(shared(CLIP))
    mel = log_mel(np.pad(wave, (0, MAX_SAMPLES - len(wave))))  # CTranslate2 takes 3000 frames (30 s)
    reference = ctranslate2.models.Whisper(str(MODEL_BIN.parent), device="cpu", compute_type="float32")
    expected = np.array(reference.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.T[None])),
                                         to_cpu=True))[0]
    final = np.asarray(whisper_base(mel[None]))[0, 7]
    assert np.abs(final - expected).max() < 5e-3 * np.abs(expected).max()


def test_served_litert_file_matches_keras_on_real_speech(whisper_base):
    wave = load_audio(shared(CLIP))
    served = WhisperEncoder(MODELS_DIR / "whisper" / "encoder.tflite").layer_frames(wave)
    expected = np.asarray(whisper_base(log_mel(wave)[None]))[0]
    assert np.abs(served - expected).max() < 1e-3 * np.abs(expected).max()
