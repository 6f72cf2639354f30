"""Speech features from the Whisper base encoder (LiteRT, no TensorFlow): log-mel front end, per-layer
activations over time, and their per-clip and per-window pooling.

`log_mel` is the ONE speech preprocessing function shared by training and serving; `WhisperEncoder`
runs models/whisper/encoder.tflite (built by `python -m emorec.whisper_keras`) on the clip's real
length. The encoder's frames are 20 ms apart (50 per second: mel hop 10 ms, conv2 stride 2).
"""

import numpy as np

from .audio import SAMPLE_RATE, WindowCutter, whole_timeline
from .models import TFLiteModel

N_FFT, HOP, MEL_BANDS = 400, 160, 80
FRAMES_PER_SECOND = SAMPLE_RATE // HOP // 2  # 50 encoder frames per second
MAX_FRAMES = 1500  # the encoder's positions: 30 s
MAX_SAMPLES = MAX_FRAMES * 2 * HOP  # 480,000 samples
LAYERS = 8  # 0: conv stem + positions, 1-6: the transformer blocks, 7: block 6 after the final layer norm
WIDTH = 512
WINDOW_FRAMES, WINDOW_HOP_FRAMES = 120, 48  # the speech timeline's 2.4 s windows every 0.96 s
SPEECH_LEVEL_DB = -26.0  # ITU-T P.56's nominal active speech level, dB below full scale
MAX_GAIN_DB = 40.0  # `levelled` raises or lowers a clip by at most this much


def _hz_to_mel(hz):
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, np.float64)
    step = np.log(6.4) / 27.0
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / step, hz * 3.0 / 200.0)


def _mel_to_hz(mel):
    mel = np.asarray(mel, np.float64)
    step = np.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(step * (mel - 15.0)), mel * 200.0 / 3.0)


def mel_filters(bands=MEL_BANDS, n_fft=N_FFT, rate=SAMPLE_RATE):
    """[bands, n_fft // 2 + 1] Slaney-normalised triangular filters from 0 Hz to Nyquist, built as
    librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=bands) builds them (Whisper's mel_filters.npz)."""
    frequencies = np.fft.rfftfreq(n_fft, 1.0 / rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), bands + 2))
    ramps = edges[:, None] - frequencies[None, :]
    widths = np.diff(edges)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(lower, upper))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per filter
    return filters.astype(np.float32)


MEL_FILTERS = mel_filters()
HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic


def log_mel(waveform):
    """Whisper's log-mel spectrogram of a 16 kHz waveform, [len // 160, 80] (at least 2 frames).

    As whisper.audio.log_mel_spectrogram: centred 400-sample periodic-Hann frames every 160 samples
    (reflect padding), power spectrum, 80 Slaney mel bands, log10 clamped at 1e-10 and at 8 below the
    clip's maximum, then (x + 4) / 4. The last (centred past the end) frame is dropped as Whisper does.
    No padding to 30 s: the frame count follows the clip. A clip shorter than 400 samples is zero-padded.
    """
    waveform = np.asarray(waveform, np.float32).reshape(-1)
    if len(waveform) < N_FFT:
        waveform = np.pad(waveform, (0, N_FFT - len(waveform)))
    padded = np.pad(waveform, N_FFT // 2, mode="reflect")
    count = len(waveform) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:count]
    spectrum = np.fft.rfft(frames * HANN, axis=-1)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    logs = np.log10(np.maximum(power.astype(np.float32) @ MEL_FILTERS.T, 1e-10))
    logs = np.maximum(logs, logs.max() - 8.0)
    return ((logs + 4.0) / 4.0).astype(np.float32)


def active_level_db(waveform):
    """A clip's active speech level, dB below full scale: the mean power of its 400-sample frames (every
    160 samples, from the first; `log_mel` centres its frames instead) within 20 dB of the loudest 5 %, so
    that pauses and silence do not count."""
    waveform = np.pad(np.asarray(waveform, np.float32).reshape(-1), (0, max(0, N_FFT - len(waveform))))
    powers = np.mean(np.lib.stride_tricks.sliding_window_view(waveform, N_FFT)[::HOP] ** 2, axis=1,
                     dtype=np.float64)
    decibels = 10 * np.log10(powers + 1e-12)
    return float(10 * np.log10(powers[decibels >= np.percentile(decibels, 95) - 20].mean() + 1e-12))


def levelled(waveform, target_db=SPEECH_LEVEL_DB):
    """The waveform scaled so that its active speech level (`active_level_db`) is `target_db`, by a gain
    of at most MAX_GAIN_DB either way. Recordings differ in level by their microphone and gain, not
    their emotion alone (RAVDESS's actors speak at -28 to -44 dB on average, nEMO's at -19 to -25 dB:
    `python scripts/speech_levels.py`): the encoder then hears every clip at one level.
    """
    waveform = np.asarray(waveform, np.float32).reshape(-1)
    gain = np.clip(target_db - active_level_db(waveform), -MAX_GAIN_DB, MAX_GAIN_DB)
    return (waveform * 10 ** (gain / 20)).astype(np.float32)


def chunks(waveform, max_samples=MAX_SAMPLES):
    """The waveform cut into pieces of at most `max_samples` (default 30 s, the encoder's span), in order,
    as `Chunker` cuts it while it streams: one piece, or two equal ones, up to twice `max_samples`."""
    chunker = Chunker(max_samples)
    return chunker.add(waveform) + chunker.finish()


