"""YAMNet as a backend-agnostic Keras 3 model, with its weights read from the vendored TFLite file.

The model maps waveform frames [n, 15600] (16 kHz, [-1, 1]) to (embeddings [n, 1024],
scores [n, 521]) as `emorec.models.YAMNet` (LiteRT) does, to within int8 rounding, but
differentiably, so it can be fine-tuned. Everything is keras.ops, so it runs under the TensorFlow and JAX backends.

Layout, following tensorflow/models research/audioset/yamnet (params.py, features.py, yamnet.py):

* front end (layer "log_mel", no trainable weights): 400-sample periodic-Hann frames every 160
  samples, 257-bin magnitude spectrum, 64 mel bands (125-7500 Hz), log(mel + 0.001) -> [n, 96, 64].
  The spectrum is a framed matmul with the TFLite file's own (int8-quantized) DFT and mel
  matrices rather than keras.ops.stft: it reproduces the served model's numerics, while an exact
  FFT differs from them by the quantization of those matrices.
* MobileNet-v1 backbone: layer1 conv 3x3/2 (32 ch), then 13 depthwise-separable layers, ReLU.
  The TFLite graph has batch norm (eps 1e-4) folded into the convolutions, so every conv here is
  conv + bias with no BatchNormalization layer: the loaded weights are the folded ones.
* head: global average pool -> 1024-d embedding (layer "embedding") -> dense 521 -> sigmoid.

Dynamic-range quantization: in yamnet.tflite the DFT, mel, pointwise-conv and dense weights are
int8; LiteRT's default CPU path (XNNPACK) then quantizes those ops' float *inputs* on the fly to
asymmetric int8 (one scale per frame row for the matmuls, per pixel for the 1x1 convs). With
`emulate_int8=True` (default) the model replays that input rounding (a straight-through
estimator, so gradients pass as if it were the identity) and matches LiteRT closely; with
`emulate_int8=False` it is the plain float network on the dequantized weights.
"""

import numpy as np
import keras
from keras import ops

SAMPLES = 15600  # one 0.975 s frame at 16 kHz
WINDOW, HOP, FFT = 400, 160, 512
PATCH_FRAMES, MEL_BANDS, CLASSES, EMBEDDING = 96, 64, 521, 1024
# (stride, channels) of the depthwise-separable layers 2..14; layer1 is a full 3x3/2 conv, 32 channels.
SEPARABLE = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
             (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024)]
PREFIX = "yamnet_frames/"


def dynamic_int8(x):
    """Round x as XNNPACK's dynamic-range ops do: asymmetric int8, one scale per vector along the
    last axis (per frame row, per pixel); the gradient is the identity (straight-through)."""
    low = ops.minimum(ops.min(x, axis=-1, keepdims=True), 0.0)
    high = ops.maximum(ops.max(x, axis=-1, keepdims=True), 0.0)
    inverse = ops.where(high > low, 255.0 / (high - low), 1.0)  # XNNPACK multiplies by 1 / scale
    zero = ops.clip(ops.round(-128.0 - low * inverse), -128.0, 127.0)
    rounded = (ops.clip(ops.round(x * inverse) + zero, -128.0, 127.0) - zero) / inverse
    return x + ops.stop_gradient(rounded - x)


@keras.saving.register_keras_serializable(package="emorec")
class DynamicInt8(keras.layers.Layer):
    """Emulates LiteRT's on-the-fly int8 quantization of an int8-weight layer's input."""

    def call(self, x):
        return dynamic_int8(x)


