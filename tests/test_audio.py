"""Speech input: decoding any WAV to 16 kHz mono, YAMNet framing, and the speech predictions."""

import tracemalloc

import numpy as np
import pytest
import soundfile
import soxr

from emorec.audio import (FRAME_SAMPLES, HOP_SAMPLES, SAMPLE_RATE, FrameCutter, WindowCutter, frame_times,
                          load_audio, segment_windows, speech_frames)
from emorec.errors import InputError
from emorec.speech_encoder import FRAMES_PER_SECOND, WINDOW_FRAMES, WINDOW_HOP_FRAMES, chunks
from emorec.speech_features import CHUNK_SECONDS
from emorec.labels import LABELS

from conftest import RAVDESS, assert_valid_result, shared, tone, wav_bytes, write


@pytest.fixture(scope="module")
def waveform(clip):
    samples, rate = soundfile.read(clip, dtype="float64")
    assert rate == SAMPLE_RATE and samples.ndim == 1
    return samples


def lowpass(waveform, cutoff=6500):
    """Brick-wall low-pass in the frequency domain (removes the band resamplers treat differently)."""
    spectrum = np.fft.rfft(waveform)
    spectrum[np.fft.rfftfreq(len(waveform), 1 / SAMPLE_RATE) > cutoff] = 0
    return np.fft.irfft(spectrum, len(waveform))


def max_difference(a, b):
    return max(abs(a["probabilities"][label] - b["probabilities"][label]) for label in LABELS)


# ---- decoding ---------------------------------------------------------------------------

def test_16k_clip_decodes_unchanged(clip, waveform):
    decoded = load_audio(clip)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    np.testing.assert_allclose(decoded, waveform, atol=1e-6)


def test_48k_stereo_24bit_matches_16k_original(predictor, clip, waveform, clip_result, tmp_path):
    """The same recording as a user would have it (48 kHz, stereo, 24-bit) gives the same answer."""
    upsampled = soxr.resample(waveform, SAMPLE_RATE, 48000, quality="VHQ")
    path = write(tmp_path, "user.wav", wav_bytes(np.stack([upsampled, upsampled], 1), 48000, "PCM_24"))
    info = soundfile.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (48000, 2, "PCM_24")

    decoded = load_audio(path)
    original = load_audio(clip)
    assert len(decoded) == len(original)
    # Below 6.5 kHz the round trip through 48 kHz is exact to within resampler ripple.
    assert np.abs(lowpass(decoded) - lowpass(original)).max() < 1e-4

    result = predictor.predict_speech(path)
    assert result["label"] == clip_result["label"]
    assert result["duration"] == pytest.approx(clip_result["duration"], abs=1e-3)
    assert len(result["segments"]) == len(clip_result["segments"])
    # YAMNet has dynamic-range int8 weights, so tiny input changes move its embeddings a
    # little; the clip-level probabilities still stay within a few hundredths.
    assert max_difference(result, clip_result) < 0.06


@pytest.mark.parametrize("subtype, rate, channels, seconds", [
    ("PCM_U8", 16000, 1, None),  # 8-bit WAV (unsigned)
    ("PCM_16", 16000, 2, None),
    ("PCM_24", 44100, 1, None),
    ("PCM_32", 16000, 1, None),  # 32-bit int
    ("FLOAT", 22050, 1, None),  # 32-bit float
    ("DOUBLE", 16000, 1, None),
    ("PCM_16", 16000, 6, None),  # 5.1
    ("PCM_16", 8000, 1, None),  # telephone rate
    ("PCM_24", 96000, 2, None),
    ("PCM_16", 16000, 1, 0.1),  # shorter than one YAMNet frame
    ("PCM_16", 48000, 2, 0.1),
])
def test_wav_variants_load_and_predict(predictor, waveform, tmp_path, subtype, rate, channels, seconds):
    samples = waveform[:int(seconds * SAMPLE_RATE)] if seconds else waveform
    duration = len(samples) / SAMPLE_RATE
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, SAMPLE_RATE, rate, quality="VHQ")
    if channels > 1:
        samples = np.stack([samples * (1 - 0.1 * c) for c in range(channels)], axis=1)
    path = write(tmp_path, "clip.wav", wav_bytes(samples, rate, subtype))
    assert soundfile.info(path).channels == channels

    decoded = load_audio(path)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(len(decoded) - duration * SAMPLE_RATE) <= 2
    assert np.abs(decoded).max() <= 1.0

    result = predictor.predict_speech(path)
    assert result["status"] in ("ok", "no_speech")
    assert result["duration"] == pytest.approx(duration, abs=1e-3)
    assert_valid_result(result, LABELS)
    if seconds == 0.1:
        assert len(result["segments"]) == 1


