"""Speech input: decode any audio file to 16 kHz mono and cut it into YAMNet frames."""

import io
import os

import numpy as np

from .errors import InputError

SAMPLE_RATE = 16000
FRAME_SAMPLES = 15600  # 0.975 s, YAMNet's input window
HOP_SAMPLES = 7680  # 0.48 s
MAX_SECONDS = float(os.environ.get("EMOREC_MAX_AUDIO_SECONDS", 600))
# The first bytes of the files libsndfile reads (WAV, RF64, Wave64, AIFF, FLAC); FFmpeg reads the rest.
LIBSNDFILE_SIGNATURES = {b"RIFF", b"RIFX", b"RF64", b"BW64", b"riff", b"FORM", b"fLaC"}


def _describe(source):
    return "audio upload" if isinstance(source, (bytes, bytearray)) else str(source)


def load_audio(source, max_seconds=MAX_SECONDS):
    """Decode a path or bytes to a float32 mono waveform at 16 kHz in [-1, 1].

    libsndfile reads WAV, AIFF and FLAC (many times faster than FFmpeg on a short WAV); FFmpeg
    (emorec.media) reads the rest: MP3, M4A/AAC, Ogg and WebM (Opus, Vorbis), the audio track of
    MP4, MOV, MKV and AVI. A file with no audio stream raises media.NoAudioTrack, an InputError.
    """
    import soundfile  # the decoders load here: training imports this module's framing without them

    from . import media

    name = _describe(source)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise InputError(f"{name}: file is empty")
        handle, signature = io.BytesIO(source), bytes(source[:4])
    else:
        if not os.path.isfile(source):
            raise InputError(f"{name}: no such file")
        if os.path.getsize(source) == 0:
            raise InputError(f"{name}: file is empty")
        with open(source, "rb") as file:
            handle, signature = source, file.read(4)
    chunks = None
    if signature in LIBSNDFILE_SIGNATURES:
        try:
            chunks = _libsndfile_chunks(soundfile.SoundFile(handle), name, max_seconds)
        except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError):
            pass  # a header libsndfile refuses (a codec it lacks, a field it rejects): FFmpeg's turn
    return media.mono_waveform(chunks or media.audio_chunks(source, name, max_seconds), SAMPLE_RATE, name,
                               max_seconds)


def _libsndfile_chunks(sound, name, max_seconds):
    """Yield (float32 [samples, channels], rate) blocks of an open SoundFile, its length checked first."""
    import soundfile

    from . import media

    with sound:
        media.check_duration(sound.frames / sound.samplerate, max_seconds, name)
        try:
            while len(block := sound.read(media.BLOCK_SAMPLES, dtype="float32", always_2d=True)):
                yield block, sound.samplerate
        except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
            detail = getattr(error, "error_string", None) or str(error)  # without the stream's repr
            raise InputError(f"{name}: not a readable audio file ({detail})") from None


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
