"""Speech features by front end: per-group standardisation and clips the decoder cannot read."""

import numpy as np
import pytest

from emorec.datasets import Clip
from emorec.audio import load_audio
from emorec.speech_features import (SAMPLE_RATE, Transmitted, augment_waveform, decoded, front_end, normalise,
                                    random_channel, reverberate, speech_features, transmit)

from conftest import tone, wav_bytes, write


def test_normalise_per_speaker_and_per_corpus():
    rng = np.random.default_rng(0)
    clips = [Clip(f"{n}.wav", 0, speaker, corpus) for n, (speaker, corpus) in
             enumerate([(1, "ravdess")] * 4 + [(2, "ravdess")] * 3 + [("EB0", "nemo")] * 5)]
    clean = rng.normal(0, 1, (12, 3)) + np.repeat([[5, 0, 0], [-5, 1, 0], [0, 0, 9]], [4, 3, 5], axis=0)
    augmented = clean + 0.1
    by_speaker, shifted = normalise([clean, augmented], clips, "speaker")
    for rows in (slice(0, 4), slice(4, 7), slice(7, 12)):
        np.testing.assert_allclose(by_speaker[rows].mean(axis=0), 0, atol=1e-9)
        np.testing.assert_allclose(by_speaker[rows].std(axis=0), 1, atol=1e-5)
    # the copies are standardised with their clean clips' statistics: shifted by 0.1 / the clean std
    np.testing.assert_allclose((shifted - by_speaker)[:4], np.tile(0.1 / (clean[:4].std(axis=0) + 1e-6), (4, 1)),
                               rtol=1e-6)
    (by_corpus,) = normalise([clean], clips, "corpus")
    np.testing.assert_allclose(by_corpus[:7].mean(axis=0), 0, atol=1e-9)
    assert not np.allclose(by_corpus[:4].mean(axis=0), 0)  # speakers within RAVDESS still differ
    assert normalise([clean], clips, "none")[0] is clean
    with pytest.raises(ValueError, match="unknown feature normalisation 'batch'"):
        normalise([clean], clips, "batch")


class Loudness:
    """A toy front end: the clip's RMS and length."""

    name = key = "loudness"
    card = {"front_end": "loudness"}

    def __call__(self, waveform):
        return np.array([np.sqrt(np.mean(waveform ** 2)), len(waveform)], np.float32)


def test_undecodable_clips_are_left_out_and_tried_again(tmp_path):
    good = write(tmp_path, "a.wav", wav_bytes(tone(0.5)))
    bad = write(tmp_path, "b.wav", b"RIFF not really a wave file")
    clips = [Clip(str(good), 0, 1, "ravdess"), Clip(str(bad), 1, 1, "ravdess")]
    clean, copy = speech_features([clip.path for clip in clips], Loudness(), tmp_path / "cache", variants=1)
    assert np.isnan(clean[1]).all() and np.isnan(copy[1]).all() and not np.isnan(clean[0]).any()
    assert clean[0][1] == 8000 and copy[0][1] != 8000  # the copy is augmented (speed, shift)
    kept, (kept_clean, kept_copy) = decoded(clips, [clean, copy])
    assert kept == clips[:1] and kept_clean.shape == kept_copy.shape == (1, 2)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # nothing cached for the bad clip
    write(tmp_path, "b.wav", wav_bytes(tone(0.25)))
    (again,) = speech_features([clip.path for clip in clips], Loudness(), tmp_path / "cache")
    assert again[1][1] == 4000


def test_unknown_front_end():
    with pytest.raises(ValueError, match="unknown speech front end 'wav2vec'"):
        front_end("wav2vec")


def test_transmitted_clips_are_cached_apart_from_clean_ones(tmp_path):
    clip = write(tmp_path, "a.wav", wav_bytes(tone(1.0, frequency=150)))  # below the telephone band
    (clean,) = speech_features([clip], Loudness(), tmp_path / "cache")
    telephone = Transmitted(Loudness(), "telephone")
    assert telephone.key == "loudness|telephone" and telephone.name == "loudness"
    (heard,) = speech_features([clip], telephone, tmp_path / "cache")
    assert heard[0][1] == clean[0][1] == 16000 and heard[0][0] < clean[0][0] / 2  # same length, band-limited
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    with pytest.raises(ValueError, match="unknown channel 'gsm'"):
        Transmitted(Loudness(), "gsm")


