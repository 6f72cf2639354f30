"""Video timelines: the tracker and smoothing on synthetic boxes, the step fusion with a modality missing,
end-to-end runs on the real RAVDESS takes and on synthetic PyAV clips, the CLI and the API.

The synthetic face clip moves the astronaut's photo across a grey frame; the real takes are sampled at
a low rate to keep the test time small.
"""

import io
import json

import numpy as np
import pytest
from PIL import Image

from emorec import LABELS, cli, media, timeline, video
from emorec.errors import InputError
from emorec.web import create_app

from conftest import (ASTRONAUT, SAMPLES, assert_valid_result, chirp, gradient, media_bytes, media_opens, mp4_refilled,
                      shared, soundtrack_of, tone, write)
from test_web import problems

TAKE = SAMPLES / "video" / "01-01-03-01-01-02-05.mp4"  # happy, face and voice
SILENT_TAKE = SAMPLES / "video" / "02-01-06-01-01-01-05.mp4"  # video only: a silent sound track


def moving_face(count=10, step=12, size=160, width=320, height=240):
    """RGB frames: the astronaut's photo (one face), `size` pixels square, sliding right `step` pixels
    a frame over grey."""
    face = np.asarray(Image.open(shared(ASTRONAUT)).convert("RGB").resize((size, size)))
    top = (height - size) // 2
    frames = []
    for index in range(count):
        frame = np.full((height, width, 3), 120, np.uint8)
        frame[top:top + size, 20 + step * index:20 + size + step * index] = face
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def face_clip():
    """2 s at 5 frames/s, a face moving, the sound a chirp (not speech)."""
    return media_bytes("mp4", chirp(2.0), frames=moving_face(), fps=5)


# ---- tracking and smoothing -------------------------------------------------------------

def uniform():
    return np.full(len(LABELS), 1 / len(LABELS))


def test_iou():
    assert timeline.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1
    assert timeline.iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)
    assert timeline.iou([0, 0, 10, 10], [20, 20, 5, 5]) == 0


def test_two_people_crossing_keep_their_tracks():
    """A walks right at y=100, B left at y=130; their boxes overlap as they pass, identities hold."""
    tracker = timeline.Tracker()
    for index in range(20):
        a, b = [10 * index, 100, 60, 60], [190 - 10 * index, 130, 60, 60]
        found = tracker.update(index * 0.2, [b, a] if index % 2 else [a, b], [uniform(), uniform()])
        assert len(found) == 2
    assert len(tracker.tracks) == 2
    for track in tracker.tracks:
        rows = {box[1] for box, _, _ in track.seen.values()}
        assert len(rows) == 1 and len(track.seen) == 20  # one person's boxes only, every frame
    first, second = tracker.tracks
    assert [box[0] for box, _, _ in first.seen.values()] == [10 * index for index in range(20)]
    assert [box[0] for box, _, _ in second.seen.values()] == [190 - 10 * index for index in range(20)]


def test_a_track_survives_a_short_gap_and_ends_after_a_long_one():
    tracker = timeline.Tracker(max_gap=1.0)
    box = [50, 50, 80, 80]
    times = [0.0, 0.2, 0.4, 1.2, 1.4, 2.6]  # unseen 0.8 s (kept), then 1.2 s (a new track)
    tracks = [tracker.update(time, [box], [uniform()])[0] for time in times]
    assert [track.number for track in tracks] == [1, 1, 1, 1, 1, 2]
    assert tracker.update(2.8, [[300, 50, 80, 80]], [uniform()])[0].number == 3  # elsewhere: someone else


def test_main_track_is_the_most_present():
    tracker = timeline.Tracker()
    for index in range(10):  # a small face all along (10 x 400 px), a large one for two frames (2 x 10000 px)
        boxes = [[0, 0, 20, 20]] + ([[200, 0, 100, 100]] if index < 2 else [])
        tracker.update(index * 0.2, boxes, [uniform()] * len(boxes))
    assert tracker.main_track().number == 2 and tracker.main_track().area == 20000
    assert timeline.Tracker().main_track() is None


