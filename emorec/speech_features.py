"""The speech head's input: per-clip features from a named front end, cached on disk, and the
normalisations that can be applied to them (per speaker or per corpus, when a set of clips is at hand).

A front end is an object with `name` (what the model card records), `key` (what the cache is keyed
by: the name and every setting that changes the numbers), `card` (settings for model.json) and
`__call__(waveform)`: one float32 vector for a 16 kHz mono clip (`emorec.audio.load_audio`).
"""

import hashlib
import os
from pathlib import Path

import numpy as np

from .audio import (SAMPLE_RATE, FrameCutter, WindowCutter, frame_times, load_audio, speech_frames,
                    whole_timeline)
from .errors import InputError
from .models import MODELS_DIR, YAMNet, clip_features
from .speech_encoder import LAYERS as WHISPER_LAYERS, EncoderTimeline, WhisperEncoder

SPEECH_LAYERS = (6, 7, 8, 9, 10)  # YAMNet layers whose features the speech head reads (see the model card)


class YAMNetFeatures:
    """Mean and std over 0.975 s frames of YAMNet layer features: the serving path of `Predictor`."""

    name = "yamnet"

    def __init__(self, path=MODELS_DIR / "yamnet" / "yamnet.tflite", layers=SPEECH_LAYERS, threads=1):
        self.yamnet = YAMNet(path, layers, threads)
        self.layers = tuple(layers)
        self.key = f"yamnet{list(self.layers)}"
        self.card = {"front_end": self.name, "input": "mean and std over frames of YAMNet layer features",
                     "yamnet_layers": list(self.layers)}

    def __call__(self, waveform):
        return clip_features(self.yamnet(speech_frames(waveform))[0])

    def timeline(self, waveform):
        """The clip's features, the speech timeline's window features [windows, d] and each window's
        (start, end) seconds: windows of 4 frames (2.4 s) every 2 (0.96 s)."""
        return whole_timeline(self.stream(), waveform)

    def stream(self):
        """`timeline` over a waveform that arrives in blocks (YAMNetTimeline)."""
        return YAMNetTimeline(self.yamnet)


class YAMNetTimeline:
    """YAMNetFeatures.timeline over a waveform that arrives in blocks, `add` and `finish` as
    speech_encoder.EncoderTimeline's. Each frame's features are kept for the clip's pooling (about
    13 KB per 0.48 s: the samples and frames are not)."""

    def __init__(self, yamnet):
        self.yamnet, self.cutter, self.windows, self.kept = yamnet, FrameCutter(), WindowCutter(4, 2), []

    def add(self, block):
        return self._features(self.cutter.add(block))

    def finish(self):
        windows = self._features(self.cutter.finish()) + [clip_features(frames) for frames in self.windows.finish()]
        times = frame_times(self.windows.count)
        return (clip_features(np.concatenate(self.kept)), windows,
                [(times[start][0], times[end - 1][1]) for start, end in self.windows.spans])

    def _features(self, frames):
        if not len(frames):
            return []
        self.kept.append(self.yamnet(frames)[0])
        return [clip_features(window) for window in self.windows.add(self.kept[-1])]


# Whisper runs longer clips in chunks of this many seconds: attention's memory grows with the square
# of a chunk's length (a worker holds ~406 MB after a 30 s chunk, ~289 MB after 10 s chunks:
# models/whisper/README.md). Every training clip (RAVDESS, nEMO) is shorter, so one chunk each.
CHUNK_SECONDS = 10


class WhisperFeatures:
    """Mean and std over time of Whisper base encoder layers (`emorec.speech_encoder`; all 8 layers:
    8192 numbers), the encoder run on the clip's real length."""

    name = "whisper-base"

    def __init__(self, path=MODELS_DIR / "whisper" / "encoder.tflite", layers=None, threads=1, level_db=None):
        self.encoder = WhisperEncoder(path, threads, CHUNK_SECONDS, level_db)
        self.layers = list(range(WHISPER_LAYERS)) if layers is None else list(layers)
        self.key = f"whisper-base:{os.path.getsize(path)}:{self.layers}"  # the file size tells fp16 from fp32
        self.card = {"front_end": self.name, "input": "mean and std over time of Whisper base encoder layers",
                     "whisper_layers": self.layers}
        if level_db is not None:  # each clip brought to one speech level first (speech_encoder.levelled)
            self.key += f":level{level_db:g}"
            self.card["level_db"] = level_db

    def __call__(self, waveform):
        return self.encoder.clip_features(waveform, self.layers)

    def timeline(self, waveform):
        """The clip's features, the speech timeline's window features [windows, d] (2.4 s every 0.96 s)
        and each window's (start, end) seconds (`WhisperEncoder.timeline`)."""
        return self.encoder.timeline(waveform, self.layers)

    def stream(self):
        """`timeline` over a waveform that arrives in blocks (speech_encoder.EncoderTimeline)."""
        return EncoderTimeline(self.encoder, self.layers)