def test_gain_channels_change_the_level_and_clip_at_full_scale():
    wave = tone(1.0, amplitude=0.5).astype(np.float32)
    np.testing.assert_allclose(transmit(wave, "quiet-20db"), wave / 10, rtol=1e-5)
    loud = transmit(wave, "loud-10db")
    assert loud.dtype == np.float32 and len(loud) == len(wave) and np.abs(loud).max() == 1.0
    np.testing.assert_allclose(loud[np.abs(wave) < 0.3], wave[np.abs(wave) < 0.3] * 10 ** 0.5, rtol=1e-5)


def test_whisper_front_end_is_the_encoders_clip_features(tmp_path):
    from emorec.models import MODELS_DIR
    from emorec.speech_encoder import WhisperEncoder

    path = MODELS_DIR / "whisper" / "encoder.tflite"
    if not path.exists():
        pytest.skip(f"{path} is not available")
    extractor = front_end("whisper-base", card={"whisper_layers": [1, 6]})
    assert extractor.card == {"front_end": "whisper-base", "whisper_layers": [1, 6],
                              "input": "mean and std over time of Whisper base encoder layers"}
    clip = write(tmp_path, "a.wav", wav_bytes(tone(0.7, frequency=220)))
    (features,) = speech_features([clip], extractor, tmp_path / "cache")
    assert features.shape == (1, 2 * 1024)
    np.testing.assert_array_equal(features[0], WhisperEncoder(path).clip_features(load_audio(clip), [1, 6]))
    assert front_end("whisper-base").key != extractor.key  # all 8 layers: cached apart


def test_reverberation_leaves_a_decaying_tail_at_the_same_level():
    click = np.zeros(SAMPLE_RATE, np.float32)
    click[1600:1610] = 0.5
    rooms = [reverberate(click, np.random.default_rng(seed)) for seed in range(5)]
    for room in rooms:
        assert room.shape == click.shape and room.dtype == np.float32
        np.testing.assert_allclose(np.sqrt(np.mean(room ** 2)), np.sqrt(np.mean(click ** 2)), rtol=1e-4)
        tail = [np.sqrt(np.mean(room[start:start + 800] ** 2)) for start in (2400, 4000)]
        assert tail[0] > 1e-4 and tail[1] < tail[0]  # sound after the click has ended, fading
    assert not np.allclose(rooms[0], rooms[1])


def test_channel_augmentation_is_seeded_and_goes_through_codecs(clip):
    speech = load_audio(clip)
    signal = [augment_waveform(speech, np.random.default_rng(seed)) for seed in range(12)]
    channel = [augment_waveform(speech, np.random.default_rng(seed), "channel") for seed in range(12)]
    again = augment_waveform(speech, np.random.default_rng(3), "channel")
    np.testing.assert_array_equal(channel[3], again)
    assert all(len(a) == len(b) and np.isfinite(b).all() for a, b in zip(signal, channel))  # same speed draws
    assert sum(not np.allclose(a, b) for a, b in zip(signal, channel)) >= 8  # most copies changed (20 % stay clean)
    telephone = random_channel(speech, Forced("telephone"))
    spectrum = np.abs(np.fft.rfft(telephone)) ** 2
    frequencies = np.fft.rfftfreq(len(telephone), 1 / SAMPLE_RATE)
    assert spectrum[frequencies > 4000].sum() < 1e-3 * spectrum.sum()  # nothing above the 8 kHz line's band
    mp3 = random_channel(speech, Forced("mp3", 16000))
    assert len(mp3) == len(speech) and not np.allclose(mp3, speech, atol=1e-3)
    with pytest.raises(ValueError, match="unknown speech augmentation 'photo'"):
        augment_waveform(speech, np.random.default_rng(0), "photo")


class Forced:
    """An rng whose choices are given: the channel, then the bitrate."""

    def __init__(self, *choices):
        self.choices = list(choices)

    def choice(self, options, p=None):
        return self.choices.pop(0)