def test_flac_and_bytes_input(predictor, waveform, clip_result):
    result = predictor.predict_speech(wav_bytes(waveform, SAMPLE_RATE, "PCM_16", format="FLAC"))
    assert result["label"] == clip_result["label"]
    assert max_difference(result, clip_result) < 1e-3


def test_channels_are_averaged():
    left = tone(0.5, frequency=300)
    decoded = load_audio(wav_bytes(np.stack([left, np.zeros_like(left)], 1), subtype="FLOAT"))
    np.testing.assert_allclose(decoded, left / 2, atol=1e-6)


def test_resampling_keeps_pitch_and_length():
    decoded = load_audio(wav_bytes(tone(1.0, rate=44100, frequency=440), 44100, "FLOAT"))
    assert len(decoded) == SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(decoded))
    assert np.fft.rfftfreq(len(decoded), 1 / SAMPLE_RATE)[spectrum.argmax()] == pytest.approx(440, abs=1)


def test_out_of_range_and_nan_samples_are_tamed():
    samples = np.concatenate([np.full(100, 3.0), np.full(100, -3.0), np.full(100, np.nan)])
    decoded = load_audio(wav_bytes(samples, subtype="FLOAT"))
    assert np.all(np.isfinite(decoded))
    assert decoded[:100].tolist() == [1.0] * 100 and decoded[100:200].tolist() == [-1.0] * 100
    assert not decoded[200:].any()


def test_too_long_audio_is_refused_before_decoding(clip):
    with pytest.raises(InputError, match="over the 2 s limit"):
        load_audio(clip, max_seconds=2)


@pytest.mark.parametrize("source, message", [
    ("/no/such/file.wav", "no such file"),
    (b"", "empty"),
    (b"RIFF", "not a readable audio file"),
])
def test_load_audio_errors(source, message):
    with pytest.raises(InputError, match=message):
        load_audio(source)


def test_resampled_to_nothing_is_refused():
    # 10 samples at 1 MHz is 10 us: nothing is left at 16 kHz.
    with pytest.raises(InputError, match="too short"):
        load_audio(wav_bytes(np.full(10, 0.5), 1_000_000))


# ---- framing ----------------------------------------------------------------------------

@pytest.mark.parametrize("length", [0, 1, 1600, FRAME_SAMPLES - 1, FRAME_SAMPLES, FRAME_SAMPLES + 1,
                                    FRAME_SAMPLES + HOP_SAMPLES - 1, FRAME_SAMPLES + HOP_SAMPLES,
                                    FRAME_SAMPLES + HOP_SAMPLES + 1, 69937, 10 * SAMPLE_RATE])
