"""Hypothesis fuzzing of the decoders and the upload API with random and mutated files.

Mutations of valid PNG, JPEG, BMP, WebP, WAV, FLAC, M4A and Ogg Opus files: lying header sizes and fields,
flipped bytes, truncation. Every example must decode to a valid array or raise InputError,
without a warning on the way (a user would see it printed); the API must answer 200 or a 4xx
JSON error, never a 5xx. Deterministic (derandomize).
"""

import io
import struct
import warnings
import zlib

import numpy as np
from hypothesis import example, given, settings, strategies as st

from emorec import media
from emorec.audio import load_audio
from emorec.errors import InputError
from emorec.image import MAX_PIXELS, load_image
from emorec.web import create_app

from conftest import gradient, image_bytes, tone, wav_bytes

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None)
RANGES = {"B": (0, 2 ** 8 - 1), "H": (0, 2 ** 16 - 1), "I": (0, 2 ** 32 - 1), "i": (-2 ** 31, 2 ** 31 - 1)}


def patched(data, offset, fmt, *values):
    """`data` with header fields at `offset` overwritten (a lie)."""
    data = bytearray(data)
    data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    return data


def sof_offsets(jpeg):
    """(offset, format) of a baseline JPEG's SOF0 precision, height, width and component count."""
    marker = jpeg.index(b"\xff\xc0")
    return [(marker + 4, ">B"), (marker + 5, ">H"), (marker + 7, ">H"), (marker + 9, ">B")]


PICTURE = gradient(24, 32)
JPEG = image_bytes(PICTURE, "JPEG", quality=90)
# name: (valid file, [(offset, struct format) of header fields to lie about])
IMAGES = {
    "png": (image_bytes(PICTURE), [(16, ">I"), (20, ">I"), (24, ">B"), (25, ">B"), (28, ">B"), (33, ">I")]),
    "jpeg": (JPEG, sof_offsets(JPEG)),
    "bmp": (image_bytes(PICTURE, "BMP"), [(2, "<I"), (10, "<I"), (14, "<I"), (18, "<i"), (22, "<i"),
                                          (28, "<H"), (30, "<I"), (34, "<I")]),
    "webp": (image_bytes(PICTURE, "WEBP", quality=80), [(4, "<I"), (16, "<I")]),
}
M4A = media.encode_audio(tone(0.2), 16000, "aac", 32000)


def mp4_fields(data):
    """Timescale and duration of an MP4's movie and track headers; channels, bits and rate of its sample entry."""
    mvhd, mdhd, mp4a = (data.index(box) for box in (b"mvhd", b"mdhd", b"mp4a"))
    return [(mvhd + 16, ">I"), (mvhd + 20, ">I"), (mdhd + 16, ">I"), (mdhd + 20, ">I"), (mp4a + 20, ">H"),
            (mp4a + 22, ">H"), (mp4a + 28, ">I")]


WAV_FIELDS = [(4, "<I"), (16, "<I"), (20, "<H"), (22, "<H"), (24, "<I"), (28, "<I"), (32, "<H"), (34, "<H"),
              (40, "<I")]
SOUNDS = {
    "pcm16": (wav_bytes(tone(0.25)), WAV_FIELDS),
    "float-stereo": (wav_bytes(tone(0.1, rate=22050, channels=2), 22050, "FLOAT"), WAV_FIELDS),
    "u8-8k": (wav_bytes(tone(0.2, rate=8000), 8000, "PCM_U8"), WAV_FIELDS),
    "flac": (wav_bytes(tone(0.2), format="FLAC"), [(18, ">I"), (22, ">I")]),
    "m4a": (M4A, mp4_fields(M4A)),
    # OpusHead: channel count, pre-skip, input rate; Ogg page: granule position, page sequence number
    "opus": (media.encode_audio(tone(0.2), 16000, "opus", 24000), [(37, "<B"), (38, "<H"), (40, "<I"),
                                                                  (6, "<I"), (18, "<I")]),
}
# Found by this fuzzing: a BMP claiming 2,000,000 x 1 pixels (under the pixel cap) made cv2.imdecode raise
# cv2.error (OpenCV refuses any side over 2**20) instead of InputError; a 500 through the API.
BMP_TOO_WIDE = bytes(patched(image_bytes(gradient(2, 2), "BMP"), 18, "<ii", 2_000_000, 1))
# And a PNG whose IDAT chunk claims 4 GB: cv2.imdecode reserved 4.25 GB for 10 s before failing.
PNG_LYING_CHUNK = bytes(patched(image_bytes(gradient(32, 24), "PNG"), 33, ">I", 0xFFFFFFFE))
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"RIFF\x00\x10\x00\x00WEBPVP8 ",
         b"RIFF\x00\x10\x00\x00WAVEfmt ", b"fLaC", b"OggS", b"GIF89a", b"II*\x00",
         b"\x00\x00\x00\x1cftypM4A ", b"ID3\x04", b"\x1a\x45\xdf\xa3"]


