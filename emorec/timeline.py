"""Video timelines: each person's face tracked across the sampled frames, the voice's segments over the
sound track, and their fusion at every step; clip-level face, speech and fused results.

Faces are found by YuNet and classified by the Predictor's photo path (`classify_photo_faces`), but not on
every frame: the whole frame is searched every SEARCH_SECONDS, and in between each face seen on the last
frame is followed, searched for in a small window around its last box (a whole search when one is not
found again); a face is classified again every CLASSIFY_SECONDS, its last probabilities held in between.
A greedy IoU tracker keeps each person's boxes together; a track ends after TRACK_GAP_SECONDS unseen. Each track's
probabilities are smoothed over time by an exponential moving average (time constant
SMOOTHING_SECONDS). The main person is the track with the largest summed box area (the largest and
longest in view); the face timeline follows that track.
"""

import itertools
import math
import os

import numpy as np

from . import media, video
from .image import face_boxes
from .errors import InputError

TRACK_GAP_SECONDS = 1.0  # a track unseen for longer (and for 1.5 sampling steps) ends; a face seen later starts another
MATCH_IOU = 0.3  # a detection continues the track whose last box it overlaps most, from this IoU up
SMOOTHING_SECONDS = 0.6  # time constant of the moving average over a track's probabilities
# Frames are decoded at most this large: 1.3 times as fast as the photo path's 1280 (benchmarks/video.py),
# at the cost of faces under about 1/30 of the frame's width (YuNet needs about 20 pixels).
FRAME_MAX_SIDE = int(os.environ.get("EMOREC_VIDEO_FRAME_SIDE", 640))
# The whole frame is searched for faces at least this often (0: on every frame); a new face is found by then.
SEARCH_SECONDS = float(os.environ.get("EMOREC_VIDEO_SEARCH_SECONDS", 2.0))
# A followed face is classified again after this long (0: on every frame); its probabilities are held in between.
CLASSIFY_SECONDS = float(os.environ.get("EMOREC_VIDEO_CLASSIFY_SECONDS", 0.8))
_EMPTY = {"label": None, "confidence": None, "probabilities": None}
NO_AUDIO_TRACK = {"status": "no_speech", "duration": 0.0, "speech_score": 0.0, **_EMPTY, "segments": []}


def iou(a, b):
    """Intersection over union of two (x, y, width, height) boxes."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    overlap = max(0.0, width) * max(0.0, height)
    union = a[2] * a[3] + b[2] * b[3] - overlap
    return overlap / union if union > 0 else 0.0


def smooth(previous, current, elapsed, time_constant=SMOOTHING_SECONDS):
    """One step of an exponential moving average over irregular steps: after `elapsed` seconds,
    `current` has weight 1 - exp(-elapsed / time_constant)."""
    weight = 1.0 - math.exp(-max(0.0, elapsed) / time_constant)
    return previous + weight * (np.asarray(current) - previous)


class Track:
    """One person's faces: {time: (box, probabilities, smoothed probabilities)}, in time order."""

    def __init__(self, number):
        self.number = number
        self.seen = {}
        self.area = 0.0
        self.last_time, self.last_box, self.smoothed = None, None, None
        self.classified_time, self.classified = None, None  # the last classification's time and probabilities

    def add(self, time, box, probabilities=None):
        """The face at `time`; without probabilities, the last classification's are held."""
        if probabilities is None:
            probabilities = self.classified
        else:
            self.classified_time = time
            self.classified = probabilities = np.asarray(probabilities, np.float64)
        self.smoothed = (probabilities if self.smoothed is None
                         else smooth(self.smoothed, probabilities, time - self.last_time))
        self.seen[time] = (box, probabilities, self.smoothed)
        self.area += box[2] * box[3]
        self.last_time, self.last_box = time, box


