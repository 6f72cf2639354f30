"""The web app: an upload page and a JSON API, served by one Predictor per process.

Run it with `emorec serve` or gunicorn (see the Procfile). Errors are JSON {"error": message}:
400 for a request that sends nothing or has a bad field (weights, crops, fps), 422 for an uploaded
file that cannot be used (corrupt, empty, wrong type, over the pixel or length cap), 413 for
an upload over EMOREC_MAX_UPLOAD_MB, 404/405 for a wrong URL or method, 500 for a server fault.
"""

import json
import os

from flask import Blueprint, Flask, current_app, jsonify, render_template, request
from werkzeug.exceptions import BadRequest, HTTPException

from . import fusion
from .errors import InputError
from .predictor import Predictor
from .video import DEFAULT_FPS

MAX_FPS = 30.0  # a video's frames analysed a second, at most

FLAGS = {"1": True, "true": True, "yes": True, "on": True, "": False, "0": False, "false": False,
         "no": False, "off": False}
MEDIA_POLICY = "'self' blob: data:"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=(self), geolocation=()",
    "Content-Security-Policy": (f"default-src 'self'; img-src {MEDIA_POLICY}; media-src {MEDIA_POLICY}; "
                                "object-src 'none'; base-uri 'none'; form-action 'self'; "
                                "frame-ancestors 'none'"),
}

api = Blueprint("api", __name__, url_prefix="/api")


def _predictor():
    return current_app.extensions["emorec"]


def _upload(field):
    """The bytes of an uploaded file, or None when the field is absent or an empty file input."""
    upload = request.files.get(field)
    if upload is None:
        return None
    data = upload.read()
    return data if data or upload.filename else None


def _form_weights():
    text = request.form.get("weights", "").strip()
    try:
        return fusion.parse_weights(text) if text else None
    except InputError as error:
        raise BadRequest(str(error)) from None


def _form_flag(field):
    value = request.form.get(field, "").strip().lower()
    if value not in FLAGS:
        raise BadRequest(f"{field} must be 1/true or 0/false, not {value!r}")
    return FLAGS[value]


def _form_fps():
    text = request.form.get("fps", "").strip()
    try:
        fps = float(text) if text else DEFAULT_FPS
    except ValueError:
        fps = None
    if fps is None or not 0 < fps <= MAX_FPS:
        raise BadRequest(f"fps must be a number of frames a second above 0 and at most {MAX_FPS:g}, not {text!r}")
    return fps


@api.post("/predict")
def predict():
    """Face, speech and fused predictions for an uploaded photo, recording, or both; or the timelines
    of a video."""
    image, audio, video = _upload("image"), _upload("audio"), _upload("video")
    if video is not None:
        if image is not None or audio is not None:
            raise BadRequest("send a video alone: its frames and sound are the face and the speech")
        return jsonify(_predictor().predict_video(video, _form_fps(), _form_weights()))
    if image is None and audio is None:
        raise BadRequest("send a photo (file field image), a recording (file field audio), both, "
                         "or a video (file field video)")
    return jsonify(_predictor().predict(image, audio, _form_weights(), _form_flag("crops")))


@api.get("/health")
def health():
    return jsonify(status="ok", labels=list(_predictor().labels))


@api.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(_predictor().labels, current_app.config["MAX_CONTENT_LENGTH"]))


def _error(message, status):
    return jsonify(error=message), status


def _too_large(error):
    return _error(f"upload is over the {current_app.config['MAX_CONTENT_LENGTH'] / 2 ** 20:g} MB limit", 413)


def _http_error(error):
    """Any other HTTP error (404, 405, 500...) as JSON, keeping its headers such as Allow."""
    response = error.get_response()
    response.data = json.dumps({"error": error.description})
    response.content_type = "application/json"
    return response


def _secure(response):
    response.headers.update(SECURITY_HEADERS)
    return response


def create_app(models_dir=None, predictor=None):
    """The Flask app; pass `predictor` to share one, else one is loaded from `models_dir`."""
    app = Flask(__name__)
    max_upload_mb = float(os.environ.get("EMOREC_MAX_UPLOAD_MB", 32))
    app.config.update(DEBUG=False, MAX_CONTENT_LENGTH=round(max_upload_mb * 2 ** 20))
    app.json.sort_keys = False  # keep the Predictor's key order
    if predictor is None:
        predictor = Predictor(models_dir) if models_dir else Predictor()
    app.extensions["emorec"] = predictor
    app.register_blueprint(api)
    app.register_error_handler(InputError, lambda error: _error(str(error), 422))
    app.register_error_handler(413, _too_large)
    app.register_error_handler(HTTPException, _http_error)
    app.after_request(_secure)

    @app.get("/")
    def index():
        return render_template("index.html", labels=list(predictor.labels),
                               face_weight=round(100 * predictor.default_weights["face"]))

    return app


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema):
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties):
    """A closed object schema with every property required."""
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def _errors(*statuses):
    return {str(status): {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}
            for status, description in statuses}