def test_smoothing_is_an_exponential_moving_average_in_time():
    previous, current = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    np.testing.assert_allclose(timeline.smooth(previous, current, 0.0), previous)
    np.testing.assert_allclose(timeline.smooth(previous, current, 0.6, 0.6), previous + (1 - np.exp(-1)) * (current - previous))
    np.testing.assert_allclose(timeline.smooth(previous, current, 60.0), current, atol=1e-12)
    track = timeline.Track(1)
    happy, sad = np.eye(len(LABELS))[LABELS.index("happy")], np.eye(len(LABELS))[LABELS.index("sad")]
    track.add(0.0, [0, 0, 10, 10], happy)
    for index in range(1, 6):  # a one-frame flicker to sad moves the smoothed vector, but not past happy
        track.add(index * 0.2, [0, 0, 10, 10], sad if index == 3 else happy)
    smoothed = [value[2] for value in track.seen.values()]
    assert smoothed[3][LABELS.index("sad")] == pytest.approx(1 - np.exp(-0.2 / 0.6))
    assert all(np.argmax(value) == LABELS.index("happy") for value in smoothed)
    np.testing.assert_allclose([value.sum() for value in smoothed], 1)


# ---- one step: the covering speech segment and the fusion's fallbacks -------------------

SEGMENTS = [{"start": 0.0, "end": 2.4, "label": "happy"}, {"start": 0.96, "end": 3.36, "label": "sad"}]


def counted(monkeypatch, owner, name):
    """The calls' arguments of owner.name from now on (the calls still go through)."""
    calls, original = [], getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)
    monkeypatch.setattr(owner, name, spy)
    return calls


def test_a_face_is_followed_after_a_whole_frame_search_and_classified_every_fourth_step(predictor, face_clip,
                                                                                         monkeypatch):
    """10 frames at 5 frames/s, the face moving 12 px a frame: the whole frame searched at 0 s (the next search
    would be at 2 s), the face found near its last box after; classified at 0, 0.8 and 1.6 s; one track
    throughout."""
    with monkeypatch.context() as patched:
        detect = counted(patched, predictor.detector, "detect")
        classify = counted(patched, predictor, "classify_photo_faces")
        patched.setattr(timeline, "SEARCH_SECONDS", 0.0)
        patched.setattr(timeline, "CLASSIFY_SECONDS", 0.0)
        every = predictor.predict_video(face_clip)  # the every-frame path
        assert len(detect) == len(classify) == 10
    frames = [frame for _, frame in video.read_frames(face_clip)]  # 320x240: not scaled
    assert [step["face"]["box"] for step in every["timeline"]] == [predictor.find_faces(frame)[0][0] for frame in frames]
    detect = counted(monkeypatch, predictor.detector, "detect")  # detect_around's windows go through it too
    around = counted(monkeypatch, predictor.detector, "detect_around")
    classify = counted(monkeypatch, predictor, "classify_photo_faces")
    result = predictor.predict_video(face_clip)
    whole = [frame for frame, *_ in detect if frame.shape[:2] == (240, 320)]
    assert len(whole) == 1 and len(around) == 9 and len(detect) == 10
    assert [len(detections) for _, detections in classify] == [1] * 3
    assert result["face"]["people"] == 1 and result["face"]["presence"] == 1
    for step, other in zip(result["timeline"], every["timeline"], strict=True):
        assert np.abs(np.subtract(step["face"]["box"], other["face"]["box"])).max() <= 4
        assert max(abs(step["face"]["probabilities"][label] - other["face"]["probabilities"][label])
                   for label in LABELS) < 0.15


def test_a_face_lost_from_its_window_is_searched_for_in_the_whole_frame(predictor, monkeypatch):
    """The face jumps 300 px between the 4th and 5th frames, out of the window it is followed in: that frame
    is searched whole, and finds it: a new track, as it no longer overlaps the last box."""
    frames = [np.roll(frame, 300 if index >= 4 else 0, axis=1)
              for index, frame in enumerate(moving_face(8, step=4, size=240, width=640, height=300))]
    detect = counted(monkeypatch, predictor.detector, "detect")
    result = predictor.predict_video(media_bytes("mp4", frames=frames, fps=5))
    whole = [index for index, (frame, *_) in enumerate(detect) if frame.shape[:2] == (300, 640)]
    assert whole == [0, 5] and len(detect) == 9  # frame 0; frame 4 after its window came back empty
    assert result["face"]["people"] == 2 and result["face"]["presence"] == 0.5  # the timeline shows the main one
    assert [step["face"]["status"] for step in result["timeline"]] in (["ok"] * 4 + ["no_face"] * 4,
                                                                        ["no_face"] * 4 + ["ok"] * 4)