@keras.saving.register_keras_serializable(package="emorec")
class LogMelPatch(keras.layers.Layer):
    """Waveform frames [n, 15600] -> YAMNet's log-mel patch [n, 96, 64] (fixed, non-trainable)."""

    def __init__(self, emulate_int8=True, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.emulate_int8 = emulate_int8

    def build(self, input_shape):
        fixed = dict(initializer="zeros", trainable=False)
        self.window = self.add_weight(shape=(WINDOW,), name="window", **fixed)
        self.dft = self.add_weight(shape=(WINDOW, 2 * (FFT // 2 + 1)), name="dft", **fixed)  # [re | im]
        self.mel = self.add_weight(shape=(FFT // 2 + 1, MEL_BANDS), name="mel", **fixed)
        self.mel_bias = self.add_weight(shape=(MEL_BANDS,), name="mel_bias", **fixed)  # the 0.001 log offset

    def call(self, waveform):
        # Frame i is samples [160 i, 160 i + 400): five consecutive 80-sample rows, stepping 2 rows.
        rows = ops.reshape(waveform, (-1, SAMPLES // 80, 80))
        span = 2 * (PATCH_FRAMES - 1) + 1
        frames = ops.concatenate([rows[:, j:j + span:2] for j in range(WINDOW // 80)], axis=-1)
        frames = frames * self.window
        if self.emulate_int8:
            frames = dynamic_int8(frames)
        spectrum = ops.matmul(frames, self.dft)
        real, imag = spectrum[..., :FFT // 2 + 1], spectrum[..., FFT // 2 + 1:]
        magnitude = ops.sqrt(real * real + imag * imag)
        if self.emulate_int8:
            magnitude = dynamic_int8(magnitude)
        return ops.log(ops.matmul(magnitude, self.mel) + self.mel_bias)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], PATCH_FRAMES, MEL_BANDS)

    def get_config(self):
        return {**super().get_config(), "emulate_int8": self.emulate_int8}


def yamnet(emulate_int8=True):
    """The YAMNet architecture with zero weights: frames [n, 15600] -> (embeddings, scores)."""
    relu = dict(padding="same", activation="relu")
    waveform = keras.Input((SAMPLES,), name="waveform")
    patch = LogMelPatch(emulate_int8, name="log_mel")(waveform)
    x = keras.layers.Reshape((PATCH_FRAMES, MEL_BANDS, 1), name="patch")(patch)
    x = keras.layers.Conv2D(32, 3, strides=2, name="layer1_conv", **relu)(x)
    for number, (stride, channels) in enumerate(SEPARABLE, start=2):
        x = keras.layers.DepthwiseConv2D(3, strides=stride, name=f"layer{number}_depthwise", **relu)(x)
        if emulate_int8:
            x = DynamicInt8(name=f"layer{number}_int8")(x)
        x = keras.layers.Conv2D(channels, 1, name=f"layer{number}_pointwise", **relu)(x)
    embedding = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    head = DynamicInt8(name="logits_int8")(embedding) if emulate_int8 else embedding
    scores = keras.layers.Dense(CLASSES, activation="sigmoid", name="logits")(head)
    return keras.Model(waveform, [embedding, scores], name="yamnet")


# ---- weights from the TFLite file ---------------------------------------------------------

def _read_tflite(path):
    """{tensor name: float32 array} of yamnet.tflite's constant tensors, int8 ones dequantized."""
    import warnings
    from ai_edge_litert.interpreter import Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    tensors = {}
    for detail in interpreter.get_tensor_details():
        name = detail["name"]
        if not name.startswith(PREFIX) or name.endswith("_dequantize"):
            continue  # inputs/outputs, and DEQUANTIZE outputs (runtime buffers, not weights)
        try:  # activations come along too (uninitialised); _find picks weights by name and shape
            value = interpreter.get_tensor(detail["index"])
        except ValueError:
            continue
        # int8 weights (pointwise, dense, DFT/mel, depthwise 4-14 that the graph DEQUANTIZEs at
        # run time): value = (q - zero point) * scale, the scale per-tensor or per output channel.
        if value.dtype == np.int8:
            quant = detail["quantization_parameters"]
            scales, zeros = quant["scales"], quant["zero_points"]
            axis = quant["quantized_dimension"]
            per_channel = lambda v: v.reshape([v.size if i == axis else 1 for i in range(value.ndim)])
            value = (value.astype(np.float32) - per_channel(zeros)) * per_channel(scales)
        tensors[name] = value.astype(np.float32) if value.dtype != np.int32 else value
    return tensors


def _find(tensors, prefix, shape):
    """The one tensor whose name starts with `prefix` (fused names: first segment) and has `shape`."""
    hits = [value for name, value in tensors.items()
            if name.split(";")[0].startswith(prefix) and value.shape == tuple(shape)]
    if len(hits) != 1:
        raise ValueError(f"yamnet.tflite: expected one tensor {prefix!r} of shape {shape}, found {len(hits)}")
    return hits[0]


def load_tflite_weights(model, tflite_path):
    """Copy yamnet.tflite's (BN-folded, dequantized) weights into a `yamnet()` model."""
    tensors = _read_tflite(tflite_path)
    bins = FFT // 2 + 1
    pad = (FFT - WINDOW) // 2  # the graph zero-pads each windowed frame by 56 on both sides
    real = _find(tensors, PREFIX + "tf_op_layer_MatMul/MatMul", (bins, FFT))
    imag = _find(tensors, PREFIX + "tf_op_layer_MatMul_1/MatMul_1", (bins, FFT))
    model.get_layer("log_mel").set_weights([
        _find(tensors, PREFIX + "tf_op_layer_Mul/Mul/y", (1, WINDOW))[0],
        np.concatenate([real, imag])[:, pad:pad + WINDOW].T,
        _find(tensors, PREFIX + "tf_op_layer_MatMul_2/MatMul_2", (MEL_BANDS, bins)).T,
        _find(tensors, PREFIX + "tf_op_layer_MatMul_2/MatMul_2", (MEL_BANDS,))])
    # TFLite layouts: conv [out, h, w, in] -> Keras [h, w, in, out]; depthwise [1, h, w, c] -> [h, w, c, 1].
    kernel = _find(tensors, PREFIX + "layer1/conv/Conv2D", (32, 3, 3, 1))
    model.get_layer("layer1_conv").set_weights([
        kernel.transpose(1, 2, 3, 0), _find(tensors, PREFIX + "layer1/conv/bn/FusedBatchNormV3", (32,))])
    channels = 32
    for number, (_, out) in enumerate(SEPARABLE, start=2):
        layer = f"{PREFIX}layer{number}"
        depthwise = _find(tensors, f"{layer}/depthwise_conv/bn/FusedBatchNormV3", (1, 3, 3, channels))
        model.get_layer(f"layer{number}_depthwise").set_weights([
            depthwise[0][..., None], _find(tensors, f"{layer}/depthwise_conv/bn/FusedBatchNormV3", (channels,))])
        pointwise = _find(tensors, f"{layer}/pointwise_conv/Conv2D", (out, 1, 1, channels))
        model.get_layer(f"layer{number}_pointwise").set_weights([
            pointwise.transpose(1, 2, 3, 0), _find(tensors, f"{layer}/pointwise_conv/bn/FusedBatchNormV3", (out,))])
        channels = out
    model.get_layer("logits").set_weights([
        _find(tensors, PREFIX + "dense/MatMul", (CLASSES, EMBEDDING)).T,
        _find(tensors, PREFIX + "dense/BiasAdd", (CLASSES,))])
    return model


def build_yamnet(tflite_path, emulate_int8=True):
    """YAMNet as a Keras model with yamnet.tflite's weights: frames [n, 15600] -> (embeddings, scores)."""
    return load_tflite_weights(yamnet(emulate_int8), tflite_path)


def trainable_from(model, layer_index):
    """Freeze YAMNet layers 1 .. layer_index - 1; layers layer_index .. 14 and the head stay trainable.

    layer_index=1 trains everything, 15 only the dense head. The front end is never trainable.
    """
    for layer in model.layers:
        if layer.name.startswith("layer") and "_" in layer.name:
            layer.trainable = int(layer.name[5:layer.name.index("_")]) >= layer_index
    return model
