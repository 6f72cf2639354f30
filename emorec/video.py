"""Video input: frames read lazily at a sampling rate, with timestamps and upright; the sound through media,
block by block.

The header's duration, frame size and frame count are checked against the limits before anything is
decoded, and again while decoding (a header may lie). One decoded frame is held at a time.
"""

import contextlib
import math
import os
from typing import NamedTuple

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from . import media
from .audio import SAMPLE_RATE
from .errors import InputError

DEFAULT_FPS = 5.0
MAX_SECONDS = float(os.environ.get("EMOREC_MAX_VIDEO_SECONDS", 600))
MAX_PIXELS = int(os.environ.get("EMOREC_MAX_VIDEO_PIXELS", 3840 * 2160))  # per frame: 4K UHD
MAX_FRAMES = int(os.environ.get("EMOREC_MAX_VIDEO_FRAMES", 36000))  # decoded frames: 10 min at 60 frames/s
# FFmpeg's names of the container formats whose header states every stream's parameters (MP4 and MOV's moov
# box), so that media.QUICK_PROBE gives the same streams as a full probe; others are probed fully.
HEADER_COMPLETE = frozenset({"mov,mp4,m4a,3gp,3g2,mj2"})


class VideoInfo(NamedTuple):
    """What a video's header says: seconds (None when it does not say), frame size as stored (before
    any rotation), frame count (0 when unknown), average frame rate, and whether it has an audio track."""
    seconds: float | None
    width: int
    height: int
    frames: int
    fps: float
    has_audio: bool


class OpenVideo(NamedTuple):
    """An opened video: its PyAV container, video stream, checked VideoInfo, the name errors give it and the
    path or bytes it was opened from."""
    container: object
    stream: object
    info: VideoInfo
    name: str
    source: object


def _describe(source):
    return "video upload" if isinstance(source, (bytes, bytearray)) else str(source)


def _check_source(source, name):
    if not isinstance(source, (bytes, bytearray)) and not os.path.isfile(source):
        raise InputError(f"{name}: no such file")
    if not (source if isinstance(source, (bytes, bytearray)) else os.path.getsize(source)):
        raise InputError(f"{name}: file is empty")


def _header(container, name, max_seconds):
    """The video stream and its VideoInfo, checked against the limits."""
    if not container.streams.video:
        raise InputError(f"{name}: no video track")
    stream = container.streams.video[0]
    context = stream.codec_context
    info = VideoInfo(media.header_seconds(container, stream), context.width, context.height, stream.frames,
                     float(stream.average_rate or stream.guessed_rate or 0), bool(container.streams.audio))
    media.check_duration(info.seconds, max_seconds, name, "video")
    _check_size(info.width, info.height, name)
    if info.frames > MAX_FRAMES:
        raise InputError(f"{name}: video has {info.frames} frames, over the {MAX_FRAMES} frame limit")
    return stream, info


