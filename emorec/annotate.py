"""A video with its timeline drawn in: the main person's box and face label, the fused emotion now, and a
running bar of the fused label over the whole clip with a marker at the current moment.

Every frame of the source is read again (upright, at most OUTPUT_MAX_SIDE pixels), drawn on with OpenCV
and encoded with PyAV (H.264); the sound track is copied as it is.
"""

import bisect
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from . import media, video
from .errors import InputError

OUTPUT_MAX_SIDE = 1280
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
COLOURS = {"angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (0, 200, 250),
           "neutral": (170, 170, 170), "sad": (200, 110, 30), "surprise": (0, 140, 255), None: (60, 60, 60)}
BAR_SHARE = 0.05  # the running bar's height, a share of the frame's


def running_bar(steps, duration, width, height):
    """A BGR strip of `width` x `height`: each step's fused label, from its time to the next step's."""
    bar = np.zeros((height, width, 3), np.uint8)
    for index, step in enumerate(steps):
        start = round(width * step["time"] / duration)
        end = round(width * steps[index + 1]["time"] / duration) if index + 1 < len(steps) else width
        bar[:, start:end] = COLOURS[step["fusion"]["label"]]
    return bar


def draw(frame, step, bar, duration, scale):
    """Draw one timeline step on a BGR frame in place: the face box, the labels, the running bar with a
    marker at the step's time."""
    height, width = frame.shape[:2]
    thickness = max(1, round(width / 400))
    font = max(0.4, width / 1600)
    face = step["face"]
    if face["status"] == "ok":
        x, y, w, h = (round(value * scale) for value in face["box"])
        cv2.rectangle(frame, (x, y), (x + w, y + h), COLOURS[face["label"]], thickness + 1)
        _text(frame, f"face {face['label']} {face['confidence']:.0%}", (x, max(0, y - 8)), font, thickness)
    fused = step["fusion"]
    summary = (f"{fused['label']} {fused['confidence']:.0%} ({' + '.join(fused['sources'])})"
               if fused["label"] else "nothing to go on")
    bar_top = height - len(bar)
    _text(frame, summary, (10, bar_top - 10), font * 1.4, thickness + 1)
    frame[bar_top:] = bar
    marker = round(width * step["time"] / duration)
    cv2.line(frame, (marker, bar_top), (marker, height), (255, 255, 255), thickness + 1)


def _text(frame, text, origin, scale, thickness):
    """White text with a dark outline, readable on any picture."""
    cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def output_format(out):
    """The FFmpeg container of an output file's name; InputError for a suffix other than CONTAINERS'."""
    suffix = Path(out).suffix.lower()
    if suffix not in CONTAINERS:
        raise InputError(f"{out}: an annotated video must end in {', '.join(CONTAINERS)}")
    return CONTAINERS[suffix]


def write(source, result, out):
    """Write `source` (a path or bytes) with `result` (its predict_video result) drawn in, to `out`
    (.mp4, .mov or .mkv)."""
    steps, info = result["timeline"], result["video"]
    times = [step["time"] for step in steps]
    duration = max(info["duration"], times[-1]) or 1.0
    try:
        output = av.open(str(out), "w", format=output_format(out))
    except (OSError, av.FFmpegError) as error:
        raise InputError(f"{out}: cannot write the annotated video ({error.strerror})") from None
    with output:
        picture = None
        for seconds, frame in video.read_frames(source, fps=None, max_side=OUTPUT_MAX_SIDE):
            if picture is None:
                picture = output.add_stream("libx264", rate=round(video.video_info(source).fps) or 30)
                picture.height, picture.width = (side - side % 2 for side in frame.shape[:2])  # yuv420p: even
                picture.pix_fmt, picture.codec_context.time_base = "yuv420p", Fraction(1, 1000)
                sound = _sound_stream(source, output)
                scale = max(frame.shape[:2]) / max(info["width"], info["height"])
                bar = running_bar(steps, duration, picture.width, max(4, round(picture.height * BAR_SHARE)))
            frame = frame[:picture.height, :picture.width]
            step = steps[max(0, bisect.bisect_right(times, seconds + 1e-6) - 1)]
            draw(frame, step, bar, duration, scale)
            encoded = av.VideoFrame.from_ndarray(frame, format="bgr24")
            encoded.pts, encoded.time_base = round(seconds * 1000), Fraction(1, 1000)
            output.mux(picture.encode(encoded))
        output.mux(picture.encode(None))
        if sound is not None:
            _copy_sound(source, output, sound)


def _sound_stream(source, output):
    """An output stream for the source's audio track, copied without re-encoding; None without one."""
    with media.open_media(source, video._describe(source), "video") as container:
        if not container.streams.audio:
            return None
        return output.add_stream_from_template(container.streams.audio[0])


def _copy_sound(source, output, stream):
    with media.open_media(source, video._describe(source), "video") as container:
        for packet in container.demux(container.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                output.mux(packet)
