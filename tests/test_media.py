"""Media decoding through FFmpeg (emorec.media, load_audio) and the codec round trips.

Every file is a chirp written here with PyAV (MP3, M4A, Opus in Ogg and WebM, FLAC, MP4, MOV,
MKV, AVI, stereo 48 kHz, video without audio, truncated, garbled, lying about its length), plus
one real nEMO Opus file, one RAVDESS WAV and the sample videos from ../shared.
"""

import io

import av
import numpy as np
import pytest
import soundfile

from emorec import media
from emorec.audio import SAMPLE_RATE, load_audio
from emorec.errors import InputError
from emorec.web import create_app

from conftest import (CLIP, SAMPLES, SHARED, chirp, gradient, media_bytes, mp4_claiming, mp4_refilled, shared,
                      wav_bytes, write)

SWEEP = chirp(2.0)  # 2 s, 200-3000 Hz, 16 kHz
FRAMES = [gradient(32, 48)] * 20  # 2 s of video at 10 frames/s
NEMO = SHARED / "data" / "nemo_pl" / "samples" / "EB0_anger_1.opus"
VIDEOS = SAMPLES / "video"
RNG = np.random.default_rng(7)


def correlation(decoded, original=SWEEP):
    """Correlation at lag 0 over the original's length (a shifted decode scores near 0 on a chirp)."""
    return float(np.corrcoef(media.fit_length(decoded, len(original)), original)[0, 1])


def probe(data):
    """(container format, [codec of each stream]) as FFmpeg sees the file."""
    with av.open(io.BytesIO(data)) as container:
        return container.format.name, [stream.codec_context.name for stream in container.streams]


# name: (file bytes, FFmpeg's container name, codecs in it, samples an encoder may add at the end)
FILES = {
    "mp3": (media.encode_audio(SWEEP, SAMPLE_RATE, "mp3", 64000), "mp3", ["mp3float"], 0),
    "m4a": (media.encode_audio(SWEEP, SAMPLE_RATE, "aac", 64000), "mov", ["aac"], 1024),
    "ogg-opus": (media.encode_audio(SWEEP, SAMPLE_RATE, "opus", 32000), "ogg", ["opus"], 0),
    "webm-opus": (media.encode_audio(SWEEP, SAMPLE_RATE, "opus", 32000, "webm"), "matroska", ["opus"], 0),
    "flac": (media.encode_audio(SWEEP, SAMPLE_RATE, "flac"), "flac", ["flac"], 0),
    "mp4-h264-aac": (media_bytes("mp4", SWEEP, frames=FRAMES), "mov", ["h264", "aac"], 1024),
    "mov-h264-aac": (media_bytes("mov", SWEEP, frames=FRAMES), "mov", ["h264", "aac"], 1024),
    "mkv-h264-opus": (media_bytes("matroska", SWEEP, audio_codec="libopus", frames=FRAMES), "matroska",
                      ["h264", "opus"], 0),
    "avi-mpeg4-pcm": (media_bytes("avi", SWEEP, audio_codec="pcm_s16le", frames=FRAMES, video_codec="mpeg4"),
                      "avi", ["mpeg4", "pcm_s16le"], 0),
}
VIDEO_WITHOUT_AUDIO = media_bytes("mp4", frames=FRAMES)


def noise(size):
    return RNG.integers(0, 256, size, dtype=np.uint8).tobytes()


# ---- decoding ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", FILES)
def test_formats_decode_to_16k_mono_aligned(name, tmp_path):
    data, container, codecs, padding = FILES[name]
    found_container, found_codecs = probe(data)
    assert container in found_container.split(",") and found_codecs == codecs
    decoded = load_audio(data)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert len(SWEEP) <= len(decoded) <= len(SWEEP) + padding  # the encoder's delay is removed
    assert correlation(decoded) > 0.98
    np.testing.assert_array_equal(load_audio(write(tmp_path, f"clip.{name}", data)), decoded)  # path = bytes


def test_stereo_48k_is_averaged_and_resampled():
    left = chirp(2.0, rate=48000)
    decoded = load_audio(media_bytes("ipod", np.stack([left, np.zeros_like(left)], 1), rate=48000))
    assert len(SWEEP) <= len(decoded) <= len(SWEEP) + 1024 // 3 + 1
    assert correlation(decoded) > 0.98
    assert np.std(media.fit_length(decoded, len(SWEEP))) == pytest.approx(np.std(SWEEP) / 2, rel=0.05)


def test_video_without_audio_is_no_audio_track(tmp_path):
    assert probe(VIDEO_WITHOUT_AUDIO)[1] == ["h264"]
    path = write(tmp_path, "v.mp4", VIDEO_WITHOUT_AUDIO)
    for source, name in ((VIDEO_WITHOUT_AUDIO, "audio upload"), (path, path)):
        with pytest.raises(media.NoAudioTrack, match=f"^{name}: no audio track$") as error:
            load_audio(source)
        assert isinstance(error.value, InputError)