@st.composite
def mutated(draw, seeds, lies=3, flips=8):
    """A seed file with up to `lies` header fields overwritten, up to `flips` bytes changed, maybe truncated."""
    data, fields = seeds[draw(st.sampled_from(sorted(seeds)))]
    for offset, fmt in draw(st.lists(st.sampled_from(fields), max_size=lies)):
        data = patched(data, offset, fmt, draw(st.integers(*RANGES[fmt[-1]])))
    data = bytearray(data)
    if data.startswith(b"\x89PNG"):  # a lie with a valid CRC gets past the chunk check
        data[29:33] = struct.pack(">I", zlib.crc32(data[12:29]))
    for position, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)),
                                         max_size=flips)):
        data[position] = value
    return bytes(data[:draw(st.integers(0, len(data)))] if draw(st.booleans()) else data)


def noise():
    """Random bytes, often behind a known file signature."""
    return st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=2048))


def decoded(decode, data):
    """decode(data) with every warning raised as an error; None when the input is refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return decode(data)
    except InputError:
        return None


def check_image(data):
    image = decoded(load_image, data)
    if image is None:
        return
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3 and 0 < image.shape[0] * image.shape[1] <= MAX_PIXELS


def check_audio(data):
    waveform = decoded(load_audio, data)
    if waveform is None:
        return
    assert isinstance(waveform, np.ndarray) and waveform.dtype == np.float32 and waveform.ndim == 1
    assert len(waveform) > 0 and np.all(np.isfinite(waveform)) and np.all(np.abs(waveform) <= 1)


@FUZZ
@given(noise())
@example(b"II*\x00\x00\x00\x00\x01")  # a TIFF header whose EXIF block is cut short: Pillow warns
def test_image_random_bytes(data):
    check_image(data)


@FUZZ
@given(mutated(IMAGES))
@example(BMP_TOO_WIDE)
@example(PNG_LYING_CHUNK)
def test_image_mutations(data):
    check_image(data)


@FUZZ
@given(noise())
def test_audio_random_bytes(data):
    check_audio(data)


@FUZZ
@given(mutated(SOUNDS))
def test_audio_mutations(data):
    check_audio(data)


def test_seeds_are_valid():
    """The mutations start from files that decode."""
    for data, _ in IMAGES.values():
        assert load_image(data).shape[:2] == PICTURE.shape[:2]
    for data, _ in SOUNDS.values():
        assert len(load_audio(data)) > 0


# No lies in audio headers here: a lied-down sample rate makes minutes of audio, slow through YAMNet.
@settings(FUZZ, max_examples=40)
@given(image=st.none() | mutated(IMAGES, lies=1, flips=4), audio=st.none() | mutated(SOUNDS, lies=0, flips=4),
       crops=st.sampled_from(["", "1", "0", "maybe"]), weights=st.sampled_from(["", "face=1,speech=1", "face=-1"]))
@example(image=BMP_TOO_WIDE, audio=None, crops="", weights="")
@example(image=PNG_LYING_CHUNK, audio=None, crops="", weights="")
def test_api_answers_fuzzed_uploads_without_server_errors(predictor, image, audio, crops, weights):
    client = create_app(predictor=predictor).test_client()
    fields = {name: (io.BytesIO(data), f"{name}.bin") for name, data in (("image", image), ("audio", audio))
              if data is not None}
    response = client.post("/api/predict", data={**fields, "crops": crops, "weights": weights},
                           content_type="multipart/form-data")
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.get_data(as_text=True)
    body = response.get_json()
    assert ("fusion" in body) if response.status_code == 200 else set(body) == {"error"}
