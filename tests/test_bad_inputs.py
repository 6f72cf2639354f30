"""Broken, hostile and odd-but-valid inputs, through the Predictor and the command line.

Every case either fails with InputError (exit code 2 and one clean `emorec: error:` line on the
command line) whose message names the input, or gives a well-formed answer: never any other
exception. All inputs are generated here.
"""

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from emorec.cli import main
from emorec.errors import InputError
from emorec.labels import LABELS

from conftest import (assert_valid_result, error_lines, gradient, image_bytes, png_chunk, png_with_header,
                      run_cli, tone, wav_bytes, wav_header, write)

OK = None  # expected outcome: a well-formed result
RNG_BYTES = np.random.default_rng(1234).integers(0, 256, 4096, dtype=np.uint8).tobytes()
UNREADABLE_IMAGE = "not a readable image"
UNREADABLE_AUDIO = "not a readable audio file"
CORRUPT_AUDIO = "audio data is corrupt"


def png():
    return image_bytes(gradient(64, 64))


def jpeg():
    return image_bytes(gradient(64, 64), "JPEG", quality=90)


def wav():
    return wav_bytes(tone(0.5))


def jpeg_with_size(width, height):
    """A JPEG whose SOF0 frame header claims width x height."""
    data = bytearray(jpeg())
    marker = data.index(b"\xff\xc0")
    data[marker + 5:marker + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_with_size(width, height):
    data = bytearray(image_bytes(gradient(8, 8), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def png_bad_crc():
    data = bytearray(png())
    data[29:33] = b"\x00\x00\x00\x00"  # IHDR's CRC
    return bytes(data)


def png_bad_idat():
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"not zlib data at all")
            + png_chunk(b"IEND", b""))


def exif_rotated():
    exif = Image.Exif()
    exif[0x0112] = 6
    return image_bytes(gradient(20, 40), "JPEG", exif=exif.tobytes())


def wav_with(offset, fmt, value):
    data = bytearray(wav())
    data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(data)


# (id, field, file name, bytes, expected message or OK)
CASES = [
    # -- images: empty, truncated, random, wrong type
    ("image-empty", "image", "empty.png", b"", "file is empty"),
    ("image-truncated-png", "image", "cut.png", png()[:len(png()) // 2], "image data is corrupt or truncated"),
    ("image-png-signature-only", "image", "sig.png", b"\x89PNG\r\n\x1a\n", UNREADABLE_IMAGE),
    ("image-truncated-jpeg-header", "image", "cut.jpg", jpeg()[:40], UNREADABLE_IMAGE),
    ("image-jpeg-soi-garbage", "image", "soi.jpg", b"\xff\xd8\xff" + RNG_BYTES, UNREADABLE_IMAGE),
    ("image-random-bytes", "image", "random.png", RNG_BYTES, UNREADABLE_IMAGE),
    ("image-is-wav", "image", "clip.png", wav(), UNREADABLE_IMAGE),
    ("image-is-text", "image", "notes.jpg", b"Just some text.\n" * 20, UNREADABLE_IMAGE),
    ("image-is-html", "image", "page.webp", b"<!doctype html><html><body>hi</body></html>", UNREADABLE_IMAGE),
    ("image-is-zip", "image", "archive.png", b"PK\x03\x04" + RNG_BYTES[:200], UNREADABLE_IMAGE),
    ("image-gif", "image", "anim.png", image_bytes(gradient(16, 16), "GIF"), "unsupported image format GIF"),
    ("image-tiff", "image", "scan.png", image_bytes(gradient(16, 16), "TIFF"), "unsupported image format TIFF"),
    ("image-truncated-jpeg-body", "image", "cut-body.jpg", jpeg()[:len(jpeg()) * 3 // 4],
     "image data is corrupt or truncated"),
    ("image-bad-idat", "image", "idat.png", png_bad_idat(), "image data is corrupt or truncated"),
    ("image-bad-crc", "image", "crc.png", png_bad_crc(), UNREADABLE_IMAGE),
    # -- images: lying headers
    ("image-png-claims-64x64", "image", "liar.png", png_with_header(64, 64), "image data is corrupt or truncated"),
    ("image-png-claims-8000x8000", "image", "bomb.png", png_with_header(8000, 8000), "over the 40,000,000-pixel limit"),
    ("image-png-claims-100000x100000", "image", "bomb2.png", png_with_header(100_000, 100_000), "too large"),
    ("image-png-claims-zero-size", "image", "zero.png", png_with_header(0, 0), UNREADABLE_IMAGE),
    ("image-jpeg-claims-30000x30000", "image", "bomb.jpg", jpeg_with_size(30000, 30000), "over the 40,000,000"),
    ("image-jpeg-claims-zero-height", "image", "zero.jpg", jpeg_with_size(64, 0), UNREADABLE_IMAGE),
    ("image-bmp-claims-20000x20000", "image", "bomb.bmp", bmp_with_size(20000, 20000), "over the 40,000,000"),
    # -- images: odd but valid
    ("image-png-named-jpg", "image", "really-png.jpg", png(), OK),
    ("image-no-suffix-known-content", "image", "photo.JPEG", jpeg(), OK),
    ("image-1x1", "image", "dot.png", image_bytes(np.zeros((1, 1, 3), np.uint8)), OK),
    ("image-1x5000", "image", "strip.png", image_bytes(np.zeros((1, 5000), np.uint8)), OK),
    ("image-5000x1", "image", "column.bmp", image_bytes(np.zeros((5000, 1), np.uint8), "BMP"), OK),
    ("image-16bit", "image", "deep.png", image_bytes(np.full((20, 20), 60000, np.uint16)), OK),
    ("image-exif-rotated", "image", "rotated.jpg", exif_rotated(), OK),
    ("image-trailing-garbage", "image", "tail.png", png() + RNG_BYTES, OK),
    # -- audio: empty, truncated, random, wrong type
    ("audio-empty", "audio", "empty.wav", b"", "file is empty"),
    ("audio-riff-only", "audio", "riff.wav", b"RIFF", UNREADABLE_AUDIO),
    ("audio-truncated-fmt", "audio", "cut.wav", wav()[:20], UNREADABLE_AUDIO),
    ("audio-header-only", "audio", "header.wav", wav()[:44], "audio holds no samples"),
    ("audio-header-only-claims-data", "audio", "liar.wav", wav_header(32000), "audio holds no samples"),
    ("audio-zero-frames", "audio", "zero.wav", wav_bytes(np.zeros(0)), "audio holds no samples"),
    ("audio-random-bytes", "audio", "random.wav", RNG_BYTES, UNREADABLE_AUDIO),
    ("audio-is-png", "audio", "photo.wav", png(), UNREADABLE_AUDIO),
    ("audio-is-jpeg", "audio", "photo.flac", jpeg(), UNREADABLE_AUDIO),
    ("audio-is-text", "audio", "notes.wav", b"Just some text.\n" * 20, UNREADABLE_AUDIO),
    ("audio-rate-zero", "audio", "rate0.wav", wav_with(24, "<I", 0), UNREADABLE_AUDIO),
    ("audio-no-channels", "audio", "mono0.wav", wav_with(22, "<H", 0), CORRUPT_AUDIO),
    ("audio-unknown-codec", "audio", "codec.wav", wav_with(20, "<H", 0x55), CORRUPT_AUDIO),  # MP3 in WAV, PCM data
    ("audio-rate-1hz", "audio", "slow.wav", wav_with(24, "<I", 1), "over the 600 s limit"),
    ("audio-too-short-after-resampling", "audio", "blip.wav", wav_bytes(np.full(10, 0.5), 1_000_000),
     "audio is too short"),
    # -- audio: lying headers and odd but valid
    ("audio-garbage-after-header", "audio", "noise.wav", wav_header(len(RNG_BYTES)) + RNG_BYTES, OK),
    ("audio-data-size-too-big", "audio", "long.wav", wav_with(40, "<I", 0x7FFFFFF0), OK),
    ("audio-riff-size-wrong", "audio", "riffsize.wav", wav_with(4, "<I", 12), OK),
    ("audio-odd-byte-count", "audio", "odd.wav", wav_header(1001) + RNG_BYTES[:1001], OK),
    ("audio-one-sample", "audio", "one.wav", wav_bytes(np.full(1, 0.5)), OK),
    ("audio-float-nan", "audio", "nan.wav", wav_bytes(np.full(1600, np.nan), subtype="FLOAT"), OK),
    ("audio-wav-named-flac", "audio", "clip.flac", wav(), OK),
    ("audio-8bit-8khz", "audio", "old.wav", wav_bytes(tone(0.3, rate=8000), 8000, "PCM_U8"), OK),
    ("audio-flac", "audio", "clip.FLAC", wav_bytes(tone(0.3), format="FLAC"), OK),
    ("audio-ogg", "audio", "clip.ogg", wav_bytes(tone(0.3), subtype="VORBIS", format="OGG"), OK),
]
IDS = [case[0] for case in CASES]
ERRORS = [case for case in CASES if case[4] is not OK]


def test_enough_cases():
    assert len(CASES) >= 30 and len(ERRORS) >= 30
    assert len(set(IDS)) == len(IDS)


def check_result(result, field):
    part = result["face" if field == "image" else "speech"]
    if field == "image":
        assert part["status"] in ("ok", "no_face")
        if part["status"] == "ok":
            assert_valid_result(part, LABELS)
    else:
        assert part["status"] in ("ok", "no_speech")
        assert_valid_result(part, LABELS)
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("case_id, field, name, data, expected", CASES, ids=IDS)
def test_predictor_path(predictor, tmp_path, case_id, field, name, data, expected):
    path = write(tmp_path, name, data)
    if expected is OK:
        check_result(predictor.predict(**{field: path}), field)
    else:
        with pytest.raises(InputError) as error:
            predictor.predict(**{field: path})
        assert expected in str(error.value)
        assert str(error.value).startswith(f"{path}: ")


@pytest.mark.parametrize("case_id, field, name, data, expected", CASES, ids=IDS)
def test_predictor_bytes(predictor, case_id, field, name, data, expected):
    """Uploads arrive as bytes: the same outcome, named as an upload."""
    if expected is OK:
        check_result(predictor.predict(**{field: data}), field)
    else:
        with pytest.raises(InputError, match="upload: ") as error:
            predictor.predict(**{field: data})
        assert expected in str(error.value)


@pytest.mark.parametrize("case_id, field, name, data, expected", CASES, ids=IDS)
def test_cli_predict(cli_predictor, capsys, tmp_path, case_id, field, name, data, expected):
    path = write(tmp_path, name, data)
    code = main(["predict", f"--{field}", str(path), "--json"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if expected is OK:
        assert code == 0
        check_result(json.loads(captured.out), field)
    else:
        assert code == 2 and captured.out == ""
        (line,) = error_lines(captured.err)
        assert line.startswith(f"emorec: error: {path}: ") and expected in line
        assert len(captured.err.strip().splitlines()) == 1


def test_cli_batch_subprocess_over_every_case(tmp_path):
    """One real `emorec batch` over all the cases: a row each, the bad ones as error rows."""
    folder = tmp_path / "cases"
    for case_id, field, name, data, expected in CASES:
        write(folder / case_id, name, data)
    out = tmp_path / "rows.jsonl"
    done = run_cli("batch", folder, "--out", out, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    rows = {row["path"].split("/cases/")[1].split("/")[0]: row
            for row in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == set(IDS)
    for case_id, field, name, data, expected in CASES:
        row = rows[case_id]
        if expected is OK:
            assert row["status"] in ("ok", "no_face", "no_speech"), (case_id, row)
        else:
            assert row["status"] == "error", (case_id, row)
            assert expected in row["error"] and row["error"].startswith(row["path"]), (case_id, row)
    assert f"{len(CASES)} inputs, {len(ERRORS)} failed" in done.stderr


SUBPROCESS_CASES = [case for case in ERRORS if case[0] in ("image-random-bytes", "image-png-claims-64x64",
                                                            "audio-is-png", "audio-header-only")]


@pytest.mark.parametrize("case_id, field, name, data, expected", SUBPROCESS_CASES,
                         ids=[case[0] for case in SUBPROCESS_CASES])
def test_cli_predict_subprocess(tmp_path, case_id, field, name, data, expected):
    path = write(tmp_path, name, data)
    done = run_cli("predict", f"--{field}", path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stdout == ""
    (line,) = error_lines(done.stderr)
    assert line.startswith(f"emorec: error: {path}: ") and expected in line


@pytest.mark.parametrize("field", ["image", "audio"])
def test_missing_and_directory_paths(predictor, tmp_path, field):
    for path in (tmp_path / "nothing-here", tmp_path):
        with pytest.raises(InputError, match=f"^{path}: no such file$"):
            predictor.predict(**{field: path})


def test_bad_image_with_good_audio_still_fails_cleanly(predictor, tmp_path, clip):
    with pytest.raises(InputError, match="not a readable image"):
        predictor.predict(image=write(tmp_path, "x.png", RNG_BYTES), audio=clip)


def test_large_valid_png_under_the_cap_decodes(predictor):
    # 3000x1000 of zeros compresses to a few KB: small files may still be big images, and
    # those under the pixel cap are decoded normally.
    raw = zlib.compress(b"\x00" * (1 + 3000) * 1000, 9)
    ihdr = struct.pack(">IIBBBBB", 3000, 1000, 8, 0, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", raw)
            + png_chunk(b"IEND", b""))
    assert len(data) < 10_000
    result = predictor.predict(image=data)
    assert result["face"]["status"] == "no_face"