def openapi_document(labels, max_upload_bytes):
    """The OpenAPI 3.1 description of the API, for the given label set and upload cap."""
    label = {"type": "string", "enum": list(labels)}
    share = {"type": "number", "minimum": 0, "maximum": 1}
    prediction = {"label": label, "confidence": share, "probabilities": _ref("Probabilities")}
    open_prediction = {"label": _nullable(label), "confidence": _nullable(share),
                       "probabilities": _nullable(_ref("Probabilities"))}
    box = {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4,
           "description": "x, y, width, height in image pixels"}
    seconds = {"type": "number", "description": "seconds"}
    fusion_status = {"enum": ["fused", "face_only", "speech_only", "no_signal"]}
    sources = {"type": "array", "items": {"enum": ["face", "speech"]}}
    schemas = {
        "Probabilities": _object({name: share for name in labels}),
        "Face": _object({"box": box,
                         "low_resolution": {"type": "boolean",
                                            "description": "the face is too small to read reliably"},
                         **prediction}),
        "FaceResult": _object({"status": {"enum": ["ok", "no_face"]},
                               "faces": {"type": "array", "items": _ref("Face"),
                                         "description": "largest first; the top-level prediction is the first"},
                               **open_prediction}),
        "Segment": _object({"start": {"type": "number"}, "end": {"type": "number"}, **prediction}),
        "SpeechResult": _object({"status": {"enum": ["ok", "no_speech"]},
                                 "duration": {"type": "number", "description": "seconds"},
                                 "speech_score": share, **prediction,
                                 "segments": {"type": "array", "items": _ref("Segment"),
                                              "description": "2.4 s windows every 0.96 s"}}),
        "FusionResult": _object({"status": fusion_status,
                                 **open_prediction,
                                 "weights": _object({"face": share, "speech": share}),
                                 "effective_weights": {
                                     "type": "object", "additionalProperties": share,
                                     "description": "the weights applied: the sources' weights scaled by "
                                                    "their certainty and renormalised"},
                                 "sources": sources}),
        "PredictResult": _object({"face": _nullable(_ref("FaceResult")), "speech": _nullable(_ref("SpeechResult")),
                                  "fusion": _ref("FusionResult")}),
        "VideoInfo": _object({"duration": seconds,
                              "width": {"type": "integer", "description": "upright, as players show it"},
                              "height": {"type": "integer", "description": "upright, as players show it"},
                              "fps": {"type": "number", "description": "frames analysed a second"},
                              "steps": {"type": "integer", "description": "frames analysed"}}),
        "VideoFace": _object({"status": {"enum": ["ok", "no_face"]},
                              "people": {"type": "integer", "description": "face tracks over the video"},
                              "presence": {**share, "description": "share of the steps the main person is in view"},
                              **open_prediction}),
        "NoAudioTrack": _object({"status": {"const": "no_speech"}, "duration": seconds, "speech_score": share,
                                 **open_prediction, "segments": {"type": "array", "maxItems": 0}}),
        "StepFace": _object({"status": {"enum": ["ok", "no_face"]}, "box": _nullable(box), **open_prediction}),
        "StepSpeech": _object({"status": {"enum": ["ok", "no_speech"]}, "start": _nullable(seconds),
                               "end": _nullable(seconds), **open_prediction}),
        "StepFusion": _object({"status": fusion_status, **open_prediction, "sources": sources}),
        "Step": _object({"time": seconds, "face": _ref("StepFace"), "speech": _ref("StepSpeech"),
                         "fusion": _ref("StepFusion")}),
        "VideoResult": _object({"video": _ref("VideoInfo"), "face": _ref("VideoFace"),
                                "speech": {"anyOf": [_ref("SpeechResult"), _ref("NoAudioTrack")]},
                                "fusion": _ref("FusionResult"),
                                "timeline": {"type": "array", "items": _ref("Step"),
                                             "description": "one step per analysed frame: the main person's "
                                                            "smoothed face, the speech segment covering it, "
                                                            "their fusion"}}),
        "Health": _object({"status": {"const": "ok"}, "labels": {"type": "array", "items": label}}),
        "Error": _object({"error": {"type": "string"}}),
    }
    form = {"type": "object", "properties": {
        "image": {"type": "string", "contentMediaType": "application/octet-stream",
                  "description": "a photo: JPEG, PNG, BMP or WebP (the content decides, not the name)"},
        "audio": {"type": "string", "contentMediaType": "application/octet-stream",
                  "description": "a recording: WAV, FLAC, MP3, M4A/AAC, Ogg or WebM (Opus, Vorbis), or the "
                                 "audio track of an MP4, MOV, MKV or AVI video; any rate and channel count"},
        "weights": {"type": "string", "example": "face=0.6,speech=0.4",
                    "description": "fusion weights, normalised to sum to 1; default: the models' own"},
        "crops": {"type": "string", "enum": ["1", "true", "0", "false"],
                  "description": "the image is one already-cropped face"},
        "video": {"type": "string", "contentMediaType": "application/octet-stream",
                  "description": "a video (MP4, MOV, MKV, AVI, WebM), sent alone: face, speech and fused "
                                 "timelines; no audio track or silence is speech no_speech"},
        "fps": {"type": "string", "example": "5",
                "description": f"with video: frames analysed a second, above 0 and at most {MAX_FPS:g} "
                               f"(default {DEFAULT_FPS:g})"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "emorec", "version": "1",
                 "description": "Emotion recognition from a face photo, a speech recording, or both."},
        "paths": {
            "/api/predict": {"post": {
                "summary": "Predict the emotion of a photo, a recording, or both, and their fusion; "
                           "or of a video, step by step",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}},
                "responses": {
                    "200": {"description": "face and speech (null when not sent) and their fusion; for a video, "
                                           "the clip's results and the timeline",
                            "content": {"application/json": {"schema": {
                                "anyOf": [_ref("PredictResult"), _ref("VideoResult")]}}}},
                    **_errors((400, "nothing sent, a video sent with a photo or recording, or bad weights, "
                                    "crops or fps"),
                              (413, f"upload over {max_upload_bytes} bytes"),
                              (422, "a file that cannot be used: corrupt, empty, unsupported, or over a "
                                    "size, length or frame limit"),
                              (500, "server fault"))}}},
            "/api/health": {"get": {
                "summary": "Liveness and the label set",
                "responses": {"200": {"description": "the service is up",
                                      "content": {"application/json": {"schema": _ref("Health")}}}}}},
            "/api/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1 document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {"schemas": schemas},
    }
