"""The Whisper speech front end served with LiteRT (emorec.speech_encoder): log-mel, chunking, pooling,
and the vendored models/whisper/encoder.tflite on real-length clips."""

import math

import numpy as np
import pytest

from emorec.audio import segment_windows
from emorec.models import MODELS_DIR
from emorec.speech_encoder import (FRAMES_PER_SECOND, LAYERS, MAX_GAIN_DB, MAX_SAMPLES, MEL_BANDS, WIDTH, Chunker,
                                   WhisperEncoder, chunks, levelled, log_mel, mel_filters, pool)
from emorec.speech_features import WhisperFeatures, front_end

from conftest import CLIP, shared, tone


def slaney_filters(bands=80, n_fft=400, rate=16000):
    """librosa's Slaney filterbank written out filter by filter, bin by bin (scalar math)."""
    def to_mel(hz):
        return 15 + math.log(hz / 1000) * 27 / math.log(6.4) if hz >= 1000 else hz / (200 / 3)

    def to_hz(mel):
        return 1000 * math.exp((mel - 15) * math.log(6.4) / 27) if mel >= 15 else mel * 200 / 3

    top = to_mel(rate / 2)
    edges = [to_hz(top * i / (bands + 1)) for i in range(bands + 2)]
    filters = np.zeros((bands, n_fft // 2 + 1))
    for band in range(bands):
        left, centre, right = edges[band:band + 3]
        for k in range(n_fft // 2 + 1):
            hz = k * rate / n_fft
            rising, falling = (hz - left) / (centre - left), (right - hz) / (right - centre)
            filters[band, k] = max(0.0, min(rising, falling)) * 2 / (right - left)
    return filters


def reference_log_mel(waveform):
    """Whisper's recipe with an explicit DFT matrix: centred reflect-padded periodic-Hann frames,
    power, Slaney mel, log10 clamped at 1e-10 and max - 8, (x + 4) / 4, last frame dropped."""
    padded = np.pad(np.asarray(waveform, np.float64), 200, mode="reflect")
    window = np.sin(np.pi * np.arange(400) / 400) ** 2
    dft = np.exp(-2j * np.pi * np.outer(np.arange(400), np.arange(201)) / 400)
    frames = np.stack([padded[160 * i:160 * i + 400] for i in range(len(waveform) // 160)])
    power = np.abs((frames * window) @ dft) ** 2
    logs = np.log10(np.maximum(power @ slaney_filters().T, 1e-10))
    return (np.maximum(logs, logs.max() - 8) + 4) / 4


def test_mel_filters_are_slaneys():
    filters = mel_filters()
    assert filters.shape == (80, 201) and filters.dtype == np.float32
    np.testing.assert_allclose(filters, slaney_filters(), rtol=1e-5, atol=1e-9)


def test_log_mel_of_a_tone_matches_the_reference():
    wave = tone(0.5, frequency=1000.0).astype(np.float32)
    mel = log_mel(wave)
    assert mel.shape == (50, MEL_BANDS) and mel.dtype == np.float32
    np.testing.assert_allclose(mel, reference_log_mel(wave), atol=2e-4)
    # 1 kHz lands in the band whose triangle peaks nearest to it; the floor is 8 decades (2.0) below the top.
    peaks = np.argmax(mel_filters(), axis=1) * 40.0
    assert np.argmax(mel[10:40].mean(axis=0)) == np.argmin(np.abs(peaks - 1000.0))
    assert mel.min() == pytest.approx(mel.max() - 2.0)


def test_log_mel_follows_the_clip_length():
    assert log_mel(np.zeros(16000 * 3 + 100, np.float32)).shape == (300, MEL_BANDS)
    assert log_mel(np.zeros(10, np.float32)).shape == (2, MEL_BANDS)  # padded to one 400-sample window


def test_chunks_cut_long_audio_into_pieces_of_at_most_30_s_the_last_two_equal():
    assert [len(piece) for piece in chunks(np.zeros(MAX_SAMPLES))] == [MAX_SAMPLES]
    pieces = chunks(np.arange(MAX_SAMPLES + 32000, dtype=np.float32))
    assert [len(piece) for piece in pieces] == [MAX_SAMPLES // 2 + 16000] * 2
    assert np.array_equal(np.concatenate(pieces), np.arange(MAX_SAMPLES + 32000))
    pieces = chunks(np.arange(MAX_SAMPLES * 5 // 2, dtype=np.float32))  # 75 s: 30 s, then 22.5 s twice
    assert [len(piece) for piece in pieces] == [MAX_SAMPLES, MAX_SAMPLES * 3 // 4, MAX_SAMPLES * 3 // 4]
    assert np.array_equal(np.concatenate(pieces), np.arange(MAX_SAMPLES * 5 // 2))


@pytest.mark.parametrize("samples", [100, 32000, 64000, 64001, 150001])
def test_chunker_cuts_blocks_as_chunks_cuts_the_whole_waveform(samples):
    waveform = np.random.default_rng(samples).normal(size=samples).astype(np.float32)
    chunker, pieces = Chunker(32000), []
    for start in range(0, samples, 7000):
        pieces += chunker.add(waveform[start:start + 7000])
        assert chunker.waiting <= 2 * 32000  # at most two pieces' samples held
    pieces += chunker.finish()
    expected = chunks(waveform, 32000)
    assert len(pieces) == len(expected) and all(np.array_equal(a, b) for a, b in zip(pieces, expected))
    assert all(len(piece) <= 32000 for piece in pieces) and min(len(piece) for piece in pieces) >= min(samples, 16000)


def test_pool_lays_out_mean_then_std_layer_by_layer():
    frames = np.random.default_rng(0).normal(size=(LAYERS, 30, WIDTH)).astype(np.float32)
    features = pool(frames, layers=[2, 5]).reshape(2, 2, WIDTH)
    np.testing.assert_allclose(features[1, 0], frames[5].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(features[0, 1], frames[2].std(axis=0), rtol=1e-6)
    assert pool(frames).shape == (LAYERS * 2 * WIDTH,)


@pytest.fixture(scope="module")
def encoder():
    return WhisperEncoder(MODELS_DIR / "whisper" / "encoder.tflite")


def test_served_encoder_runs_on_the_real_length(encoder):
    from emorec.audio import load_audio
    wave = load_audio(shared(CLIP))
    frames = encoder.layer_frames(wave)
    assert frames.shape == (LAYERS, math.ceil(len(wave) // 160 / 2), WIDTH) and np.isfinite(frames).all()
    half = encoder.layer_frames(wave[:len(wave) // 2])  # the input resized per clip
    assert half.shape[1] == math.ceil(len(wave) // 2 // 160 / 2)
    features = encoder.clip_features(wave, layers=[3])
    np.testing.assert_allclose(features[:WIDTH], frames[3].mean(axis=0), rtol=1e-5, atol=1e-5)


def test_long_audio_runs_as_chunks_and_windows_follow_the_timeline(encoder):
    wave = tone(5.0, frequency=300.0).astype(np.float32)
    chunked = WhisperEncoder(MODELS_DIR / "whisper" / "encoder.tflite", chunk_seconds=2).layer_frames(wave)
    pieces = chunks(wave, 32000)
    assert len(pieces) == 3 and chunked.shape[1] == sum(math.ceil(len(piece) // 160 / 2) for piece in pieces)
    first = encoder.layer_frames(pieces[0])
    np.testing.assert_allclose(chunked[:, :first.shape[1]], first, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="chunk_seconds"):
        WhisperEncoder(MODELS_DIR / "whisper" / "encoder.tflite", chunk_seconds=31)
    features, spans = encoder.window_features(wave, layers=[0, 7])
    expected = segment_windows(5 * FRAMES_PER_SECOND, 120, 48)
    assert features.shape == (len(expected), 2 * 2 * WIDTH)
    assert spans[0] == (0.0, 2.4) and spans[1] == (0.96, 3.36) and spans[-1][1] == 5.0


def test_timeline_streams_chunks_as_the_whole_clip_pools(encoder):
    """Chunk by chunk, holding one chunk's frames: the windows pool exactly the frames the whole
    clip's layer frames hold there, and the clip's mean and std agree with pooling them all."""
    speech = tone(5.0, frequency=300.0).astype(np.float32) * np.linspace(0.2, 1, 80000, dtype=np.float32)
    chunked = WhisperEncoder(MODELS_DIR / "whisper" / "encoder.tflite", chunk_seconds=2)
    frames = chunked.layer_frames(speech)
    clip, windows, spans = chunked.timeline(speech, layers=[1, 6])
    expected = segment_windows(frames.shape[1], 120, 48)
    assert spans == [(start / FRAMES_PER_SECOND, end / FRAMES_PER_SECOND) for start, end in expected]
    np.testing.assert_array_equal(windows, np.stack([pool(frames[:, start:end], [1, 6]) for start, end in expected]))
    np.testing.assert_allclose(clip, pool(frames, [1, 6]), rtol=1e-4, atol=1e-4)
    single_clip, single_windows, _ = encoder.timeline(speech)  # one chunk: `pool` of its frames, exactly
    np.testing.assert_array_equal(single_clip, pool(encoder.layer_frames(speech)))
    assert single_windows.shape == (len(segment_windows(250, 120, 48)), LAYERS * 2 * WIDTH)


def active_level(waveform):
    """dB of the mean power over the non-silent half of `spoken` (the clip's first half)."""
    return 10 * np.log10(np.mean(waveform[:len(waveform) // 2].astype(np.float64) ** 2))


def spoken(amplitude):
    """1 s of a tone then 1 s of silence: a clip with a pause."""
    return np.concatenate([tone(1.0, amplitude=amplitude), np.zeros(16000)]).astype(np.float32)


def test_levelled_brings_the_speech_not_the_pauses_to_the_level():
    for amplitude in (0.003, 0.05, 0.9):
        clip = levelled(spoken(amplitude), -26.0)
        assert len(clip) == 32000 and not clip[16000:].any()
        assert active_level(clip) == pytest.approx(-26.0, abs=0.1)  # the pause does not pull the level down
    assert active_level(levelled(spoken(0.05), -40.0)) == pytest.approx(-40.0, abs=0.1)
    quiet = levelled(spoken(1e-6), -26.0)  # a near-silent clip is raised by MAX_GAIN_DB at most
    assert np.max(np.abs(quiet)) == pytest.approx(1e-6 * 10 ** (MAX_GAIN_DB / 20), rel=1e-3)
    assert not levelled(np.zeros(100, np.float32)).any() and len(levelled(np.zeros(100, np.float32))) == 100


def test_a_levelled_front_end_hears_a_clip_alike_at_any_gain():
    from emorec.audio import load_audio
    wave = load_audio(shared(CLIP))
    levelled_features, as_recorded = WhisperFeatures(level_db=-26.0), WhisperFeatures()
    np.testing.assert_allclose(levelled_features(wave * 0.1), levelled_features(wave), rtol=1e-3, atol=1e-3)
    assert np.abs(as_recorded(wave * 0.1) - as_recorded(wave)).max() > 0.1  # Whisper alone hears the gain
    assert levelled_features.card["level_db"] == -26.0 and "level_db" not in as_recorded.card
    assert levelled_features.key != as_recorded.key  # cached apart
    served = front_end("whisper-base", MODELS_DIR, levelled_features.card)
    assert served.encoder.level_db == -26.0 and served.key == levelled_features.key
