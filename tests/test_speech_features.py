"""Speech features by front end: per-group standardisation and clips the decoder cannot read."""

import numpy as np
import pytest

from emorec.datasets import Clip
from emorec.speech_features import decoded, front_end, normalise, speech_features

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
