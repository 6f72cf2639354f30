"""The bundled model files and the runtimes that serve them: LiteRT, ONNX Runtime (no TensorFlow)."""

import contextlib
import json
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

MODELS_DIR = Path(os.environ.get("EMOREC_MODELS", Path(__file__).resolve().parent.parent / "models"))
SPEECH_CLASS = 0  # YAMNet's AudioSet class "Speech"
EMBEDDING_TENSOR = "yamnet_frames/global_average_pooling2d/Mean"
LAYER_TENSOR = "yamnet_frames/layer{}/pointwise_conv/relu/Relu"
PHOTO_INPUTS = ("crop", "aligned")  # a photo member's input: FER2013-style grey crop, 112x112 aligned colour face


def softmax(logits, temperature=1.0, axis=-1):
    """Numerically stable softmax of logits divided by a temperature."""
    scaled = np.asarray(logits, np.float64) / temperature
    scaled = np.exp(scaled - scaled.max(axis=axis, keepdims=True))
    return scaled / scaled.sum(axis=axis, keepdims=True)


def log_softmax(logits):
    """Log-probabilities of logits, along the last axis."""
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_linear(member_logits, weights):
    """A weighted log-linear mix: the weighted sum of each member's log-probabilities."""
    return sum(weight * log_softmax(logits) for logits, weight in zip(member_logits, weights))


@contextlib.contextmanager
def runtime_notes_held_back():
    """Drop the "INFO: ..." notes the C++ runtime prints straight to stderr (file descriptor 2),
    passing anything else it prints on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith("INFO: ")]
            sys.stderr.write("".join(kept))


class TFLiteModel:
    """A .tflite model with one input of any batch (or sequence) size; calls are serialised by a lock."""

    def __init__(self, path, threads=1, preserve=False):
        from ai_edge_litert.interpreter import Interpreter  # here, so training imports this module without it

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads,
                                           experimental_preserve_all_tensors=preserve)
        with runtime_notes_held_back():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()
        self.lock = threading.Lock()
        self._shape = tuple(self.input["shape"])

    def _run(self, batch):
        """Invoke on one batch; the caller holds the lock. Returns the first output."""
        if batch.shape != self._shape:
            self.interpreter.resize_tensor_input(self.input["index"], batch.shape)
            self.interpreter.allocate_tensors()
            self._shape = batch.shape
        self.interpreter.set_tensor(self.input["index"], batch.astype(np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.outputs[0]["index"]).copy()

    def __call__(self, batch):
        with self.lock:
            return self._run(np.asarray(batch))


def onnx_session(path, threads=1):
    """An ONNX Runtime session of a .onnx file on the CPU, `threads` threads, all graph optimisations (on the
    face model 0.91x the basic ones' time with the same logits: benchmarks/onnx_runtimes.py)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class ONNXModel:
    """A batch-1 .onnx model (logits out) run by ONNX Runtime; called on a batch one item at a time."""

    def __init__(self, path, threads=1):
        self.session = onnx_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch):
        return np.concatenate([self.session.run(None, {self.input_name: item[None].astype(np.float32)})[0]
                               for item in np.asarray(batch)])


class Classifier:
    """A trained emotion model: .tflite files (logits out) beside model.json (labels, temperature).

    The card's "ensemble" lists the .tflite files whose logits are averaged (default: model.tflite).
    Its optional "photo" section is the ensemble for faces found in photos: "members", each a model
    file (relative to the card; .tflite or .onnx), the input it takes ("crop": FER2013-style grey
    crop, "aligned": the 112x112 landmark-aligned colour face) and the weight of its log-probabilities,
    plus the temperature of their weighted sum (see `log_linear`) and the `low_resolution_px` threshold.
    """

    def __init__(self, folder, threads=1):
        folder = Path(folder)
        self.card = json.loads((folder / "model.json").read_text())
        loaded = {}

        def load(name):
            path = (folder / name).resolve()
            if path not in loaded:
                runtime = ONNXModel if path.suffix == ".onnx" else TFLiteModel
                loaded[path] = runtime(path, threads)
            return loaded[path]

        self.members = [load(name) for name in self.card.get("ensemble", ["model.tflite"])]
        self.input = self.members[0].input
        self.labels = tuple(self.card["labels"])
        self.temperature = float(self.card.get("temperature", 1.0))
        photo = self.card.get("photo", {})
        self.photo_members = [(load(member["file"]), member["input"], float(member["weight"]))
                              for member in photo.get("members", [])]
        unknown = {kind for _, kind, _ in self.photo_members} - set(PHOTO_INPUTS)
        if unknown:
            raise ValueError(f"{folder / 'model.json'}: unknown photo member input {sorted(unknown)}; "
                             f"choose from {', '.join(PHOTO_INPUTS)}")
        self.photo_temperature = float(photo.get("temperature", self.temperature))
        self.low_resolution_px = float(photo.get("low_resolution_px", 0))

    def __call__(self, batch):
        """Logits of a batch, averaged over the ensemble's members."""
        return sum(member(batch) for member in self.members) / len(self.members)


class YAMNet(TFLiteModel):
    """YAMNet run one 0.975 s frame at a time: per-frame features and the 'Speech' score.

    A frame's features are the globally averaged activations of the chosen MobileNet layers
    (2-14, each layer's pointwise-conv output; 15 is the 1024-d embedding), concatenated.
    """

    def __init__(self, path, layers=(15,), threads=1):
        super().__init__(path, threads, preserve=True)
        indices = {d["name"].split(";")[0]: d["index"] for d in self.interpreter.get_tensor_details()}
        if not set(layers) <= set(range(2, 16)):
            raise ValueError(f"YAMNet feature layers are 2-15, not {sorted(set(layers) - set(range(2, 16)))}")
        self.layers = [indices[EMBEDDING_TENSOR if layer == 15 else LAYER_TENSOR.format(layer)]
                       for layer in layers]

    def __call__(self, frames):
        """Features [n, d] and speech scores [n] of frames [n, 15600]."""
        features, speech = [], []
        with self.lock:
            for frame in np.asarray(frames, np.float32):
                scores = self._run(frame[None])
                speech.append(scores[0, SPEECH_CLASS])
                activations = [self.interpreter.get_tensor(index)[0] for index in self.layers]
                features.append(np.concatenate([a.reshape(-1, a.shape[-1]).mean(axis=0) for a in activations]))
        return np.stack(features), np.array(speech)


def clip_features(frame_features):
    """The speech head's input: mean and standard deviation of frame features over time."""
    return np.concatenate([frame_features.mean(axis=0), frame_features.std(axis=0)]).astype(np.float32)