def test_an_mp4_is_opened_once_without_the_full_probe(predictor, monkeypatch):
    """One open gives the header's checks, the frames and then the sound (video.soundtrack)."""
    opened = media_opens(monkeypatch)
    predictor.predict_video(media_bytes("mp4", tone(1.2), frames=moving_face(6), fps=5))
    assert opened == [("video", media.QUICK_PROBE)]


def test_the_covering_segment_is_the_nearest_centred():
    labels = {time: (timeline.covering_segment(SEGMENTS, time) or {}).get("label")
              for time in (0.2, 1.5, 2.0, 3.3, 3.5)}
    assert labels == {0.2: "happy", 1.5: "happy", 2.0: "sad", 3.3: "sad", 3.5: None}


def test_step_fusion_falls_back_on_the_modality_present(predictor, clip_result):
    face = {"status": "ok", "box": [0, 0, 1, 1], **predictor._result(np.eye(len(LABELS))[0])}
    no_face = {"status": "no_face", "box": None, "label": None, "confidence": None, "probabilities": None}
    spoken = timeline.speech_step(clip_result, 1.0)
    assert spoken["status"] == "ok" and spoken["start"] <= 1.0 <= spoken["end"]
    beyond = timeline.speech_step(clip_result, clip_result["segments"][-1]["end"] + 1)
    assert beyond["status"] == "no_speech" and beyond["label"] is None
    silent = timeline.speech_step({**clip_result, "status": "no_speech"}, 1.0)
    cases = {(True, True): ("fused", ["face", "speech"]), (False, True): ("speech_only", ["speech"]),
             (True, False): ("face_only", ["face"]), (False, False): ("no_signal", [])}
    for (has_face, has_speech), (status, sources) in cases.items():
        fused = timeline.fused_step(predictor, face if has_face else no_face, spoken if has_speech else silent)
        assert (fused["status"], fused["sources"]) == (status, sources)
    assert timeline.fused_step(predictor, no_face, spoken)["probabilities"] == spoken["probabilities"]


# ---- whole videos -----------------------------------------------------------------------

def test_real_take_face_voice_and_fusion(predictor):
    result = predictor.predict_video(shared(TAKE), fps=2)
    assert list(result) == ["video", "face", "speech", "fusion", "timeline"]
    assert result["video"] == {"duration": pytest.approx(3.24, abs=0.01), "width": 1280, "height": 720,
                               "fps": 2, "steps": 7}
    steps = result["timeline"]
    assert [step["time"] for step in steps] == pytest.approx([0.5 * index for index in range(7)], abs=0.04)
    assert result["face"]["people"] == 1 and result["face"]["presence"] == 1
    for part in ("face", "speech", "fusion"):
        assert_valid_result(result[part], LABELS)
    assert result["fusion"]["status"] == "fused"
    for step in steps:
        assert step["face"]["status"] == "ok" and step["speech"]["status"] == "ok"
        assert step["fusion"]["status"] == "fused"
        x, y, width, height = step["face"]["box"]
        assert 0 <= x and x + width <= 1280 and 0 <= y and y + height <= 720 and width > 100
        assert step["speech"]["start"] <= step["time"] <= step["speech"]["end"]


def test_the_streamed_soundtrack_gives_the_whole_waveforms_speech(predictor):
    from emorec.audio import load_audio
    path = shared(TAKE)
    assert predictor.predict_video(path, fps=1)["speech"] == predictor.predict_speech(load_audio(path))


def test_video_with_a_silent_track_is_no_speech(predictor):
    result = predictor.predict_video(shared(SILENT_TAKE), fps=1)
    assert result["speech"]["status"] == "no_speech"
    assert result["fusion"]["status"] == "face_only" and result["fusion"]["label"] == result["face"]["label"]
    assert {step["fusion"]["status"] for step in result["timeline"]} == {"face_only"}


def test_synthetic_face_clip_without_audio_track(predictor):
    result = predictor.predict_video(media_bytes("mp4", frames=moving_face(), fps=5), fps=5)
    assert result["speech"] == timeline.NO_AUDIO_TRACK
    assert result["face"]["status"] == "ok" and result["face"]["people"] == 1
    boxes = [step["face"]["box"] for step in result["timeline"]]
    assert len(boxes) == 10 and all(step["fusion"]["status"] == "face_only" for step in result["timeline"])
    shifts = np.diff([box[0] for box in boxes])
    assert np.all(np.abs(shifts - 12) <= 3)  # the box follows the face, 12 px a frame


