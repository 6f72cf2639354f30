"""The web app through Flask's test client, on the bundled models and the shared samples."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from emorec import LABELS, Predictor, cli
from emorec.web import SECURITY_HEADERS, create_app

SHARED = Path(__file__).resolve().parents[2] / "shared"
ASTRONAUT = SHARED / "samples" / "astronaut.png"
CHELSEA = SHARED / "samples" / "chelsea.png"
CLIP = SHARED / "data" / "ravdess_speech_16k" / "Actor_21" / "03-01-05-02-01-01-21.wav"
STATIC = Path(__file__).resolve().parents[1] / "emorec" / "static"
TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool}


@pytest.fixture(scope="module")
def predictor():
    return Predictor()


@pytest.fixture(scope="module")
def client(predictor):
    return create_app(predictor=predictor).test_client()


def upload(path_or_bytes, name="upload"):
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    return io.BytesIO(data), name


def silence_wav(seconds=1.5, rate=44100):
    """A stereo 16-bit WAV of near silence, made in memory."""
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).normal(0, 1e-6, (int(seconds * rate), 2))
    soundfile.write(buffer, noise, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def post(client, **fields):
    return client.post("/api/predict", data=fields, content_type="multipart/form-data")


def problems(value, schema, schemas, where="$"):
    """Where `value` breaks `schema`, for the JSON Schema subset the API document uses."""
    if "$ref" in schema:
        return problems(value, schemas[schema["$ref"].rsplit("/", 1)[-1]], schemas, where)
    if "anyOf" in schema:
        options = [problems(value, option, schemas, where) for option in schema["anyOf"]]
        return [] if [] in options else min(options, key=len)
    if schema.get("type") == "null":
        return [] if value is None else [f"{where}: {value!r} is not null"]
    kind = schema.get("type")
    if kind and (not isinstance(value, TYPES[kind]) or isinstance(value, bool) != (kind == "boolean")):
        return [f"{where}: {value!r} is not {kind}"]
    found = []
    if "enum" in schema and value not in schema["enum"] or "const" in schema and value != schema["const"]:
        found.append(f"{where}: {value!r} not allowed")
    if kind == "number" and not schema.get("minimum", -np.inf) <= value <= schema.get("maximum", np.inf):
        found.append(f"{where}: {value} out of range")
    if kind == "object":
        properties = schema.get("properties", {})
        found += [f"{where}: missing {key}" for key in schema.get("required", []) if key not in value]
        if schema.get("additionalProperties") is False:
            found += [f"{where}: unexpected {key}" for key in value if key not in properties]
        for key, part in properties.items():
            if key in value:
                found += problems(value[key], part, schemas, f"{where}.{key}")
    if kind == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", np.inf):
            found.append(f"{where}: {len(value)} items")
        for index, item in enumerate(value):
            found += problems(item, schema.get("items", {}), schemas, f"{where}[{index}]")
    return found


def test_predict_matches_the_cli_json(client, capsys):
    response = post(client, image=upload(ASTRONAUT), audio=upload(CLIP))
    assert response.status_code == 200
    result = response.get_json()
    assert cli.main(["predict", "--image", str(ASTRONAUT), "--audio", str(CLIP), "--json"]) == 0
    assert result == json.loads(capsys.readouterr().out)
    assert list(result) == ["face", "speech", "fusion"]
    assert result["face"]["status"] == "ok" and len(result["face"]["faces"]) == 1
    assert result["fusion"]["status"] == "fused" and result["fusion"]["sources"] == ["face", "speech"]
    for part in (result["face"], result["speech"], result["fusion"]):
        assert list(part["probabilities"]) == list(LABELS)
        assert sum(part["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert part["label"] == max(part["probabilities"], key=part["probabilities"].get)


def test_uploaded_names_are_ignored(client):
    """The content decides: a PNG named .wav is still read as the photo."""
    response = post(client, image=upload(ASTRONAUT, "../../etc/passwd.wav"))
    assert response.status_code == 200
    assert response.get_json()["face"]["status"] == "ok"


def test_photo_without_a_face_rests_on_speech(client):
    result = post(client, image=upload(CHELSEA), audio=upload(CLIP)).get_json()
    assert result["face"]["status"] == "no_face" and result["face"]["faces"] == []
    assert result["speech"]["status"] == "ok"
    assert result["fusion"]["status"] == "speech_only" and result["fusion"]["sources"] == ["speech"]
    assert result["fusion"]["label"] == result["speech"]["label"]


def test_silence_is_no_speech_and_fusion_rests_on_the_face(client):
    result = post(client, image=upload(ASTRONAUT), audio=upload(silence_wav(), "quiet.wav")).get_json()
    assert result["speech"]["status"] == "no_speech"
    assert result["speech"]["duration"] == pytest.approx(1.5, abs=0.01)
    assert result["fusion"]["status"] == "face_only"


def test_crops_takes_the_whole_photo_as_the_face(client):
    result = post(client, image=upload(CHELSEA), crops="1").get_json()
    assert result["face"]["status"] == "ok"
    assert [face["box"] for face in result["face"]["faces"]] == [[0, 0, 451, 300]]
    assert result["speech"] is None and result["fusion"]["status"] == "face_only"


def test_weights_change_the_fusion(client):
    both = {"image": ASTRONAUT, "audio": CLIP}
    balanced = post(client, **{k: upload(v) for k, v in both.items()}, weights="face=0.6,speech=0.4").get_json()
    assert balanced["fusion"]["weights"] == pytest.approx({"face": 0.6, "speech": 0.4})
    face_only = post(client, **{k: upload(v) for k, v in both.items()}, weights="face=2,speech=0").get_json()
    assert face_only["fusion"]["weights"] == {"face": 1.0, "speech": 0.0}
    assert face_only["fusion"]["status"] == "face_only" and face_only["fusion"]["sources"] == ["face"]
    assert face_only["fusion"]["probabilities"] == pytest.approx(face_only["face"]["probabilities"], abs=1e-5)
    assert balanced["fusion"]["probabilities"] != pytest.approx(face_only["fusion"]["probabilities"], abs=1e-3)


@pytest.mark.parametrize("fields", [
    {"image": (b"\x89PNG\r\n\x1a\n not really", "photo.png")},
    {"image": (CLIP.read_bytes()[:5000], "photo.jpg")},
    {"image": (ASTRONAUT.read_bytes()[:2000], "truncated.png")},
    {"audio": (b"RIFF\x00\x00\x00\x00WAVEjunk", "clip.wav")},
    {"audio": (ASTRONAUT.read_bytes(), "clip.wav")},
    {"audio": (b"", "empty.wav")},
], ids=["fake-png", "wav-as-image", "truncated-png", "fake-wav", "png-as-audio", "empty-wav"])
def test_unusable_files_are_422_json(client, fields):
    response = post(client, **{name: upload(*value) for name, value in fields.items()})
    assert response.status_code == 422
    assert response.is_json and "upload" in response.get_json()["error"]


@pytest.mark.parametrize("fields", [{}, {"weights": "face=1"}, {"image": (b"", "")}, {"audio": "not a file"}],
                         ids=["nothing", "only-weights", "empty-file-input", "text-field"])
def test_nothing_sent_is_400(client, fields):
    response = post(client, **{name: upload(*value) if isinstance(value, tuple) else value
                               for name, value in fields.items()})
    assert response.status_code == 400
    assert "send a photo" in response.get_json()["error"]


@pytest.mark.parametrize("weights", ["face=abc", "mouth=1", "face=0,speech=0", "face=-1,speech=2", "face=nan"])
def test_bad_weights_are_400(client, weights):
    response = post(client, audio=upload(CLIP), weights=weights)
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("bad weights")


def test_bad_crops_flag_is_400(client):
    response = post(client, image=upload(ASTRONAUT), crops="maybe")
    assert response.status_code == 400 and "crops" in response.get_json()["error"]


def test_oversize_upload_is_413_json(predictor, monkeypatch):
    monkeypatch.setenv("EMOREC_MAX_UPLOAD_MB", "0.25")
    response = post(create_app(predictor=predictor).test_client(), image=upload(ASTRONAUT))
    assert response.status_code == 413
    assert response.get_json() == {"error": "upload is over the 0.25 MB limit"}
    assert response.headers["X-Frame-Options"] == "DENY"


def test_unknown_url_and_method_are_json(client):
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and "error" in missing.get_json()
    wrong = client.get("/api/predict")
    assert wrong.status_code == 405 and "error" in wrong.get_json()
    assert "POST" in wrong.headers["Allow"]


def test_server_fault_is_json_500_without_details():
    class Broken:
        labels = LABELS

        def predict(self, *args):
            raise RuntimeError("secret internals")

    response = post(create_app(predictor=Broken()).test_client(), image=upload(ASTRONAUT))
    assert response.status_code == 500
    assert "secret" not in response.get_json()["error"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_health(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "labels": list(LABELS)}


def test_openapi_describes_the_real_responses(client):
    document = client.get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {"/api/predict", "/api/health", "/api/openapi.json"}
    schemas = document["components"]["schemas"]
    predict = document["paths"]["/api/predict"]["post"]["responses"]
    assert {"200", "400", "413", "422", "500"} <= set(predict)
    result_schema = predict["200"]["content"]["application/json"]["schema"]
    answers = [post(client, image=upload(ASTRONAUT), audio=upload(CLIP)),
               post(client, image=upload(CHELSEA)),
               post(client, audio=upload(silence_wav(), "quiet.wav"))]
    for answer in answers:
        assert problems(answer.get_json(), result_schema, schemas) == []
    assert problems(client.get("/api/health").get_json(), {"$ref": "#/components/schemas/Health"}, schemas) == []
    error = post(client, image=upload(b"junk")).get_json()
    assert problems(error, predict["422"]["content"]["application/json"]["schema"], schemas) == []
    broken = answers[0].get_json()
    broken["fusion"]["label"] = "bored"
    del broken["face"]["faces"][0]["box"]
    assert len(problems(broken, result_schema, schemas)) == 2  # the checker is not vacuous


@pytest.mark.parametrize("path", ["/", "/api/health", "/static/app.js", "/api/nothing-here"])
def test_security_headers_on_every_response(client, path):
    response = client.get(path)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "img-src 'self' blob: data:" in policy


def test_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for element in ('id="image-input"', 'id="audio-input"', 'id="weight"', 'id="fusion-label"',
                    'id="face-bars"', 'id="speech-bars"', 'id="timeline"'):
        assert element in html
    for name in ("style.css", "app.js", "recorder.js"):
        assert f"/static/{name}" in html
        assert client.get(f"/static/{name}").status_code == 200
    for text in [html, *(path.read_text() for path in STATIC.iterdir())]:
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
