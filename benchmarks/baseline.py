"""The baseline: the original system's way of serving, TensorFlow eager Keras models inside Flask.

Face: `emorec.train.face_network(7, 32)` with RANDOM weights (timing only), called eagerly on the
same YuNet detections and preprocessing as emorec (one pass, no flip test-time augmentation).
Speech: YAMNet rebuilt in Keras (`emorec.yamnet_keras`, float weights from yamnet.tflite) run
eagerly on all frames of the clip, then a dense head (random weights) on the mean embedding.
Serve with `gunicorn --pythonpath benchmarks 'baseline:create_app()'`.
"""

import os

import cv2
import numpy as np
import tensorflow as tf
import keras
from flask import Flask, jsonify, request

from emorec.audio import load_audio, speech_frames
from emorec.errors import InputError
from emorec.image import FaceDetector, align_crop, face_input, load_image
from emorec.labels import LABELS
from emorec.models import MODELS_DIR
from emorec.train import face_network
from emorec.yamnet_keras import EMBEDDING, build_yamnet


def _probabilities(logits):
    return {"label": LABELS[int(np.argmax(logits[0]))],
            "probabilities": dict(zip(LABELS, tf.nn.softmax(logits)[0].numpy().round(6).tolist()))}


class BaselinePredictor:
    """Eager TensorFlow face and speech predictions with emorec's detector and preprocessing."""

    def __init__(self, threads=1):
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        keras.utils.set_random_seed(0)
        self.detector = FaceDetector(MODELS_DIR / "face_detection" / "yunet.onnx")
        self.face_model = face_network(len(LABELS), 32)
        self.yamnet = build_yamnet(MODELS_DIR / "yamnet" / "yamnet.tflite", emulate_int8=False)
        self.speech_head = keras.Sequential([keras.Input((EMBEDDING,)), keras.layers.Dense(len(LABELS))])

    def predict_face(self, image, crops=False):
        picture = load_image(image)
        grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
        faces = [grey] if crops else [align_crop(grey, d) for d in
                                      sorted(self.detector.detect(picture), key=lambda d: -d[2] * d[3])]
        if not faces:
            return {"status": "no_face"}
        logits = self.face_model(np.stack([face_input(face) for face in faces]), training=False)
        return {"status": "ok", **_probabilities(logits)}

    def predict_speech(self, audio):
        embeddings, scores = self.yamnet(speech_frames(load_audio(audio)), training=False)
        logits = self.speech_head(tf.reduce_mean(embeddings, axis=0, keepdims=True), training=False)
        return {"status": "ok", "speech_score": float(tf.reduce_max(scores[:, 0])), **_probabilities(logits)}

    def predict(self, image=None, audio=None, weights=None, crops=False):
        if image is None and audio is None:
            raise InputError("give an image, an audio clip, or both")
        return {"face": self.predict_face(image, crops) if image is not None else None,
                "speech": self.predict_speech(audio) if audio is not None else None}


def create_app():
    """A minimal Flask app: POST /api/predict (image, audio, crops) and GET /api/health."""
    app = Flask(__name__)
    predictor = BaselinePredictor(int(os.environ.get("BASELINE_THREADS", 1)))

    @app.post("/api/predict")
    def predict():
        files = {field: request.files[field].read() for field in ("image", "audio") if field in request.files}
        try:
            return jsonify(predictor.predict(**files, crops=request.form.get("crops") == "1"))
        except InputError as error:
            return jsonify(error=str(error)), 422

    @app.get("/api/health")
    def health():
        return jsonify(status="ok")

    return app