class Tracker:
    """Greedy IoU matching of each frame's detections to the tracks seen in the last `max_gap` seconds."""

    def __init__(self, max_gap=TRACK_GAP_SECONDS, min_iou=MATCH_IOU):
        self.max_gap, self.min_iou = max_gap, min_iou
        self.tracks = []

    def match(self, time, boxes):
        """The track each box (x, y, w, h) continues, or None for a new face."""
        active = [track for track in self.tracks if time - track.last_time <= self.max_gap]
        pairs = sorted(((iou(track.last_box, box), -number, index)
                        for number, track in enumerate(active) for index, box in enumerate(boxes)), reverse=True)
        matched, taken = {}, set()
        for overlap, negative_number, index in pairs:
            if overlap < self.min_iou:
                break
            if index not in matched and -negative_number not in taken:
                matched[index] = active[-negative_number]
                taken.add(-negative_number)
        return [matched.get(index) for index in range(len(boxes))]

    def update(self, time, boxes, probabilities, tracks=None):
        """Add one frame's faces (boxes x, y, w, h and their probabilities, None to hold a track's last) to
        the tracks `match` gives (or gave: `tracks`); returns each face's Track."""
        found = []
        for box, probability, track in zip(boxes, probabilities, tracks or self.match(time, boxes)):
            if track is None:
                track = Track(len(self.tracks) + 1)
                self.tracks.append(track)
            track.add(time, box, probability)
            found.append(track)
        return found

    def main_track(self):
        """The track most present: the largest summed box area; None when no face was seen."""
        return max(self.tracks, key=lambda track: track.area, default=None)


def follow_or_search(detector, frame, followed, search):
    """YuNet rows of a frame's faces, largest first, and whether the whole frame was searched: each of the
    `followed` boxes (frame pixels) found again in a window around it (the face there that overlaps it most,
    by IoU from MATCH_IOU up); the whole frame searched instead when `search`, when none is followed, when
    one is not found again or two found the same face."""
    rows = []
    if not search:
        for box in followed:
            near = detector.detect_around(frame, box)
            overlaps = [iou(box, row[:4]) for row in near]
            if not overlaps or max(overlaps) < MATCH_IOU:
                rows = []
                break
            rows.append(near[int(np.argmax(overlaps))])
    whole = not rows or any(iou(a[:4], b[:4]) >= MATCH_IOU for a, b in itertools.combinations(rows, 2))
    return sorted(detector.detect(frame) if whole else rows, key=lambda row: -row[2] * row[3]), whole


def add_faces(predictor, tracker, time, frame, scale, previous, searched, slack):
    """Find one frame's faces (follow_or_search: those on the `previous` step's frame followed, or the whole frame
    searched when SEARCH_SECONDS have passed since `searched`), classify those whose track is new or was
    classified CLASSIFY_SECONDS ago, and add them to the tracker, boxes in the video's pixels (the frame's
    times `scale`). `slack` is taken off each period (half a sampling step). Returns the time of the last
    whole-frame search."""
    followed = [[value / scale for value in track.last_box] for track in tracker.tracks if track.last_time == previous]
    search = searched is None or time - searched >= SEARCH_SECONDS - slack
    rows, whole = follow_or_search(predictor.detector, frame, followed, search)
    boxes = [[round(value * scale) for value in box] for box in face_boxes(rows)]
    tracks = tracker.match(time, boxes)
    due = [index for index, track in enumerate(tracks)
           if track is None or time - track.classified_time >= CLASSIFY_SECONDS - slack]
    probabilities = [None] * len(rows)
    if due:
        for index, fresh in zip(due, predictor.classify_photo_faces(frame, [rows[index] for index in due])):
            probabilities[index] = fresh
    tracker.update(time, boxes, probabilities, tracks)
    return time if whole else searched


def covering_segment(segments, time):
    """The speech segment whose centre is nearest `time` among those that cover it, or None."""
    covering = [segment for segment in segments if segment["start"] <= time <= segment["end"]]
    return min(covering, key=lambda segment: abs((segment["start"] + segment["end"]) / 2 - time), default=None)


def speech_step(speech, time):
    """The speech result at one moment: the covering segment, with the clip's status."""
    segment = covering_segment(speech["segments"], time)
    if segment is None:
        return {"status": "no_speech", "start": None, "end": None, **_EMPTY}
    return {"status": speech["status"], **segment}


def fused_step(predictor, face, speech, weights=None):
    """The fusion at one step, without the weights' detail (the clip's fusion states them)."""
    fused = predictor.fuse(face, speech, weights)
    return {key: fused[key] for key in ("status", "label", "confidence", "probabilities", "sources")}


def has_video(source):
    """Whether a media file (path or bytes) holds a video stream (a .webm may hold sound only)."""
    with media.open_media(source, video._describe(source), "video") as container:
        return bool(container.streams.video)


