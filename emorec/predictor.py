"""The one entry point: a Predictor that loads the models once and serves every interface."""

import json
import os
from pathlib import Path

import cv2
import numpy as np

from . import fusion, timeline
from .audio import SAMPLE_RATE, FrameCutter, audio_blocks
from .errors import InputError
from .image import FaceDetector, align_crop, aligned_face_input, face_boxes, face_input, load_image
from .models import MODELS_DIR, Classifier, YAMNet, log_linear, softmax
from .speech_features import front_end
from .video import DEFAULT_FPS

SPEECH_THRESHOLD = 0.08  # RAVDESS speech scores >= 0.11 on YAMNet's "Speech" class; silence, noise, tones <= 0.03
SILENCE_RMS = 1e-4


class Predictor:
    """Face, speech and fused emotion predictions; thread-safe and meant to be reused."""

    def __init__(self, models_dir=MODELS_DIR, threads=1):
        self.models_dir = models_dir = Path(models_dir)
        self.detector = FaceDetector(models_dir / "face_detection" / "yunet.onnx", threads=threads)
        self.face_model = Classifier(models_dir / "face", threads)
        self.speech_model = Classifier(models_dir / "speech", threads)
        card = self.speech_model.card
        self.speech_front_end = front_end(card.get("front_end", "yamnet"), models_dir, card, threads)
        self.yamnet = YAMNet(models_dir / "yamnet" / "yamnet.tflite", threads=threads)  # its "Speech" score
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

    def _crop_logits(self, model, faces):
        """A model's logits for grey face crops of any size, mirror images averaged in if the card says so."""
        batch = np.stack([face_input(face) for face in faces])
        if self.face_model.card.get("flip_tta"):  # each face and its mirror image, in one call
            both = model(np.concatenate([batch, batch[:, :, ::-1]]))
            return (both[:len(batch)] + both[len(batch):]) / 2
        return model(batch)

    def classify_faces(self, faces):
        """Probabilities [n, classes] for grey face crops of any size (FER2013 framing)."""
        return softmax(self._crop_logits(self.face_model, faces), self.face_model.temperature)

    def classify_photo_faces(self, picture, detections):
        """Probabilities [n, classes] for the faces YuNet found in a BGR photo: the card's photo
        ensemble (crops alone through `classify_faces` when the card has none)."""
        grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
        crops = [align_crop(grey, d) for d in detections]
        if not self.face_model.photo_members:
            return self.classify_faces(crops)
        logits = [self._crop_logits(model, crops) if kind == "crop"
                  else model(np.stack([aligned_face_input(picture, d) for d in detections]))
                  for model, kind, _ in self.face_model.photo_members]
        mixed = log_linear(logits, [weight for _, _, weight in self.face_model.photo_members])
        return softmax(mixed, self.face_model.photo_temperature)

    def find_faces(self, picture):
        """Boxes (x, y, w, h), largest first, and probabilities [n, classes] of the faces in a BGR image."""
        detections = sorted(self.detector.detect(picture), key=lambda d: -d[2] * d[3])
        if not len(detections):
            return [], np.zeros((0, len(self.labels)))
        return face_boxes(detections), self.classify_photo_faces(picture, detections)

    def predict_face(self, image, crops=False):
        """Every face in a photo (largest first), or the whole image as one crop with `crops`.

        A face whose detector box is under the card's `low_resolution_px` on its longer side is
        flagged `low_resolution`: too few pixels to read an expression reliably.
        """
        picture = load_image(image)
        if crops:
            boxes = [[0, 0, picture.shape[1], picture.shape[0]]]
            probabilities = self.classify_faces([cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)])
        else:
            boxes, probabilities = self.find_faces(picture)
            if not boxes:
                return {"status": "no_face", "faces": [], "label": None, "confidence": None,
                        "probabilities": None}
        found = [{"box": box, "low_resolution": bool(max(box[2:]) < self.face_model.low_resolution_px),
                  **self._result(p)} for box, p in zip(boxes, probabilities)]
        return {"status": "ok", "faces": found, **self._result(probabilities[0])}

    def predict_speech(self, audio):
        """Clip-level and per-segment (2.4 s windows every 0.96 s) probabilities of a recording: a path,
        bytes, a float32 mono waveform at 16 kHz, or an iterable of such blocks in order.

        The sound is taken block by block as it is decoded, each window classified as soon as its frames
        are in: memory holds a block, a chunk of the front end's frames and per-window results.
        """
        if isinstance(audio, np.ndarray):
            blocks = [np.asarray(audio, np.float32)]
        elif isinstance(audio, (str, os.PathLike, bytes, bytearray)):
            blocks = audio_blocks(audio)
        else:
            blocks = audio
        cutter, stream, windows = FrameCutter(), self.speech_front_end.stream(), []
        speech_score, samples, squares = 0.0, 0, 0.0
        for block in blocks:
            block = np.asarray(block, np.float32).reshape(-1)
            speech_score = max(speech_score, self._speech_score(cutter.add(block)))
            samples, squares = samples + len(block), squares + float(np.square(block, dtype=np.float64).sum())
            if ready := stream.add(block):
                windows.extend(softmax(self.speech_model(np.stack(ready)), self.speech_model.temperature))
        speech_score = max(speech_score, self._speech_score(cutter.finish()))
        clip, last, spans = stream.finish()  # the clip and the last windows in one batch
        probabilities = softmax(self.speech_model(np.stack([clip, *last])), self.speech_model.temperature)
        windows.extend(probabilities[1:])
        segments = [{"start": round(start, 3), "end": round(end, 3), **self._result(p)}
                    for (start, end), p in zip(spans, windows)]
        silent = np.sqrt(squares / max(samples, 1)) < SILENCE_RMS
        status = "no_speech" if silent or speech_score < SPEECH_THRESHOLD else "ok"
        return {"status": status, "duration": round(samples / SAMPLE_RATE, 3),
                "speech_score": round(speech_score, 4), **self._result(probabilities[0]), "segments": segments}

    def _speech_score(self, frames):
        """The highest YAMNet "Speech" score of some frames (0 for none)."""
        return float(self.yamnet(frames)[1].max()) if len(frames) else 0.0

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