def test_header_duration_is_checked_before_decoding():
    data = mp4_refilled(media.encode_audio(chirp(3.0), SAMPLE_RATE, "aac", 32000), noise)
    with pytest.raises(InputError, match="corrupt"):
        load_audio(data)
    # Garbage audio, but the limit is told first: nothing was decoded.
    with pytest.raises(InputError, match=r"^audio upload: audio is 3 s long, over the 2 s limit$"):
        load_audio(data, max_seconds=2)


def test_a_file_longer_than_its_header_says_is_stopped_while_decoding():
    liar = mp4_claiming(media.encode_audio(chirp(6.0), SAMPLE_RATE, "aac", 32000), 1.0)
    with av.open(io.BytesIO(liar)) as container:
        assert media.header_seconds(container, container.streams.audio[0]) == pytest.approx(1.0)
    with pytest.raises(InputError, match="over the 3 s limit \\(longer than its header says\\)"):
        load_audio(liar, max_seconds=3)
    assert len(load_audio(liar, max_seconds=10)) >= 6 * SAMPLE_RATE  # decoding goes by the data


@pytest.mark.parametrize("data, message", [
    (FILES["m4a"][0][:len(FILES["m4a"][0]) // 2], "not a readable audio file"),  # its index is at the end
    (FILES["mp3"][0][:100], "not a readable audio file"),
    (mp4_refilled(FILES["m4a"][0], noise), r"audio data is corrupt \(\d+ of \d+ packets unreadable\)"),
    (FILES["m4a"][0][:32] + noise(4000), "not a readable audio file"),
    (b"ID3\x03" + bytes(6) + noise(4000), "not a readable audio file"),
    (b"OggS" + noise(4000), "not a readable audio file"),
    (b"\x1a\x45\xdf\xa3" + noise(4000), "not a readable audio file"),
    (media_bytes("mp4", frames=FRAMES)[:300], "not a readable audio file"),
    (FILES["ogg-opus"][0][:200], "not a readable audio file \\(the file ends too early\\)"),
    (b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", "not a readable audio file"),
    (b"ffconcat version 1.0\nfile /etc/passwd\n", "not a readable audio file"),
    (gradient(8, 8).tobytes() * 8, "not a readable audio file"),
], ids=["m4a-truncated", "mp3-header-only", "m4a-garbled-packets", "ftyp-then-garbage", "id3-then-garbage",
        "oggs-then-garbage", "matroska-magic-then-garbage", "mp4-cut-in-header", "ogg-cut-in-header",
        "hls-playlist", "ffconcat-list",
        "raw-pixels"])
def test_bad_media_is_a_clear_input_error(data, message):
    with pytest.raises(InputError, match=f"^audio upload: {message}"):
        load_audio(data)


@pytest.mark.parametrize("codec", ["aac", "mp3"])
def test_a_tag_that_is_not_utf8_is_read_past(codec):
    """The encoder tag ("Lavf...") with a byte that is not UTF-8: PyAV's metadata decoding raised
    UnicodeDecodeError (found by tests/test_fuzz.py)."""
    data = bytearray(media.encode_audio(SWEEP, SAMPLE_RATE, codec))
    data[data.index(b"Lavf") + 1] = 0xFF
    assert correlation(load_audio(bytes(data))[:len(SWEEP)], SWEEP) > 0.98


def test_truncated_streams_give_what_was_there():
    for name in ("mp3", "ogg-opus", "webm-opus"):
        data = FILES[name][0]
        decoded = load_audio(data[:len(data) // 2])
        assert 0.3 * len(SWEEP) < len(decoded) < 0.7 * len(SWEEP)
        assert correlation(decoded, SWEEP[:len(decoded)]) > 0.98


def test_ffmpeg_and_libsndfile_agree_on_wav_and_opus():
    wav = shared(CLIP)
    reference, rate = soundfile.read(wav, dtype="float32")
    assert rate == SAMPLE_RATE
    np.testing.assert_array_equal(load_audio(wav), reference)  # libsndfile, unchanged
    np.testing.assert_allclose(media.decode_audio(wav, SAMPLE_RATE), reference, atol=1e-6)  # FFmpeg: the same
    opus = shared(NEMO)  # real nEMO: Ogg Opus, 24 kHz
    header = soundfile.info(opus)
    assert (header.format, header.subtype, header.samplerate) == ("OGG", "OPUS", 24000)
    decoded = load_audio(opus)
    assert len(decoded) == pytest.approx(header.duration * SAMPLE_RATE, abs=2)
    by_libsndfile = media.mono_waveform([(soundfile.read(opus, dtype="float32", always_2d=True)[0], 24000)],
                                        SAMPLE_RATE, "nEMO", 600)
    assert correlation(decoded, by_libsndfile) > 0.97  # libopus decodes at 48 kHz for FFmpeg, 24 kHz here


@pytest.mark.parametrize("subtype, channels", [("PCM_U8", 1), ("PCM_16", 2), ("PCM_24", 1), ("PCM_32", 2),
                                               ("FLOAT", 1), ("DOUBLE", 2)])
def test_ffmpeg_sample_formats_match_libsndfile(subtype, channels):
    """FFmpeg hands over 8-bit unsigned, 16/32-bit integer and float samples, planar or packed: all scaled
    as libsndfile scales them."""
    samples = np.stack([SWEEP * (1 - 0.5 * channel) for channel in range(channels)], 1)
    data = wav_bytes(samples, SAMPLE_RATE, subtype)
    np.testing.assert_allclose(media.decode_audio(data, SAMPLE_RATE), load_audio(data), atol=1e-6)


@pytest.mark.parametrize("name, seconds", [("01-01-03-01-01-02-05.mp4", 3.24),
                                           ("02-01-06-01-01-01-05.mp4", 3.16)])
def test_sample_videos_audio_track(name, seconds):
    decoded = load_audio(shared(VIDEOS / name))  # 48 kHz stereo AAC in MP4
    assert len(decoded) == pytest.approx(seconds * SAMPLE_RATE, abs=0.01 * SAMPLE_RATE)
    silent = name.startswith("02-")  # the video-only take's track is silent
    assert (np.abs(decoded).max() == 0) == silent


# ---- codec round trips ------------------------------------------------------------------

@pytest.mark.parametrize("codec, bitrate, container, floor", [
    ("mp3", 32000, None, 0.97), ("aac", 32000, None, 0.97), ("opus", 24000, None, 0.97),
    ("opus", 24000, "webm", 0.97), ("mp3", 16000, None, 0.9), ("flac", None, None, 0.99999),
])
def test_codec_round_trip_keeps_length_and_alignment(codec, bitrate, container, floor):
    speech, rate = soundfile.read(shared(CLIP), dtype="float32")
    data = media.encode_audio(speech, rate, codec, bitrate, container)
    usual = {"mp3": "mp3", "aac": "mov", "opus": "ogg", "flac": "flac"}
    expected = "matroska" if container == "webm" else usual[codec]
    assert expected in probe(data)[0].split(",")
    if bitrate:
        assert len(data) * 8 / (len(speech) / rate) < 1.5 * bitrate  # about the asked bitrate, not lossless
    trip = media.codec_round_trip(speech, rate, codec, bitrate, container)
    assert trip.dtype == np.float32 and len(trip) == len(speech)
    assert correlation(trip, speech) > floor
    shifted = media.fit_length(trip[2:], len(speech))
    assert correlation(shifted, speech) < correlation(trip, speech) - 0.2  # aligned to the sample


def test_telephone_band():
    sweep = chirp(2.0, low=50, high=7900)
    line = media.telephone_band(sweep, SAMPLE_RATE)
    assert line.dtype == np.float32 and len(line) == len(sweep)
    spectrum = np.abs(np.fft.rfft(line)) ** 2
    frequencies = np.fft.rfftfreq(len(line), 1 / SAMPLE_RATE)
    outside = spectrum[(frequencies < 250) | (frequencies > 3500)].sum() / spectrum.sum()
    assert outside < 1e-3
    inside = (frequencies > 400) & (frequencies < 3300)
    gain = spectrum[inside].sum() / (np.abs(np.fft.rfft(sweep))[inside] ** 2).sum()
    assert gain == pytest.approx(1, abs=0.05)  # the band passes at full level; mu-law adds little noise


def test_unknown_codec_is_refused():
    with pytest.raises(InputError, match="unknown codec 'wma'"):
        media.encode_audio(SWEEP, SAMPLE_RATE, "wma")


# ---- through the API --------------------------------------------------------------------

def test_api_accepts_compressed_audio_and_documents_it(predictor):
    client = create_app(predictor=predictor).test_client()
    speech, rate = soundfile.read(shared(CLIP), dtype="float32")
    expected = predictor.predict_speech(shared(CLIP))
    for codec, name in (("aac", "memo.m4a"), ("mp3", "clip.mp3"), ("opus", "note.ogg")):
        data = media.encode_audio(speech, rate, codec, 64000)
        response = client.post("/api/predict", data={"audio": (io.BytesIO(data), name)},
                               content_type="multipart/form-data")
        assert response.status_code == 200, response.get_json()
        result = response.get_json()["speech"]
        assert result["status"] == "ok" and result["label"] == expected["label"]
        assert result["duration"] == pytest.approx(expected["duration"], abs=0.07)
    response = client.post("/api/predict", data={"audio": (io.BytesIO(VIDEO_WITHOUT_AUDIO), "v.mp4")},
                           content_type="multipart/form-data")
    assert response.status_code == 422 and response.get_json() == {"error": "audio upload: no audio track"}
    described = client.get("/api/openapi.json").get_json()["paths"]["/api/predict"]["post"]["requestBody"]
    audio = described["content"]["multipart/form-data"]["schema"]["properties"]["audio"]["description"]
    assert all(word in audio for word in ("WAV", "MP3", "M4A", "Opus", "WebM", "MP4"))
