"""The video reader: sampled frames with true timestamps, upright, lazily; limits; the sound track.

Synthetic clips are written here with PyAV (rotation metadata, a variable frame rate, no audio);
the real ones are the four RAVDESS takes in ../shared/samples/video.
"""

import io
import tracemalloc

import av
import cv2
import numpy as np
import pytest

from av.video.frame import PictureType

from emorec import media, video
from emorec.errors import InputError

from conftest import (SAMPLES, chirp, gradient, media_bytes, media_opens, mp4_claiming, mp4_refilled, shared,
                      soundtrack_of, write)

VIDEOS = SAMPLES / "video"
TAKE = VIDEOS / "01-01-03-01-01-02-05.mp4"  # happy, face and voice
SILENT_TAKE = VIDEOS / "02-01-06-01-01-01-05.mp4"  # the video-only take: a silent audio track


def numbered(count, height=32, width=48):
    """Frames whose grey level tells their index (20 levels apart), the left half white."""
    frames = []
    for index in range(count):
        frame = np.full((height, width, 3), 20 + 20 * index, np.uint8)
        frame[:, :width // 2] = 255
        frames.append(frame)
    return frames


def index_of(frame):
    """The index `numbered` gave a frame, read back from its right half."""
    return round((float(frame[:, frame.shape[1] * 3 // 4].mean()) - 20) / 20)


CLIP = media_bytes("mp4", chirp(2.0), frames=numbered(10), fps=5)  # 2 s, 5 frames/s, with sound


# ---- real takes -------------------------------------------------------------------------

def test_real_take_at_5_fps():
    path = shared(TAKE)
    info = video.video_info(path)
    assert (info.width, info.height, info.frames, info.has_audio) == (1280, 720, 97, True)
    assert info.fps == pytest.approx(29.97, abs=0.01) and info.seconds == pytest.approx(3.24, abs=0.01)
    sampled = list(video.read_frames(path, fps=5))
    times = [seconds for seconds, _ in sampled]
    assert len(sampled) == 17  # 0, 0.2, ... 3.2 s
    # The first frame at or after each 0.2 s instant: never more than one frame period late.
    assert all(0 <= seconds - index / 5 < 1 / 29.97 for index, seconds in enumerate(times))
    for _, frame in sampled:
        assert frame.shape == (720, 1280, 3) and frame.dtype == np.uint8 and frame.std() > 10
    assert len(soundtrack_of(path)) == pytest.approx(3.24 * 16000, abs=200)


def test_large_frames_scaled_down_while_converted():
    path = shared(TAKE)
    full = next(video.read_frames(path))[1]
    small = next(video.read_frames(path, max_side=640))[1]
    assert small.shape == (360, 640, 3)
    reference = cv2.resize(full, (640, 360), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reference).mean() < 2  # the same picture, not a crop
    (_, rotated), = video.read_frames(media_bytes("mp4", frames=numbered(1), rotation=90), max_side=24)
    assert rotated.shape == (24, 16, 3)  # scaled 48x32 -> 24x16, then turned upright


def test_one_reformatter_gives_each_frames_own_conversion():
    """The reformatter reused across the frames, on FFmpeg's threads or one, gives the pixels of a conversion
    of each frame alone."""
    clip = shared(TAKE).read_bytes()
    with av.open(io.BytesIO(clip)) as container:
        alone = [frame.to_ndarray(format="bgr24", **video._scaled(frame.width, frame.height, 640))
                 for frame in container.decode(video=0)]
    for threads in (0, 1):
        reused = [frame for _, frame in video.read_frames(clip, fps=None, max_side=640, threads=threads)]
        assert len(reused) == len(alone) == 97
        for a, b in zip(reused, alone):
            np.testing.assert_array_equal(a, b)


def test_every_frame_when_fps_is_none():
    times = [seconds for seconds, _ in video.read_frames(shared(TAKE), fps=None)]
    assert len(times) == 97 and times[0] == 0
    np.testing.assert_allclose(np.diff(times), 1001 / 30000, atol=1e-4)


def test_silent_take_has_a_silent_track():
    soundtrack = soundtrack_of(shared(SILENT_TAKE))
    assert len(soundtrack) > 3 * 16000 and not soundtrack.any()


# ---- synthetic clips --------------------------------------------------------------------

def test_frames_are_bgr_with_timestamps_from_path_and_bytes(tmp_path):
    from_bytes = list(video.read_frames(CLIP, fps=None))
    from_path = list(video.read_frames(write(tmp_path, "clip.mp4", CLIP), fps=None))
    assert [seconds for seconds, _ in from_bytes] == pytest.approx([index / 5 for index in range(10)])
    assert [index_of(frame) for _, frame in from_bytes] == list(range(10))
    for (_, a), (_, b) in zip(from_bytes, from_path):
        np.testing.assert_array_equal(a, b)
    red = np.zeros((32, 48, 3), np.uint8)
    red[..., 0] = 255  # RGB red
    (_, frame), = video.read_frames(media_bytes("mp4", frames=[red]), fps=None)
    assert frame[..., 2].mean() > 200 and frame[..., 0].mean() < 50  # BGR: red is the last channel


@pytest.mark.parametrize("rotation, white", [(0, "left"), (90, "bottom"), (-90, "top"), (180, "right")])
def test_rotation_metadata_is_honoured(rotation, white):
    """Frames come out as players show them: turned `rotation` degrees counter-clockwise."""
    clip = media_bytes("mp4", frames=numbered(3), rotation=rotation)
    frames = [frame for _, frame in video.read_frames(clip, fps=None)]
    assert len(frames) == 3
    for frame in frames:
        assert frame.shape[:2] == ((32, 48) if rotation in (0, 180) else (48, 32))
        height, width = frame.shape[:2]
        halves = {"left": frame[:, :width // 2], "right": frame[:, width // 2:],
                  "top": frame[:height // 2], "bottom": frame[height // 2:]}
        assert halves[white].mean() > 240
        opposite = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[white]
        assert halves[opposite].mean() < 200


def test_variable_frame_rate_keeps_true_timestamps():
    times = [0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.0, 1.05, 1.9, 2.0]
    clip = media_bytes("mp4", frames=numbered(10), times=times)
    every = list(video.read_frames(clip, fps=None))
    assert [seconds for seconds, _ in every] == pytest.approx(times)
    # At 5 frames/s: the first frame at or after 0, 0.2, 0.4 ... 2.0 s, each yielded once.
    sampled = list(video.read_frames(clip, fps=5))
    assert [seconds for seconds, _ in sampled] == pytest.approx([0, 0.5, 0.6, 1.0, 1.9, 2.0])
    assert [index_of(frame) for _, frame in sampled] == [0, 3, 5, 6, 8, 9]


def test_pictures_never_taken_are_not_decoded_and_the_taken_ones_are_unchanged(monkeypatch):
    """30 frames/s with B-frames, sampled at 5 frames/s: the non-reference B-frames before each sampling
    instant are skipped by the decoder, and the frames taken, with their timestamps, are those that
    decoding every picture gives."""
    frames = [np.roll(gradient(96, 128), 4 * index, axis=1) for index in range(30)]
    clip = media_bytes("mp4", frames=frames, fps=30)  # libx264's default preset: B-frames
    kinds = []
    decoded_frames = media.decoded_frames

    def counted(*args, **kwargs):
        for frame in decoded_frames(*args, **kwargs):
            kinds.append(PictureType(frame.pict_type).name)
            yield frame
    monkeypatch.setattr(media, "decoded_frames", counted)
    every = dict(video.read_frames(clip, fps=None))
    assert len(kinds) == 30 and "B" in kinds
    kinds.clear()
    sampled = list(video.read_frames(clip, fps=5))
    assert [seconds for seconds, _ in sampled] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    for seconds, frame in sampled:
        np.testing.assert_array_equal(frame, every[seconds])
    assert len(kinds) < 25  # of 30 (every picture decoded without the skipping)


@pytest.mark.parametrize("format, video_codec, audio_codec, opens", [
    ("mp4", "libx264", "aac", 1), ("mov", "mpeg4", "pcm_s16le", 1), ("matroska", "libx264", "libopus", 3),
    ("webm", "libvpx", "libopus", 3), ("avi", "mpeg4", "libmp3lame", 3)])
def test_the_soundtrack_read_after_the_frames_is_the_files_sound(format, video_codec, audio_codec, opens,
                                                                  monkeypatch):
    """Read back in the same container (MP4, MOV: one open in all) or opened again with the quick probe (the
    others, after a quick and a full open for the header): the samples a fresh, fully probed decoding gives."""
    clip = media_bytes(format, chirp(1.0), frames=numbered(5), fps=5, video_codec=video_codec,
                       audio_codec=audio_codec)
    expected = media.decode_audio(clip, 16000)
    opened = media_opens(monkeypatch)
    np.testing.assert_array_equal(soundtrack_of(clip), expected)
    assert len(opened) == opens


def test_a_soundtrack_that_cannot_seek_back_is_opened_again(monkeypatch):
    def refuse(*args, **kwargs):
        raise av.FFmpegError(22, "seek refused")
    monkeypatch.setattr(av.container.InputContainer, "seek", refuse)
    expected = media.decode_audio(CLIP, 16000)
    opened = media_opens(monkeypatch)
    np.testing.assert_array_equal(soundtrack_of(CLIP), expected)
    assert opened == [("video", media.QUICK_PROBE), ("audio", media.QUICK_PROBE)]


@pytest.mark.parametrize("clip", [
    lambda: shared(TAKE).read_bytes(),
    lambda: media_bytes("mp4", frames=[np.roll(gradient(96, 128), 4 * index, axis=1) for index in range(30)],
                        fps=30),  # B-frames
    lambda: media_bytes("mp4", frames=numbered(10), times=[0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.0, 1.05, 1.9, 2.0]),
    lambda: media_bytes("mov", chirp(1.0), frames=numbered(5), fps=5, video_codec="mpeg4", audio_codec="pcm_s16le"),
    lambda: media_bytes("mp4", frames=numbered(3), rotation=90)], ids=["take", "b-frames", "vfr", "mov", "rotated"])
def test_quickly_probed_mp4_and_mov_give_the_fully_probed_header_and_frames(clip, monkeypatch):
    clip = clip()
    with video.open_video(clip) as opened:
        quick = opened.info, list(video.sampled_frames(opened, fps=None))
    monkeypatch.setattr(video, "HEADER_COMPLETE", frozenset())
    with video.open_video(clip) as opened:
        full = opened.info, list(video.sampled_frames(opened, fps=None))
    assert quick[0] == full[0] and [seconds for seconds, _ in quick[1]] == [seconds for seconds, _ in full[1]]
    for (_, a), (_, b) in zip(quick[1], full[1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("format, probes", [("mp4", [media.QUICK_PROBE]), ("matroska", [media.QUICK_PROBE, None])])
def test_only_formats_with_complete_headers_keep_the_quick_probe(format, probes, monkeypatch):
    clip = media_bytes(format, frames=numbered(3))
    opened = media_opens(monkeypatch)
    assert video.video_info(clip).width == 48
    assert opened == [("video", probe) for probe in probes]


def test_no_audio_track_is_none_not_an_error():
    clip = media_bytes("mp4", frames=numbered(3))
    assert video.video_info(clip).has_audio is False
    assert soundtrack_of(clip) is None
    assert [seconds for seconds, _ in video.read_frames(clip)] == pytest.approx([0, 0.2])  # of 0, 0.1, 0.2 s


def test_frames_are_read_lazily():
    """Consuming the frames one at a time keeps about one frame in Python memory, not the video."""
    frames = [np.roll(gradient(240, 320), 8 * index, axis=1) for index in range(60)]
    clip = media_bytes("mp4", frames=frames, fps=30)
    tracemalloc.start()
    count = sum(1 for _ in video.read_frames(clip, fps=None))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 60
    assert peak < 4 * frames[0].nbytes


# ---- limits and bad input ---------------------------------------------------------------

def test_limits_are_checked_from_the_header(monkeypatch):
    with pytest.raises(InputError, match=r"^video upload: video is 2 s long, over the 1 s limit$"):
        next(video.read_frames(CLIP, max_seconds=1))
    monkeypatch.setattr(video, "MAX_PIXELS", 1000)
    with pytest.raises(InputError, match=r"^video upload: video is 48x32, over the 1000 pixel limit$"):
        video.video_info(CLIP)
    monkeypatch.setattr(video, "MAX_PIXELS", 10 ** 6)
    monkeypatch.setattr(video, "MAX_FRAMES", 5)
    with pytest.raises(InputError, match=r"^video upload: video has 10 frames, over the 5 frame limit$"):
        next(video.read_frames(CLIP))


def test_limits_hold_while_decoding(monkeypatch):
    liar = mp4_claiming(CLIP, 0.5)
    assert video.video_info(liar).seconds == pytest.approx(0.5)
    with pytest.raises(InputError, match="over the 1 s limit \\(longer than its header says\\)"):
        list(video.read_frames(liar, max_seconds=1))
    unknown_count = media_bytes("matroska", frames=numbered(10))  # Matroska states no frame count
    assert video.video_info(unknown_count).frames == 0
    monkeypatch.setattr(video, "MAX_FRAMES", 5)
    with pytest.raises(InputError, match="over the 5 frame limit \\(more frames than its header says\\)"):
        list(video.read_frames(unknown_count))


@pytest.mark.parametrize("data, message", [
    (CLIP[:len(CLIP) // 2], "not a readable video file"),  # the index (moov) is at the end
    (b"\x00\x00\x00\x18ftypmp42" + bytes(64), "not a readable video file"),
    (mp4_refilled(CLIP, bytes), r"video data is corrupt \(\d+ of \d+ packets unreadable\)"),
    (media.encode_audio(chirp(0.5), 16000, "aac", 32000), "no video track"),
    (b"", "file is empty"),
])
def test_bad_videos_are_clear_input_errors(data, message):
    with pytest.raises(InputError, match=f"^video upload: {message}"):
        list(video.read_frames(data))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        video.video_info(tmp_path / "nothing.mp4")