def test_boxes_are_in_the_videos_pixels_when_frames_are_scaled(predictor, monkeypatch):
    clip = media_bytes("mp4", frames=moving_face(3, size=320, width=480, height=360), fps=5)
    full = predictor.predict_video(clip)["timeline"]
    monkeypatch.setattr(timeline, "FRAME_MAX_SIDE", 240)  # frames decoded at half size
    half = predictor.predict_video(clip)["timeline"]
    assert len(full) == len(half) == 3
    for a, b in zip(full, half):
        assert a["face"]["status"] == b["face"]["status"] == "ok"
        assert np.abs(np.subtract(a["face"]["box"], b["face"]["box"])).max() <= 9  # of ~60: followed in a window, YuNet jitters


def test_rotated_video_has_upright_boxes_and_size(predictor, face_clip):
    """Frames stored turned a quarter clockwise, with rotation metadata that turns them back: the
    size and the boxes are the upright picture's, as players show it."""
    stored = [np.ascontiguousarray(np.rot90(frame, -1)) for frame in moving_face()]
    rotated = predictor.predict_video(media_bytes("mp4", frames=stored, fps=5, rotation=90))
    upright = predictor.predict_video(face_clip)
    assert (rotated["video"]["width"], rotated["video"]["height"]) == (320, 240) == (
        upright["video"]["width"], upright["video"]["height"])
    for a, b in zip(rotated["timeline"], upright["timeline"]):
        assert a["face"]["status"] == b["face"]["status"] == "ok"
        assert np.abs(np.subtract(a["face"]["box"], b["face"]["box"])).max() <= 4


def test_no_face_on_every_step(predictor):
    frames = [np.roll(gradient(120, 160), 10 * index, axis=1) for index in range(6)]
    result = predictor.predict_video(media_bytes("mp4", tone(1.2), frames=frames, fps=5))
    assert result["face"]["status"] == "no_face" and result["face"]["label"] is None
    assert len(result["timeline"]) == 6
    assert all(step["face"]["status"] == "no_face" and step["fusion"]["sources"] != ["face"]
               for step in result["timeline"])