# Each front end from a models folder, a model card's settings and a thread count.
FRONT_ENDS = {
    "yamnet": lambda folder, card, threads: YAMNetFeatures(folder / "yamnet" / "yamnet.tflite",
                                                           card.get("yamnet_layers", SPEECH_LAYERS), threads),
    "whisper-base": lambda folder, card, threads: WhisperFeatures(folder / "whisper" / "encoder.tflite",
                                                                  card.get("whisper_layers"), threads,
                                                                  card.get("level_db")),
}


def front_end(name, models_dir=MODELS_DIR, card=None, threads=1):
    """The named front end with the settings of a model card (a card without "front_end" is YAMNet's)."""
    if name not in FRONT_ENDS:
        raise ValueError(f"unknown speech front end {name!r}; choose from {', '.join(FRONT_ENDS)}")
    return FRONT_ENDS[name](Path(models_dir), card or {}, threads)


# Channels a clip can go through before the front end (`Transmitted`): a codec round trip at a bitrate
# (bit/s), the telephone band, or the recording's level changed by a gain in dB (clipped at full scale).
CHANNELS = {"mp3-32k": ("mp3", 32000), "aac-32k": ("aac", 32000), "opus-24k": ("opus", 24000),
            "telephone": ("telephone",), "quiet-20db": ("gain", -20), "loud-10db": ("gain", 10)}


def transmit(waveform, channel):
    """A 16 kHz waveform after one of the CHANNELS, at 16 kHz and the same length."""
    kind, *setting = CHANNELS[channel]
    if kind == "gain":
        return np.clip(waveform * 10 ** (setting[0] / 20), -1, 1).astype(np.float32)
    from . import media  # FFmpeg, loaded only when a codec is used

    if kind == "telephone":
        return media.telephone_band(waveform, SAMPLE_RATE)
    return media.codec_round_trip(waveform, SAMPLE_RATE, kind, *setting)


class Transmitted:
    """A front end that hears each clip after a codec round trip, the telephone band or a gain (`CHANNELS`),
    cached apart from the clean features."""

    def __init__(self, extractor, channel):
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; choose from {', '.join(CHANNELS)}")
        self.extractor, self.channel = extractor, channel
        self.name, self.card = extractor.name, extractor.card
        self.key = f"{extractor.key}|{channel}"

    def __call__(self, waveform):
        return self.extractor(transmit(waveform, self.channel))


# Augmentation recipes for the speech head's training copies: "signal" varies the voice's speed, level,
# timing and noise; "channel" adds what rooms and transmission do: reverberation, then a codec round
# trip at a random bitrate or the telephone band (drawn with these shares; "clean" leaves it as it is).
AUGMENTATIONS = ("signal", "channel")
REVERBERATION_SHARE = 1 / 3
CODEC_SHARES = {"clean": 0.2, "mp3": 0.25, "aac": 0.2, "opus": 0.2, "telephone": 0.15}
CODEC_BITRATES = (16000, 24000, 32000, 48000, 64000)