def _check_size(width, height, name):
    if width <= 0 or height <= 0:
        raise InputError(f"{name}: video frames have no size ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise InputError(f"{name}: video is {width}x{height}, over the {MAX_PIXELS} pixel limit")


@contextlib.contextmanager
def open_video(source, max_seconds=MAX_SECONDS):
    """The OpenVideo of a path or bytes, its header checked against the limits before anything is decoded:
    one open for the header and the frames, probed quickly when its format is HEADER_COMPLETE (opened
    again with a full probe when not)."""
    name = _describe(source)
    _check_source(source, name)
    for probe in (media.QUICK_PROBE, None):
        with media.open_media(source, name, "video", probe) as container:
            if probe is None or container.format.name in HEADER_COMPLETE:
                yield OpenVideo(container, *_header(container, name, max_seconds), name, source)
                return


def video_info(source):
    """The VideoInfo of a path or bytes, read from the header only (limits checked)."""
    with open_video(source) as opened:
        return opened.info


def read_frames(source, fps=DEFAULT_FPS, max_seconds=MAX_SECONDS, max_side=None, threads=0):
    """sampled_frames of a path or bytes, opened for them alone."""
    with open_video(source, max_seconds) as opened:
        yield from sampled_frames(opened, fps, max_seconds, max_side, threads)


def sampled_frames(opened, fps=DEFAULT_FPS, max_seconds=MAX_SECONDS, max_side=None, threads=0):
    """Yield (seconds from the start, upright BGR uint8 frame) of an OpenVideo, about `fps` a second.

    The frame shown at each sampling instant k/fps is taken (the first frame at or after it), so
    a variable frame rate keeps true timestamps; fps=None yields every frame. Rotation metadata
    is applied. Frames whose longer side exceeds `max_side` are scaled down in the same pass as
    the colour conversion (cheaper than converting, then resizing), by one reformatter for the whole
    video. `threads` is FFmpeg's thread count for decoding and scaling (0: its own choice). A picture
    due before the next sampling instant that no other picture refers to (a non-reference B-frame) is
    not decoded at all: it could never be taken, so the frames and timestamps are those that decoding
    every picture gives.
    """
    container, stream, _, name, _ = opened
    stream.codec_context.thread_count = threads
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    due, decoded, reformatter = 0.0, 0, VideoReformatter()

    def skip_unless_due(packet):  # decoded anyway when other pictures refer to it
        due_now = packet.pts is None or float(packet.pts * packet.time_base) - start >= due - 1e-6
        stream.codec_context.skip_frame = "DEFAULT" if due_now else "NONREF"

    for frame in media.decoded_frames(container, stream, name, "video", skip_unless_due if fps else None):
        decoded += 1
        if decoded > MAX_FRAMES:
            raise InputError(f"{name}: video is over the {MAX_FRAMES} frame limit "
                             "(more frames than its header says)")
        if frame.pts is None:
            continue  # no timestamp: cannot be placed on the timeline
        seconds = float(frame.pts * frame.time_base) - start
        if seconds > max_seconds:
            raise InputError(f"{name}: video is over the {max_seconds:.0f} s limit "
                             "(longer than its header says)")
        if fps and seconds < due - 1e-6:
            continue
        _check_size(frame.width, frame.height, name)
        image = reformatter.reformat(frame, format="bgr24", threads=threads,
                                     **_scaled(frame.width, frame.height, max_side)).to_ndarray()
        yield seconds, upright(image, frame.rotation)
        if fps:
            due = (math.floor(seconds * fps + 1e-6) + 1) / fps


def _scaled(width, height, max_side):
    """Reformat arguments that fit a width x height frame within max_side (none when it fits)."""
    if not max_side or max(width, height) <= max_side:
        return {}
    scale = max_side / max(width, height)
    return {"width": max(1, round(width * scale)), "height": max(1, round(height * scale)),
            "interpolation": "AREA"}


def upright(image, rotation):
    """The frame as players show it: turned `rotation` degrees counter-clockwise (multiples of 90)."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def soundtrack(opened, max_seconds=MAX_SECONDS):
    """An OpenVideo's sound as 16 kHz mono blocks, decoded as they are read (media.mono_blocks), or None when
    it has no audio track (the caller's `no_speech`); read after its frames, while the video is open.

    An MP4 or MOV (HEADER_COMPLETE) is read again from its start in the same container: seeking back there
    gives the samples a fresh open gives (in a WebM it loses the first Opus packet). Other formats, and a
    container that cannot seek back, are opened again with media.QUICK_PROBE: the sound is decoded at the
    rate and channels its frames state, so a full probe would add nothing.
    """
    if not opened.info.has_audio:
        return None
    chunks = None
    if opened.container.format.name in HEADER_COMPLETE:
        with contextlib.suppress(av.FFmpegError):
            opened.container.seek(0)
            chunks = media.container_audio_chunks(opened.container, opened.name, max_seconds)
    if chunks is None:
        chunks = media.audio_chunks(opened.source, opened.name, max_seconds, media.QUICK_PROBE)
    return media.mono_blocks(chunks, SAMPLE_RATE, opened.name, max_seconds)