@pytest.mark.parametrize("data, message", [
    (b"not a video at all", "not a readable video file"),
    (lambda clip: mp4_refilled(clip, bytes), "video data is corrupt"),
    (lambda clip: clip[:len(clip) // 2], "not a readable video file"),
])
def test_corrupt_video_is_a_clear_input_error(predictor, face_clip, data, message):
    with pytest.raises(InputError, match=f"^video upload: {message}"):
        predictor.predict_video(data(face_clip) if callable(data) else data)


@pytest.mark.parametrize("fps", [0, -1, float("nan")])
def test_bad_sampling_rate(predictor, face_clip, fps):
    with pytest.raises(InputError, match="sampling rate"):
        predictor.predict_video(face_clip, fps=fps)


def test_predict_speech_takes_a_waveform(predictor, clip, clip_result):
    from emorec.audio import load_audio
    assert predictor.predict_speech(load_audio(clip)) == clip_result


# ---- command line and API ---------------------------------------------------------------

def test_cli_predict_video(cli_predictor, face_clip, tmp_path, capsys):
    path = write(tmp_path, "clip.mp4", face_clip)
    assert cli.main(["predict", "--video", str(path), "--fps", "2.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["video"]["steps"] == 5 and len(result["timeline"]) == 5
    assert result["fusion"]["label"] == result["face"]["label"]  # the chirp is no speech
    assert cli.main(["predict", "--video", str(path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("video:  2.0 s, 320x240, 10 steps at 5 frames/s\nface:   ")
    assert "speech: " in text and "(no speech detected)" in text and "timeline (fused):" in text
    assert cli.main(["predict", "--video", str(path), "--image", str(ASTRONAUT)]) == 2
    assert "give --video alone" in capsys.readouterr().err


def test_cli_batch_rows_for_videos(cli_predictor, face_clip, tmp_path):
    folder = tmp_path / "inputs"
    write(folder, "a.mp4", face_clip)
    write(folder, "b.webm", media_bytes("webm", tone(1.0, 48000), rate=48000, audio_codec="libopus"))
    write(folder, "c.mkv", b"junk")
    write(folder, "d.m4a", media_bytes("ipod", chirp(1.0)))
    out = tmp_path / "rows.csv"
    assert cli.main(["batch", str(folder), "--out", str(out)]) == 0
    import csv
    rows = list(csv.DictReader(out.open()))
    assert [row["path"].rsplit("/", 1)[1] for row in rows] == ["a.mp4", "b.webm", "c.mkv", "d.m4a"]
    assert list(rows[0])[:6] == ["path", "face_label", "speech_label", "status", "label", "confidence"]
    assert (rows[0]["status"], rows[0]["face_label"], rows[0]["speech_label"]) == ("face_only", rows[0]["label"], "")
    assert rows[1]["status"] == "no_speech" and rows[1]["face_label"] == ""  # sound only: a recording
    assert rows[2]["status"] == "error" and "not a readable video file" in rows[2]["error"]
    assert rows[3]["status"] in ("ok", "no_speech") and rows[3]["label"] in LABELS


@pytest.fixture(scope="module")
def client(predictor):
    return create_app(predictor=predictor).test_client()


def post(client, **fields):
    return client.post("/api/predict", content_type="multipart/form-data",
                       data={name: (io.BytesIO(value), "upload") if isinstance(value, bytes) else value
                             for name, value in fields.items()})


def test_api_video_timeline_matches_its_schema(client, face_clip):
    response = post(client, video=face_clip, fps="2.5")
    assert response.status_code == 200
    result = response.get_json()
    assert len(result["timeline"]) == 5 and result["face"]["status"] == "ok"
    document = client.get("/api/openapi.json").get_json()
    schema = document["paths"]["/api/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    schemas = document["components"]["schemas"]
    assert problems(result, schema, schemas) == []
    assert problems(post(client, video=media_bytes("mp4", frames=moving_face(3))).get_json(), schema, schemas) == []
    result["timeline"][0]["face"]["box"] = [1, 2]
    assert len(problems(result, schema, schemas)) == 1  # the schema is not vacuous


@pytest.mark.parametrize("fields, status, message", [
    ({"video": b"junk"}, 422, "not a readable video file"),
    ({"video": "CLIP", "image": b"x"}, 400, "send a video alone"),
    ({"video": "CLIP", "fps": "fast"}, 400, "fps must be a number"),
    ({"video": "CLIP", "fps": "0"}, 400, "fps must be a number"),
    ({"video": "CLIP", "fps": "1000"}, 400, "fps must be a number"),
])
def test_api_bad_video_requests_are_json_4xx(client, face_clip, fields, status, message):
    response = post(client, **{name: face_clip if value == "CLIP" else value for name, value in fields.items()})
    assert response.status_code == status and message in response.get_json()["error"]


def test_api_oversize_video_is_413(predictor, face_clip, monkeypatch):
    monkeypatch.setenv("EMOREC_MAX_UPLOAD_MB", str(len(face_clip) / 2 / 2 ** 20))
    response = post(create_app(predictor=predictor).test_client(), video=face_clip)
    assert response.status_code == 413 and "limit" in response.get_json()["error"]


# ---- the annotated video ----------------------------------------------------------------

def test_annotated_video_has_the_box_the_bar_and_the_sound(predictor, tmp_path, capsys, cli_predictor):
    from emorec import annotate
    source = write(tmp_path, "clip.mp4", media_bytes("mp4", chirp(2.0), frames=moving_face(), fps=5))
    out = tmp_path / "annotated.mp4"
    assert cli.main(["predict", "--video", str(source), "--annotate", str(out)]) == 0
    result = predictor.predict_video(source)
    frames = list(video.read_frames(out, fps=None))
    assert len(frames) == 10 and video.video_info(out).has_audio
    assert len(soundtrack_of(out)) == pytest.approx(2 * 16000, abs=1600)
    colour = np.array(annotate.COLOURS[result["face"]["label"]])
    for (seconds, frame), step in zip(frames, result["timeline"]):
        assert seconds == pytest.approx(step["time"], abs=0.01)
        x, y, w, h = step["face"]["box"]
        edge = frame[y + h // 2, max(0, x - 1):x + 3].astype(int)  # the box's left side, drawn in the label's colour
        assert np.abs(edge - colour).sum(axis=1).min() < 60
        bar = frame[-4:, :].reshape(-1, 3).mean(axis=0)
        assert np.abs(bar - annotate.COLOURS[result["fusion"]["label"]]).max() < 40  # one fused label all along
    assert cli.main(["predict", "--video", str(source), "--annotate", str(tmp_path / "out.gif")]) == 2
    assert "must end in .mp4, .mov, .mkv" in capsys.readouterr().err
    assert cli.main(["predict", "--image", str(ASTRONAUT), "--annotate", str(out)]) == 2