class Chunker:
    """Pieces of at most `max_samples` of a waveform that arrives in blocks: whole pieces from the start
    while more than two pieces' worth wait, then what is left as one piece or two equal ones (so no piece
    is under half of `max_samples` unless the whole waveform is)."""

    def __init__(self, max_samples):
        self.max_samples, self.blocks, self.waiting = max_samples, [], 0

    def add(self, block):
        block = np.asarray(block, np.float32).reshape(-1)
        self.blocks.append(block)
        self.waiting += len(block)
        if self.waiting <= 2 * self.max_samples:
            return []
        waveform = np.concatenate(self.blocks)
        whole = (len(waveform) - 1) // self.max_samples - 1  # leaves more than one piece's worth
        self.blocks, self.waiting = [waveform[whole * self.max_samples:]], len(waveform) - whole * self.max_samples
        return [waveform[index * self.max_samples:(index + 1) * self.max_samples] for index in range(whole)]

    def finish(self):
        waveform = np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.float32)
        count = max(1, -(-len(waveform) // self.max_samples))
        bounds = np.linspace(0, len(waveform), count + 1).astype(int)
        return [waveform[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


def pool(layer_frames, layers=None):
    """[len(layers) * 2 * 512] float32: for each chosen layer in order, the mean over time (512)
    then the standard deviation over time (512) of that layer's frames [8, frames, 512]."""
    chosen = layer_frames if layers is None else layer_frames[list(layers)]
    return np.concatenate([chosen.mean(axis=1), chosen.std(axis=1)], axis=-1).reshape(-1).astype(np.float32)


class WhisperEncoder(TFLiteModel):
    """The Whisper base encoder (LiteRT): a 16 kHz waveform -> every layer's frames over time.

    The model's input is a log-mel [1, frames, 80] of any length up to 3000 frames (30 s); its output
    [1, 8, frames / 2, 512] stacks the 8 layers (see LAYERS). Longer clips run as chunks of at most
    `chunk_seconds` (<= 30; see `Chunker`) whose frames are concatenated; shorter chunks bound the memory that attention
    takes (it grows with the square of the chunk's length). With `level_db`, each chunk is first
    brought to that active speech level (`levelled`); None hears it as recorded, as Whisper does.
    """

    def __init__(self, path, threads=1, chunk_seconds=30, level_db=None):
        if not 0 < chunk_seconds <= MAX_SAMPLES / SAMPLE_RATE:
            raise ValueError(f"chunk_seconds is in (0, 30], not {chunk_seconds}")
        super().__init__(path, threads)
        self.chunk_samples = int(chunk_seconds * SAMPLE_RATE)
        self.level_db = level_db

    def log_mel(self, piece):
        """The encoder's input [1, frames, 80] for one chunk: `log_mel`, after `levelled` with `level_db`."""
        return log_mel(piece if self.level_db is None else levelled(piece, self.level_db))[None]

    def layer_frames(self, waveform):
        """[8, frames, 512] float32, 50 frames per second: ceil((len // 160) / 2) per chunk."""
        with self.lock:
            pieces = chunks(waveform, self.chunk_samples)
            return np.concatenate([self._run(self.log_mel(piece))[0] for piece in pieces], axis=1)

    def clip_features(self, waveform, layers=None):
        """The per-clip features (all 8 layers: 8192 values), as `timeline` gives them."""
        return self.timeline(waveform, layers)[0]

    def window_features(self, waveform, layers=None):
        """Per-window features [windows, len(layers) * 1024] and each window's (start, end) seconds."""
        return self.timeline(waveform, layers)[1:]

    def timeline(self, waveform, layers=None):
        """The clip's features, the speech timeline's window features [windows, len(layers) * 1024]
        (2.4 s every 0.96 s, segment_windows' rules) and each window's (start, end) seconds
        (`EncoderTimeline` over the whole waveform)."""
        return whole_timeline(EncoderTimeline(self, layers), waveform)


class EncoderTimeline:
    """WhisperEncoder.timeline over a waveform that arrives in blocks, in one pass of the encoder that holds
    one chunk's samples and frames at a time (and the window reaching back into the chunk before), so
    memory does not grow with the clip's length: `add` gives the window features complete so far,
    `finish` the clip's features, the last window features and every window's (start, end) seconds.

    A clip of one chunk is pooled by `pool`, as training pools it; a longer one's mean and std are
    combined over its chunks (in float64).
    """

    def __init__(self, encoder, layers=None):
        self.encoder, self.layers = encoder, layers
        self.chunker = Chunker(encoder.chunk_samples)
        self.windows = WindowCutter(WINDOW_FRAMES, WINDOW_HOP_FRAMES, axis=1)
        self.chunks, self.count, self.sums, self.squares, self.frames = 0, 0, 0.0, 0.0, None

    def add(self, block):
        return self._encode(self.chunker.add(block))

    def finish(self):
        windows = self._encode(self.chunker.finish())
        windows += [pool(frames) for frames in self.windows.finish()]
        if self.chunks == 1:
            clip = pool(self.frames)
        else:
            mean = self.sums / self.count
            std = np.sqrt(np.maximum(self.squares / self.count - mean ** 2, 0))
            clip = np.concatenate([mean, std], axis=-1).reshape(-1).astype(np.float32)
        spans = [(start / FRAMES_PER_SECOND, end / FRAMES_PER_SECOND) for start, end in self.windows.spans]
        return clip, windows, spans

    def _encode(self, pieces):
        windows = []
        for piece in pieces:
            with self.encoder.lock:
                frames = self.encoder._run(self.encoder.log_mel(piece))[0]
            self.frames = frames if self.layers is None else frames[list(self.layers)]
            self.chunks += 1
            self.count += self.frames.shape[1]
            self.sums = self.sums + self.frames.sum(axis=1, dtype=np.float64)
            self.squares = self.squares + np.square(self.frames, dtype=np.float64).sum(axis=1)
            windows += [pool(frames) for frames in self.windows.add(self.frames)]
        return windows