def augment_waveform(waveform, rng, recipe="signal"):
    """A random variant of a clip: speed 0.9-1.1x, gain +-6 dB, shift up to 0.25 s, noise at 5-30 dB SNR;
    the "channel" recipe adds reverberation before the noise and a codec or the telephone band after it."""
    import soxr

    if recipe not in AUGMENTATIONS:
        raise ValueError(f"unknown speech augmentation {recipe!r}; choose from {', '.join(AUGMENTATIONS)}")
    speed = rng.uniform(0.9, 1.1)
    waveform = soxr.resample(waveform, SAMPLE_RATE * speed, SAMPLE_RATE).astype(np.float32)
    waveform = np.roll(np.pad(waveform, (SAMPLE_RATE // 4, 0)), -rng.integers(0, SAMPLE_RATE // 4))
    waveform = waveform * 10 ** (rng.uniform(-6, 6) / 20)
    if recipe == "channel" and rng.random() < REVERBERATION_SHARE:
        waveform = reverberate(waveform, rng)
    power = np.mean(waveform ** 2) + 1e-12
    noise = rng.normal(0, np.sqrt(power / 10 ** (rng.uniform(5, 30) / 10)), len(waveform))
    waveform = np.clip(waveform + noise, -1, 1).astype(np.float32)
    return random_channel(waveform, rng) if recipe == "channel" else waveform


def reverberate(waveform, rng):
    """The clip in a synthetic room: an impulse response of exponentially decaying noise (reverberation
    time 0.2-0.8 s), mixed 20-60 % wet, at the clip's level and length."""
    seconds = rng.uniform(0.2, 0.8)
    times = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    response = rng.normal(0, 1, len(times)) * 10 ** (-3 * times / seconds)  # -60 dB at `seconds`
    response /= np.sqrt(np.sum(response ** 2))
    size = len(waveform) + len(response) - 1
    wet = np.fft.irfft(np.fft.rfft(waveform, size) * np.fft.rfft(response, size), size)[:len(waveform)]
    mixed = waveform + rng.uniform(0.2, 0.6) * (wet - waveform)
    level = np.sqrt(np.mean(waveform ** 2) / (np.mean(mixed ** 2) + 1e-12))
    return (mixed * level).astype(np.float32)


def random_channel(waveform, rng):
    """The clip through a channel drawn by CODEC_SHARES: an MP3, AAC or Opus round trip at one of
    CODEC_BITRATES, the telephone band, or none."""
    from . import media  # FFmpeg, loaded only when a channel is used

    codec = rng.choice(list(CODEC_SHARES), p=list(CODEC_SHARES.values()))
    if codec == "clean":
        return waveform
    if codec == "telephone":
        return media.telephone_band(waveform, SAMPLE_RATE)
    return media.codec_round_trip(waveform, SAMPLE_RATE, codec, rng.choice(CODEC_BITRATES))


def speech_features(paths, extractor, cache, variants=0, seed=0, progress=True, augment="signal"):
    """Each clip's features from a front end, through the serving decoder, cached on disk per clip
    and variant (an interrupted run keeps what it computed).

    Returns one [clips, d] array per variant: the clean clips first, then `variants` copies augmented
    by the `augment` recipe (AUGMENTATIONS).
    A clip the decoder cannot read gets rows of NaN (see `decoded`) and is tried again next time.
    """
    from tqdm import tqdm

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    results = [[] for _ in range(variants + 1)]
    for path in tqdm(paths, desc=f"{extractor.name} features", unit="clip", disable=not progress):
        source = f"{Path(path).resolve()}:{os.path.getmtime(path)}:{extractor.key}"
        key = hashlib.sha1(source.encode()).hexdigest()
        files = [cache / f"{key}-{seed}-0.npy"] + [cache / f"{key}-{seed}-{variant}-{augment}.npy"
                                                   for variant in range(1, variants + 1)]
        try:
            waveform = None if all(file.exists() for file in files) else load_audio(path)
        except InputError as error:
            tqdm.write(f"left out: {error}")
            for rows in results:
                rows.append(None)
            continue
        for variant, (file, rows) in enumerate(zip(files, results)):
            if not file.exists():
                rng = np.random.default_rng([seed, variant, int(key[:8], 16)])
                features = extractor(augment_waveform(waveform, rng, augment) if variant else waveform)
                np.save(file.with_suffix(".part.npy"), features)
                os.replace(file.with_suffix(".part.npy"), file)
            rows.append(np.load(file))
    width = next((len(row) for row in results[0] if row is not None), None)
    if width is None:
        raise InputError(f"none of the {len(paths)} clips could be decoded")
    return [np.stack([np.full(width, np.nan, np.float32) if row is None else row for row in variant])
            for variant in results]


def decoded(clips, variants):
    """The clips whose features exist, and those rows of each variant: undecodable clips left out."""
    keep = ~np.isnan(variants[0]).any(axis=1)
    return [clip for clip, kept in zip(clips, keep) if kept], [variant[keep] for variant in variants]


NORMALISATIONS = ("none", "speaker", "corpus")
HEADS = ("linear", "layer-weighted", "mlp", "middle-means")  # the speech heads `emorec.train.speech_head` builds
MISSING_CLASSES = ("masked", "negative")  # a corpus's missing classes in the loss: `emorec.train.masked_targets`


def normalise(variants, clips, normalisation):
    """Feature arrays (clean, then augmented copies) standardised per speaker or per corpus, by the
    mean and std of each group's clean clips; unchanged for "none".

    It needs several clips of a group, so it applies to a corpus or a batch of one speaker's clips,
    never to a single clip served alone: a head trained this way is for such batches.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown feature normalisation {normalisation!r}; "
                         f"choose from {', '.join(NORMALISATIONS)}")
    if normalisation == "none":
        return variants
    return standardise(variants, [f"{clip.corpus}:{clip.speaker}" if normalisation == "speaker" else clip.corpus
                                  for clip in clips])


def standardise(variants, groups):
    """Feature arrays standardised per group (`groups`: one name per row) by the mean and std of that
    group's rows in the first (clean) array: the arithmetic of every feature normalisation. The
    statistics are summed in float64, so a group's clips give the same features in any order."""
    groups = np.asarray(groups)
    results = [np.empty_like(variant) for variant in variants]
    for group in np.unique(groups):
        rows = groups == group
        mean = variants[0][rows].mean(axis=0, dtype=np.float64)
        std = variants[0][rows].std(axis=0, dtype=np.float64) + 1e-6
        for variant, result in zip(variants, results):
            result[rows] = (variant[rows] - mean) / std
    return results
