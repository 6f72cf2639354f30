"""The LiteRT model wrappers: YAMNet's per-frame layer features and the speech head's clip features."""

import os
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from emorec.audio import load_audio, speech_frames
from emorec.image import FaceDetector, aligned_face_input
from emorec.models import MODELS_DIR, ONNXModel, YAMNet, clip_features, runtime_notes_held_back

from conftest import ROOT, SAMPLES, SHARED, shared

sys.path.insert(0, str(ROOT / "scripts"))
from face_expression_export import max_form  # noqa: E402

TFLITE = MODELS_DIR / "yamnet" / "yamnet.tflite"
# Channels of each MobileNet layer's pointwise convolution; 15 is the 1024-d embedding.
LAYER_WIDTHS = {2: 64, 3: 128, 4: 128, 5: 256, 6: 256, 7: 512, 8: 512, 9: 512, 10: 512, 11: 512, 12: 512,
                13: 1024, 14: 1024, 15: 1024}


@pytest.fixture(scope="module")
def frames(clip):
    return speech_frames(load_audio(clip))  # 9 frames


def yamnet_features(frames, layers):
    return YAMNet(TFLITE, layers)(frames)


@pytest.mark.parametrize("layers", [(15,), (6,), (2,), (13, 14), (6, 7, 8, 9, 10)])
def test_yamnet_feature_dimensions(frames, layers):
    features, scores = yamnet_features(frames, layers)
    assert features.shape == (len(frames), sum(LAYER_WIDTHS[layer] for layer in layers))
    assert scores.shape == (len(frames),) and np.all((scores >= 0) & (scores <= 1))
    assert np.all(features >= 0)  # averages of ReLU outputs


def test_embedding_is_the_average_of_the_last_layer(frames):
    embedding, scores = yamnet_features(frames, (15,))
    last, same_scores = yamnet_features(frames, (14,))
    np.testing.assert_allclose(embedding, last, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(scores, same_scores)  # the chosen layers leave the scores alone


def test_layer_features_are_concatenated_in_order(frames):
    both, _ = yamnet_features(frames, (6, 7))
    np.testing.assert_array_equal(both, np.hstack([yamnet_features(frames, (6,))[0],
                                                   yamnet_features(frames, (7,))[0]]))


def test_shipped_front_end_fits_the_speech_head(predictor, clip):
    features = predictor.speech_front_end(load_audio(clip))
    assert features.dtype == np.float32 and features.shape == (predictor.speech_model.input["shape"][-1],)


def test_clip_features_are_mean_then_std():
    frames = np.array([[1.0, 2.0, 0.0], [3.0, 2.0, 0.0], [5.0, 2.0, 9.0]])
    features = clip_features(frames)
    assert features.dtype == np.float32 and features.shape == (6,)
    np.testing.assert_allclose(features, [3, 2, 3, np.sqrt(8 / 3), 0, np.sqrt(18)], rtol=1e-6)
    np.testing.assert_array_equal(clip_features(frames[:1]), [1, 2, 0, 0, 0, 0])  # one frame: no spread
    np.testing.assert_array_equal(clip_features(frames[::-1]), features)  # order in time does not matter


def test_runtime_notes_are_held_back_and_other_output_passes(capfd):
    with runtime_notes_held_back():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: something real\n")
    assert capfd.readouterr().err == "ERROR: something real\n"


def test_loading_a_model_prints_nothing():
    done = subprocess.run([sys.executable, "-c", f"from emorec.models import YAMNet; YAMNet({str(TFLITE)!r})"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_served_face_expression_model_is_the_original_with_prelu_as_max():
    """scripts/face_expression_export.py's rewrite: no PRelu left, the original's logits on real aligned faces."""
    original = shared(SHARED / "models" / "face_expression_mobilefacenet"
                      / "facial_expression_recognition_mobilefacenet_2022july_int8.onnx")
    served = MODELS_DIR / "face_expression" / "mobilefacenet_int8.onnx"
    rewritten = max_form(onnx.load(original))
    assert {node.op_type for node in onnx.load(served).graph.node} == {node.op_type for node in rewritten.graph.node}
    assert "PRelu" not in {node.op_type for node in rewritten.graph.node}
    photo = cv2.imread(str(shared(SAMPLES / "astronaut.png")))
    faces = np.stack([aligned_face_input(photo, row)
                      for row in FaceDetector(MODELS_DIR / "face_detection" / "yunet.onnx").detect(photo)])
    noise = np.random.default_rng(0).uniform(-1, 1, (3, *faces.shape[1:])).astype(np.float32)
    inputs = np.concatenate([faces, noise])
    np.testing.assert_array_equal(ONNXModel(served)(inputs), ONNXModel(original)(inputs))


def test_prelu_with_a_slope_over_one_is_refused():
    graph = helper.make_graph(
        [helper.make_node("PRelu", ["x", "slope"], ["y"], name="prelu")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(np.array([0.5, 1.5], np.float32), "slope")])
    with pytest.raises(SystemExit, match="slope over 1"):
        max_form(helper.make_model(graph))