def analyse(predictor, source, fps=video.DEFAULT_FPS, weights=None, threads=0):
    """Face, speech and fused timelines of a video (path or bytes) and their clip-level results.

    `fps` is the sampling rate of the face timeline; `weights` the fusion weights (default: the
    models'); `threads` FFmpeg's decoding threads (0: its own choice). A video with no audio track
    has speech `no_speech`; a step with no face in view has face `no_face`.
    """
    if not fps or fps <= 0 or not math.isfinite(fps):
        raise InputError(f"the sampling rate must be a positive number of frames a second, not {fps}")
    tracker, times = Tracker(max(TRACK_GAP_SECONDS, 1.5 / fps)), []  # at a low rate: the next frame may continue it
    searched = None  # the time of the last whole-frame search
    with video.open_video(source) as opened:  # the header's limits, before anything is decoded
        info = opened.info
        for time, frame in video.sampled_frames(opened, fps, max_side=FRAME_MAX_SIDE, threads=threads):
            scale = max(info.width, info.height) / max(frame.shape[:2])  # back to the video's own pixels, upright
            shown = [round(side * scale) for side in frame.shape[1::-1]]  # width, height as players show it
            searched = add_faces(predictor, tracker, time, frame, scale, times[-1] if times else None, searched,
                                 0.5 / fps)
            times.append(time)
        if not times:
            raise InputError(f"{opened.name}: the video holds no frames")
        soundtrack = video.soundtrack(opened)  # streamed: memory does not grow with the video's length
        speech = predictor.predict_speech(soundtrack) if soundtrack is not None else dict(NO_AUDIO_TRACK)
    main = tracker.main_track()
    steps = []
    for time in times:
        if main is not None and time in main.seen:
            box, _, smoothed = main.seen[time]
            face = {"status": "ok", "box": box, **predictor._result(smoothed)}
        else:
            face = {"status": "no_face", "box": None, **_EMPTY}
        spoken = speech_step(speech, time)
        steps.append({"time": round(time, 3), "face": face, "speech": spoken,
                      "fusion": fused_step(predictor, face, spoken, weights)})
    face = _clip_face(predictor, tracker, main, len(times))
    return {"video": {"duration": round(times[-1], 3) if info.seconds is None else round(info.seconds, 3),
                      "width": shown[0], "height": shown[1], "fps": fps, "steps": len(times)},
            "face": face, "speech": speech, "fusion": predictor.fuse(face, speech, weights), "timeline": steps}


def _clip_face(predictor, tracker, main, steps):
    """The clip-level face result: the main track's mean (unsmoothed) probabilities."""
    people = len(tracker.tracks)
    if main is None:
        return {"status": "no_face", "people": 0, "presence": 0.0, **_EMPTY}
    mean = np.mean([probabilities for _, probabilities, _ in main.seen.values()], axis=0)
    return {"status": "ok", "people": people, "presence": round(len(main.seen) / steps, 4),
            **predictor._result(mean)}


def clip_row(result):
    """A batch row of a predict_video result: the fused clip label and each modality's (None when absent)."""
    fused = result["fusion"]
    return {**{key: fused[key] for key in ("status", "label", "confidence", "probabilities")},
            "face_label": result["face"]["label"],
            "speech_label": result["speech"]["label"] if result["speech"]["status"] == "ok" else None}


def fused_spans(steps):
    """(start, end, fused label) of each run of steps with the same fused label, in time order."""
    spans = []
    for step in steps:
        label = step["fusion"]["label"]
        if spans and spans[-1][2] == label:
            spans[-1][1] = step["time"]
        else:
            spans.append([step["time"], step["time"], label])
    return [tuple(span) for span in spans]


def describe(result):
    """Readable lines for a predict_video result's video and face (the speech and fusion lines are the
    photo + recording ones), and the fused timeline as runs of one label."""
    clip, face = result["video"], result["face"]
    lines = [f"video:  {clip['duration']:.1f} s, {clip['width']}x{clip['height']}, "
             f"{clip['steps']} steps at {clip['fps']:g} frames/s"]
    if face["status"] == "no_face":
        lines.append("face:   no face found")
    else:
        lines.append(f"face:   {face['label']} ({face['confidence']:.0%}), the main person in view "
                     f"{face['presence']:.0%} of the steps ({face['people']} tracked)")
    timeline = [f"  {start:6.1f} - {end:6.1f} s  {label or 'nothing to go on'}"
                for start, end, label in fused_spans(result["timeline"])]
    return lines, ["timeline (fused):", *timeline]