def test_speech_frames_cover_every_sample(length):
    waveform = np.random.default_rng(length).uniform(-1, 1, length).astype(np.float32)
    frames = speech_frames(waveform)
    count = len(frames)
    assert frames.shape == (count, FRAME_SAMPLES) and frames.dtype == np.float32
    # Enough frames to reach the last sample, and not one more than that.
    assert (count - 1) * HOP_SAMPLES + FRAME_SAMPLES >= length
    assert count == 1 or (count - 2) * HOP_SAMPLES + FRAME_SAMPLES < length
    expected = 1 + max(0, -(-(length - FRAME_SAMPLES) // HOP_SAMPLES))
    assert count == expected
    for index, frame in enumerate(frames):
        start = index * HOP_SAMPLES
        real = waveform[start:start + FRAME_SAMPLES]
        np.testing.assert_array_equal(frame[:len(real)], real)
        assert not frame[len(real):].any()  # zero padding past the end


def in_blocks(array, seed, largest, axis=0):
    """The array cut along `axis` into consecutive blocks of random sizes from 1 to `largest`."""
    rng, start, blocks = np.random.default_rng(seed), 0, []
    while start < array.shape[axis]:
        size = int(rng.integers(1, largest + 1))
        blocks.append(array.take(range(start, min(start + size, array.shape[axis])), axis=axis))
        start += size
    return blocks


@pytest.mark.parametrize("length", [1, FRAME_SAMPLES - 1, FRAME_SAMPLES, FRAME_SAMPLES + HOP_SAMPLES + 1, 69937])
def test_frames_cut_from_blocks_are_the_whole_waveforms(length):
    waveform = np.random.default_rng(length).uniform(-1, 1, length).astype(np.float32)
    cutter = FrameCutter()
    streamed = [cutter.add(block) for block in in_blocks(waveform, length, 9000)] + [cutter.finish()]
    np.testing.assert_array_equal(np.concatenate(streamed), speech_frames(waveform))
    assert len(cutter.pending) < FRAME_SAMPLES + HOP_SAMPLES  # never more than a frame's samples waiting


@pytest.mark.parametrize("size, hop", [(4, 2), (120, 48)])
def test_windows_cut_as_frames_arrive_are_segment_windows(size, hop):
    for count in [*range(1, 3 * size), 1000]:
        frames = np.random.default_rng(count).normal(size=(2, count, 3))  # time on axis 1, as the encoder's
        cutter, windows = WindowCutter(size, hop, axis=1), []
        for block in in_blocks(frames, count, 2 * size, axis=1):
            windows += cutter.add(block)
            assert cutter.kept.shape[1] <= size  # only the frames a coming window may need
        windows += cutter.finish()
        assert cutter.spans == segment_windows(count, size, hop)
        for (start, end), window in zip(cutter.spans, windows, strict=True):
            np.testing.assert_array_equal(window, frames[:, start:end])


def test_short_clip_is_one_padded_frame():
    frames = speech_frames(np.ones(1600, np.float32))  # 0.1 s
    assert frames.shape == (1, FRAME_SAMPLES)
    assert frames[0, :1600].all() and not frames[0, 1600:].any()


def test_frame_times():
    times = frame_times(3)
    assert times == [(0.0, 0.975), (0.48, 1.455), (0.96, 1.935)]


@pytest.mark.parametrize("count, expected", [
    (1, [(0, 1)]),
    (3, [(0, 3)]),  # short: one window of every frame
    (4, [(0, 4)]),  # exactly one window
    (5, [(0, 4), (1, 5)]),  # the last window moves back to end on the last frame
    (6, [(0, 4), (2, 6)]),  # windows fit exactly
    (9, [(0, 4), (2, 6), (4, 8), (5, 9)]),  # the 4.4 s test clip
    (10, [(0, 4), (2, 6), (4, 8), (6, 10)]),
])
def test_segment_windows(count, expected):
    assert segment_windows(count) == expected


@pytest.mark.parametrize("size, hop", [(4, 2), (3, 1), (5, 3), (2, 2)])
def test_segment_windows_cover_every_frame(size, hop):
    for count in range(1, 40):
        windows = segment_windows(count, size, hop)
        starts = [start for start, _ in windows]
        assert starts[0] == 0 and windows[-1][1] == count  # the last window reaches the last frame
        assert all(end - start == min(size, count) for start, end in windows)
        assert all(0 < step <= hop for step in np.diff(starts))  # no gap, no repeat
        assert np.diff(starts)[:-1].tolist() == [hop] * (len(starts) - 2)  # a regular hop but for the last
        covered = set().union(*(range(start, end) for start, end in windows))
        assert covered == set(range(count))


# ---- predictions ------------------------------------------------------------------------

def test_clip_prediction(clip_result):
    assert clip_result["status"] == "ok"
    assert clip_result["speech_score"] > 0.5
    assert clip_result["duration"] == pytest.approx(69937 / SAMPLE_RATE, abs=1e-3)
    assert_valid_result(clip_result, LABELS)
    for segment in clip_result["segments"]:
        assert_valid_result(segment, LABELS)


@pytest.mark.parametrize("samples", [np.zeros(2 * SAMPLE_RATE), np.full(SAMPLE_RATE, 1e-6)],
                         ids=["zeros", "near-silence"])
def test_silence_is_no_speech(predictor, samples):
    result = predictor.predict_speech(wav_bytes(samples))
    assert result["status"] == "no_speech"
    assert result["label"] in LABELS
    assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-4)


def test_tone_is_no_speech(predictor):
    result = predictor.predict_speech(wav_bytes(tone(2.0)))
    assert result["status"] == "no_speech"
    assert result["speech_score"] < 0.08


def test_silent_audio_leaves_fusion_to_the_face(predictor, astronaut):
    result = predictor.predict(image=astronaut, audio=wav_bytes(np.zeros(SAMPLE_RATE)))
    assert result["speech"]["status"] == "no_speech"
    assert result["fusion"]["status"] == "face_only" and result["fusion"]["sources"] == ["face"]


def segment_times(count):
    """The speech timeline's windows over `count` Whisper encoder frames (50 a second), in seconds."""
    return [(round(start / FRAMES_PER_SECOND, 3), round(end / FRAMES_PER_SECOND, 3))
            for start, end in segment_windows(count, WINDOW_FRAMES, WINDOW_HOP_FRAMES)]


def encoder_frames(samples):
    return -(-(samples // 160) // 2)


def test_clip_segments_are_overlapping_windows(clip_result):
    """4.371 s, 219 encoder frames: 2.4 s windows every 0.96 s, the last one moved back to end on the last frame."""
    segments = clip_result["segments"]
    assert [(s["start"], s["end"]) for s in segments] == [(0.0, 2.4), (0.96, 3.36), (1.92, 4.32), (1.98, 4.38)]
    assert [(s["start"], s["end"]) for s in segments] == segment_times(encoder_frames(69937))
    assert segments[-1]["end"] >= clip_result["duration"] > segments[-2]["end"]


def test_short_clip_has_one_segment_equal_to_the_clip(predictor, waveform):
    result = predictor.predict_speech(wav_bytes(waveform[:int(1.5 * SAMPLE_RATE)]))  # 75 encoder frames
    (segment,) = result["segments"]
    assert (segment["start"], segment["end"]) == (0.0, 1.5)
    assert segment["probabilities"] == result["probabilities"] and segment["label"] == result["label"]


def test_long_clip_gives_many_segments(predictor):
    parts = [soundfile.read(shared(RAVDESS / "Actor_22" / name))[0]
             for name in ("03-01-03-02-01-01-22.wav", "03-01-04-02-01-01-22.wav", "03-01-05-02-01-01-22.wav")]
    waveform = np.concatenate(parts)
    result = predictor.predict_speech(wav_bytes(waveform))
    segments = result["segments"]
    pieces = chunks(waveform, CHUNK_SECONDS * SAMPLE_RATE)  # 11.3 s: the encoder runs on two equal chunks
    assert len(pieces) == 2
    assert [(s["start"], s["end"]) for s in segments] == segment_times(sum(encoder_frames(len(p)) for p in pieces))
    assert len(segments) >= 10
    starts = [segment["start"] for segment in segments]
    assert starts == sorted(set(starts)) and starts[0] == 0
    np.testing.assert_allclose(np.diff(starts)[:-1], 0.96, atol=1e-3)
    assert all(segment["end"] - segment["start"] == pytest.approx(2.4, abs=1e-3) for segment in segments)
    assert segments[-1]["end"] >= result["duration"]
    assert segments[-2]["end"] < result["duration"]
    assert len({segment["label"] for segment in segments}) > 1  # three emotions in a row


def test_speech_streamed_in_blocks_is_the_whole_waveforms(predictor, waveform):
    """Blocks in, one result: exactly the whole waveform's for a clip of one chunk; over several chunks,
    windows classified as they complete (other batches: equal to float32 rounding)."""
    short = waveform.astype(np.float32)
    assert predictor.predict_speech(iter(np.array_split(short, 7))) == predictor.predict_speech(short)
    long = np.tile(short, 6)  # 26 s: a 10 s chunk streams out before the last two
    streamed = predictor.predict_speech(iter(np.array_split(long, 40)))
    whole = predictor.predict_speech(long)
    assert [(s["start"], s["end"], s["label"]) for s in streamed["segments"]] == \
        [(s["start"], s["end"], s["label"]) for s in whole["segments"]]
    for a, b in zip([streamed, *streamed["segments"]], [whole, *whole["segments"]]):
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-5)


def peak_bytes_streaming(predictor, seconds):
    """Python-side peak bytes of predict_speech over `seconds` of speech-like noise made block by block."""
    def blocks():
        rng = np.random.default_rng(0)
        for _ in range(seconds * 2):
            yield (0.1 * rng.normal(size=SAMPLE_RATE // 2) * np.sin(np.linspace(0, 30, SAMPLE_RATE // 2))).astype(
                np.float32)
    tracemalloc.start()
    try:
        result = predictor.predict_speech(blocks())
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_speech_memory_does_not_grow_with_the_length(predictor):
    short, short_result = peak_bytes_streaming(predictor, 40)  # both longer than two 10 s chunks
    long, long_result = peak_bytes_streaming(predictor, 80)
    assert long_result["duration"] == 80 and len(long_result["segments"]) > 2 * len(short_result["segments"]) - 3
    # Holding the whole clip, 40 s more would be 2.6 MB more samples and 5 MB more YAMNet frames
    assert long - short < 0.5e6
