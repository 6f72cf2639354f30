"""The one entry point: a Predictor that loads the models once and serves every interface."""

import json
from pathlib import Path

import cv2
import numpy as np

from . import fusion, timeline
from .audio import SAMPLE_RATE, frame_times, load_audio, segment_windows, speech_frames
from .errors import InputError
from .image import FaceDetector, align_crop, face_input, load_image
from .models import MODELS_DIR, Classifier, YAMNet, clip_features, softmax
from .video import DEFAULT_FPS

SPEECH_THRESHOLD = 0.08  # RAVDESS speech scores >= 0.11 on YAMNet's "Speech" class; silence, noise, tones <= 0.03
SILENCE_RMS = 1e-4


class Predictor:
    """Face, speech and fused emotion predictions; thread-safe and meant to be reused."""

    def __init__(self, models_dir=MODELS_DIR, threads=1):
        self.models_dir = models_dir = Path(models_dir)
        self.detector = FaceDetector(models_dir / "face_detection" / "yunet.onnx")
        self.face_model = Classifier(models_dir / "face", threads)
        self.speech_model = Classifier(models_dir / "speech", threads)
        self.yamnet = YAMNet(models_dir / "yamnet" / "yamnet.tflite",
                             self.speech_model.card["yamnet_layers"], threads)
        if self.face_model.labels != self.speech_model.labels:
            raise ValueError(f"face labels {self.face_model.labels} differ from speech labels "
                             f"{self.speech_model.labels}")
        self.labels = self.face_model.labels
        settings_path = models_dir / "fusion" / "fusion.json"
        settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
        self.fusion_rule = settings.get("rule", "sum")
        if self.fusion_rule not in fusion.RULES:
            raise ValueError(f"{settings_path}: unknown fusion rule {self.fusion_rule!r}; "
                             f"choose from {', '.join(fusion.RULES)}")
        self.fusion_adaptive = settings.get("adaptive", 0.0)
        self.default_weights = fusion.parse_weights(settings.get("weights", {"face": 0.5, "speech": 0.5}))

    def _result(self, probabilities):
        index = int(np.argmax(probabilities))
        return {"label": self.labels[index], "confidence": round(float(probabilities[index]), 6),
                "probabilities": {label: round(float(p), 6) for label, p in zip(self.labels, probabilities)}}

    def classify_faces(self, faces):
        """Probabilities [n, classes] for grey face crops of any size (FER2013 framing)."""
        batch = np.stack([face_input(face) for face in faces])
        if self.face_model.card.get("flip_tta"):  # each face and its mirror image, in one call
            both = self.face_model(np.concatenate([batch, batch[:, :, ::-1]]))
            logits = (both[:len(batch)] + both[len(batch):]) / 2
        else:
            logits = self.face_model(batch)
        return softmax(logits, self.face_model.temperature)

    def predict_face(self, image, crops=False):
        """Every face in a photo (largest first), or the whole image as one crop with `crops`."""
        picture = load_image(image)
        grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
        if crops:
            boxes, faces = [[0, 0, grey.shape[1], grey.shape[0]]], [grey]
        else:
            detections = sorted(self.detector.detect(picture), key=lambda d: -d[2] * d[3])
            boxes = [[int(round(v)) for v in d[:4]] for d in detections]
            faces = [align_crop(grey, d) for d in detections]
        if not faces:
            return {"status": "no_face", "faces": [], "label": None, "confidence": None, "probabilities": None}
        probabilities = self.classify_faces(faces)
        found = [{"box": box, **self._result(p)} for box, p in zip(boxes, probabilities)]
        return {"status": "ok", "faces": found, **self._result(probabilities[0])}

    def predict_speech(self, audio):
        """Clip-level and per-segment (2.4 s windows every 0.96 s) probabilities of a recording: a path,
        bytes, or a float32 mono waveform at 16 kHz."""
        waveform = np.asarray(audio, np.float32) if isinstance(audio, np.ndarray) else load_audio(audio)
        features, speech_scores = self.yamnet(speech_frames(waveform))
        windows = segment_windows(len(features))
        logits = self.speech_model(np.stack([clip_features(features)]
                                            + [clip_features(features[start:end]) for start, end in windows]))
        probabilities = softmax(logits, self.speech_model.temperature)
        times = frame_times(len(features))
        segments = [{"start": round(times[start][0], 3), "end": round(times[end - 1][1], 3), **self._result(p)}
                    for (start, end), p in zip(windows, probabilities[1:])]
        silent = float(np.sqrt(np.mean(waveform ** 2))) < SILENCE_RMS
        status = "no_speech" if silent or speech_scores.max() < SPEECH_THRESHOLD else "ok"
        return {"status": status, "duration": round(len(waveform) / SAMPLE_RATE, 3),
                "speech_score": round(float(speech_scores.max()), 4), **self._result(probabilities[0]),
                "segments": segments}

    def predict_video(self, source, fps=DEFAULT_FPS, weights=None):
        """Face, speech and fused timelines of a video (path or bytes) and its clip-level results."""
        return timeline.analyse(self, source, fps, weights)

    def fuse(self, face, speech, weights=None, adaptive=None):
        """Fusion of the modality results that found something; says which it rests on.

        `adaptive` overrides the shipped certainty exponent (see `fusion.fuse`).
        """
        weights = fusion.parse_weights(weights) if weights is not None else self.default_weights
        usable = {name: np.array(list(result["probabilities"].values()))
                  for name, result in (("face", face), ("speech", speech))
                  if result is not None and result["status"] == "ok"}
        if not usable:
            return {"status": "no_signal", "label": None, "confidence": None, "probabilities": None,
                    "weights": weights, "effective_weights": {}, "sources": []}
        probabilities, used = fusion.fuse(usable, weights, self.fusion_rule,
                                          self.fusion_adaptive if adaptive is None else adaptive)
        status = "fused" if len(used) == 2 else f"{next(iter(used))}_only"
        return {"status": status, **self._result(probabilities), "weights": weights,
                "effective_weights": {name: round(value, 4) for name, value in used.items()},
                "sources": sorted(used)}

    def predict(self, image=None, audio=None, weights=None, crops=False):
        """The full result: face, speech (None when not given) and their fusion."""
        if image is None and audio is None:
            raise InputError("give an image, an audio clip, or both")
        face = self.predict_face(image, crops) if image is not None else None
        speech = self.predict_speech(audio) if audio is not None else None
        return {"face": face, "speech": speech, "fusion": self.fuse(face, speech, weights)}
