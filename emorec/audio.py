"""Speech input: decode any WAV to 16 kHz mono and cut it into YAMNet frames."""

import io
import os

import numpy as np
import soundfile
import soxr

from .errors import InputError

SAMPLE_RATE = 16000
FRAME_SAMPLES = 15600  # 0.975 s, YAMNet's input window
HOP_SAMPLES = 7680  # 0.48 s
MAX_SECONDS = float(os.environ.get("EMOREC_MAX_AUDIO_SECONDS", 600))


def _describe(source):
    return "audio upload" if isinstance(source, (bytes, bytearray)) else str(source)


def load_audio(source, max_seconds=MAX_SECONDS):
    """Decode a path or bytes to a float32 mono waveform at 16 kHz in [-1, 1]."""
    name = _describe(source)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise InputError(f"{name}: file is empty")
        handle = io.BytesIO(source)
    else:
        if not os.path.isfile(source):
            raise InputError(f"{name}: no such file")
        if os.path.getsize(source) == 0:
            raise InputError(f"{name}: file is empty")
        handle = source
    try:
        with soundfile.SoundFile(handle) as sound:
            if sound.frames > max_seconds * sound.samplerate:
                raise InputError(f"{name}: audio is {sound.frames / sound.samplerate:.0f} s long, "
                                 f"over the {max_seconds:.0f} s limit")
            samples = sound.read(dtype="float32", always_2d=True)
            rate = sound.samplerate
    except InputError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
        detail = getattr(error, "error_string", None) or str(error)  # libsndfile's words, without the stream's repr
        raise InputError(f"{name}: not a readable audio file ({detail})") from None
    if samples.shape[0] == 0:
        raise InputError(f"{name}: audio holds no samples")
    mono = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
        if len(mono) == 0:
            raise InputError(f"{name}: audio is too short ({samples.shape[0]} samples at {rate} Hz)")
    return np.clip(np.nan_to_num(mono), -1.0, 1.0).astype(np.float32)


def speech_frames(waveform):
    """The speech preprocessing shared by training and serving: [n, 15600] YAMNet frames.

    Frames are 0.975 s long every 0.48 s; a clip shorter than one frame, or a tail that
    would otherwise be dropped, is zero-padded so that every sample is covered.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    count = 1 + max(0, int(np.ceil((len(waveform) - FRAME_SAMPLES) / HOP_SAMPLES)))
    padded = np.zeros((count - 1) * HOP_SAMPLES + FRAME_SAMPLES, dtype=np.float32)
    padded[:len(waveform)] = waveform
    starts = np.arange(count) * HOP_SAMPLES
    return np.stack([padded[start:start + FRAME_SAMPLES] for start in starts])


def frame_times(count):
    """(start, end) seconds of each of `count` frames."""
    starts = np.arange(count) * HOP_SAMPLES / SAMPLE_RATE
    return [(float(start), float(start + FRAME_SAMPLES / SAMPLE_RATE)) for start in starts]


def segment_windows(count, size=4, hop=2):
    """(first, end) frame indices of the speech timeline's windows: 4 frames (2.4 s) every 2 (0.96 s).

    A clip of at most `size` frames is one window; the last window always reaches the last frame.
    """
    if count <= size:
        return [(0, count)]
    starts = list(range(0, count - size + 1, hop))
    if starts[-1] + size < count:
        starts.append(count - size)
    return [(start, start + size) for start in starts]
